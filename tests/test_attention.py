"""Spatial attention maps and coordinate attention, against independent numpy / OpenCV computations."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from memseg_lite.network.attention import CoordinateAttention, spatial_attention_maps


def upsample_cv2(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with OpenCV (half-pixel centres, like ``align_corners=False``)."""
    height, width = size
    return cv2.resize(image.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize("seed", [0, 1])
def test_spatial_attention_maps_equal_the_formula(seed):
    generator = torch.Generator().manual_seed(seed)
    di_star = [
        torch.rand(2, 6, 16, 12, generator=generator),
        torch.rand(2, 5, 8, 6, generator=generator),
        torch.rand(2, 4, 4, 3, generator=generator),
    ]
    maps = spatial_attention_maps(di_star)
    for b in range(2):
        means = [d[b].numpy().mean(axis=0) for d in di_star]
        m3 = means[2]
        m2 = means[1] * upsample_cv2(m3, means[1].shape)
        m1 = means[0] * upsample_cv2(m2, means[0].shape)
        for got, expected in zip(maps, (m1, m2, m3), strict=True):
            assert got.shape[1] == 1
            np.testing.assert_allclose(got[b, 0].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_spatial_attention_is_zero_where_a_coarse_level_is_zero():
    di_star = [torch.ones(1, 2, 16, 16), torch.ones(1, 2, 8, 8), torch.ones(1, 2, 4, 4)]
    di_star[2][..., :2, :] = 0.0  # top half of the coarsest level agrees with memory
    m1, m2, m3 = spatial_attention_maps(di_star)
    assert float(m3[..., :2, :].abs().max()) == 0.0
    # The product carries the zero down to the finest level. Bilinear x2 twice blurs the edge
    # over a few rows: level-1 row i samples level-2 row (i + 0.5) / 2 - 0.5, and so on.
    assert float(m1[..., :5, :].abs().max()) == 0.0
    assert 0.0 < float(m1[..., 5:11, :].min()) and float(m1[..., 5:11, :].max()) < 1.0
    assert float(m1[..., 11:, :].min()) == 1.0


def test_spatial_attention_rejects_bad_input():
    with pytest.raises(ValueError, match="3 levels"):
        spatial_attention_maps([torch.ones(1, 1, 4, 4)] * 2)
    with pytest.raises(ValueError, match=r"\[B, C, h, w\]"):
        spatial_attention_maps([torch.ones(1, 4, 4)] * 3)


def coordinate_attention_numpy(block: CoordinateAttention, x: np.ndarray) -> np.ndarray:
    """Step-by-step eval-mode computation with the block's own weights, in float64 numpy."""
    w1 = block.shared.weight.detach().double().numpy()[:, :, 0, 0]  # [hidden, C]
    norm = block.norm
    mean, var = norm.running_mean.double().numpy(), norm.running_var.double().numpy()
    gamma, beta = norm.weight.detach().double().numpy(), norm.bias.detach().double().numpy()
    wh, bh = block.conv_h.weight.detach().double().numpy()[:, :, 0, 0], block.conv_h.bias.detach().double().numpy()
    ww, bw = block.conv_w.weight.detach().double().numpy()[:, :, 0, 0], block.conv_w.bias.detach().double().numpy()

    def hidden(pooled: np.ndarray) -> np.ndarray:  # pooled: [C, L]
        z = w1 @ pooled
        z = (z - mean[:, None]) / np.sqrt(var[:, None] + norm.eps) * gamma[:, None] + beta[:, None]
        return z * np.clip(z + 3.0, 0.0, 6.0) / 6.0  # hard-swish

    def sigmoid(v: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-v))

    out = np.empty_like(x, dtype=np.float64)
    for b in range(x.shape[0]):
        rows = x[b].mean(axis=2)  # [C, H]: average over the width
        columns = x[b].mean(axis=1)  # [C, W]: average over the height
        a_h = sigmoid(wh @ hidden(rows) + bh[:, None])  # [C, H]
        a_w = sigmoid(ww @ hidden(columns) + bw[:, None])  # [C, W]
        out[b] = x[b] * a_h[:, :, None] * a_w[:, None, :]
    return out


@pytest.mark.parametrize("channels, size", [(64, (6, 9)), (16, (5, 5))])
def test_coordinate_attention_equals_step_by_step(channels, size):
    torch.manual_seed(0)
    block = CoordinateAttention(channels, reduction=8)
    with torch.no_grad():  # non-trivial batch-norm state, so the test sees it
        block.norm.running_mean.uniform_(-0.5, 0.5)
        block.norm.running_var.uniform_(0.5, 2.0)
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.uniform_(-0.5, 0.5)
    block.eval()
    x = torch.randn(2, channels, *size)
    np.testing.assert_allclose(
        block(x).detach().numpy(), coordinate_attention_numpy(block, x.numpy()), rtol=1e-5, atol=1e-5
    )


def test_coordinate_attention_gates():
    block = CoordinateAttention(32).eval()
    assert block.hidden == 8  # max(min_hidden, 32 // 32)
    assert CoordinateAttention(512).hidden == 16
    x = torch.randn(3, 32, 7, 5)
    with torch.no_grad():
        a_h, a_w = block.gates(x)
    assert a_h.shape == (3, 32, 7, 1) and a_w.shape == (3, 32, 1, 5)
    assert float(a_h.min()) > 0 and float(a_h.max()) < 1
    with torch.no_grad():
        torch.testing.assert_close(block(x), x * a_h * a_w)


def test_coordinate_attention_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[B, 8, H, W\]"):
        CoordinateAttention(8)(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match=">= 1"):
        CoordinateAttention(0)
