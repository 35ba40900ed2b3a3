"""Focal, L1 and combined losses against per-pixel numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memseg_lite.network.losses import MemSegLoss, focal_loss, l1_loss


def example(seed: int = 0, scale: float = 3.0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 2, 5, 7, generator=generator) * scale
    target = (torch.rand(2, 5, 7, generator=generator) < 0.2).float()
    return logits, target


def focal_numpy(logits: np.ndarray, target: np.ndarray, gamma: float, alpha: float | None) -> np.ndarray:
    """Per-pixel focal loss, one pixel at a time in float64."""
    batch, _, height, width = logits.shape
    out = np.zeros((batch, height, width))
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                z = logits[b, :, y, x].astype(np.float64)
                p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
                t = int(target[b, y, x])
                weight = 1.0 if alpha is None else (alpha if t == 1 else 1.0 - alpha)
                out[b, y, x] = -weight * (1.0 - p[t]) ** gamma * np.log(p[t])
    return out


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 4.0])
@pytest.mark.parametrize("alpha", [None, 0.25, 0.9])
def test_focal_loss_equals_per_pixel_numpy(gamma, alpha):
    logits, target = example(seed=int(gamma * 10))
    expected = focal_numpy(logits.numpy(), target.numpy(), gamma, alpha)
    got = focal_loss(logits, target, gamma=gamma, alpha=alpha, reduction="none")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(focal_loss(logits, target, gamma, alpha).item(), expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        focal_loss(logits, target, gamma, alpha, reduction="sum").item(), expected.sum(), rtol=1e-5
    )


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    logits, target = example(seed=3)
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target.long()))


def test_focal_loss_down_weights_easy_pixels():
    easy = torch.tensor([[[[-4.0]], [[4.0]]]])  # confident and right about an anomalous pixel
    hard = torch.tensor([[[[0.5]], [[-0.5]]]])  # wrong
    target = torch.ones(1, 1, 1)
    ratio_ce = F.cross_entropy(hard, target.long()) / F.cross_entropy(easy, target.long())
    ratio_focal = focal_loss(hard, target, gamma=4.0) / focal_loss(easy, target, gamma=4.0)
    assert ratio_focal > 1e6 * ratio_ce


def test_target_formats_are_equivalent():
    logits, target = example(seed=4)
    reference = focal_loss(logits, target)
    for variant in (target.bool(), target.long(), target[:, None], target.double()):
        torch.testing.assert_close(focal_loss(logits, variant), reference)
        torch.testing.assert_close(l1_loss(logits, variant), l1_loss(logits, target))


def test_extreme_logits_stay_finite():
    logits = torch.tensor([[[[80.0, -80.0]], [[-80.0, 80.0]]]], requires_grad=True)  # [1, 2, 1, 2]
    target = torch.tensor([[[0.0, 1.0]]])
    for gamma in (0.0, 0.5, 4.0):
        loss = focal_loss(logits, target, gamma=gamma)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
        logits.grad = None
    wrong = focal_loss(logits, 1 - target, gamma=4.0)  # confidently wrong: large but finite
    assert torch.isfinite(wrong) and wrong > 100


def test_l1_loss_equals_numpy():
    logits, target = example(seed=5)
    z = logits.double().numpy()
    probability = 1.0 / (1.0 + np.exp(z[:, 0] - z[:, 1]))  # softmax of the anomalous channel
    expected = np.abs(probability - target.numpy())
    np.testing.assert_allclose(l1_loss(logits, target, reduction="none").numpy(), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(l1_loss(logits, target).item(), expected.mean(), rtol=1e-5)


def test_combined_loss_weights():
    logits, target = example(seed=6)
    l1 = l1_loss(logits, target)
    focal = focal_loss(logits, target, gamma=4.0)
    parts = MemSegLoss()(logits, target)
    torch.testing.assert_close(parts.l1, l1)
    torch.testing.assert_close(parts.focal, focal)
    torch.testing.assert_close(parts.total, 0.6 * l1 + 0.4 * focal)
    custom = MemSegLoss(l1_weight=2.0, focal_weight=0.0, gamma=2.0)(logits, target)
    torch.testing.assert_close(custom.total, 2.0 * l1)
    torch.testing.assert_close(custom.focal, focal_loss(logits, target, gamma=2.0))
    assert set(parts._asdict()) == {"total", "l1", "focal"}


def test_combined_loss_backpropagates():
    logits, target = example(seed=7)
    logits.requires_grad_(True)
    MemSegLoss()(logits, target).total.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def test_bad_input():
    logits, target = example()
    with pytest.raises(ValueError, match="only 0 and 1"):
        focal_loss(logits, target * 0.5)
    with pytest.raises(ValueError, match="only 0 and 1"):
        focal_loss(logits, target * 2)
    with pytest.raises(ValueError, match="to match the logits"):
        focal_loss(logits, target[:, :4])
    with pytest.raises(ValueError, match=r"\[B, 2, H, W\]"):
        l1_loss(logits[:, :1], target)
    with pytest.raises(TypeError, match="torch.Tensor"):
        l1_loss(logits, target.numpy())
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(logits, target, gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        focal_loss(logits, target, alpha=1.5)
    with pytest.raises(ValueError, match="reduction"):
        focal_loss(logits, target, reduction="max")
    with pytest.raises(ValueError, match="weights"):
        MemSegLoss(l1_weight=-1.0)
