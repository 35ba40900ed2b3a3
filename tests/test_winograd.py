"""Winograd F(4x4, 3x3) convolutions (memseg_lite.deployment.winograd) and their use in the folded backend."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from memseg_lite.deployment.fast import (
    EagerBackend,
    FoldedTorchBackend,
    PackedConv2d,
    onednn_fusion_available,
)
from memseg_lite.deployment.winograd import (
    FILTER_TRANSFORM,
    INPUT_TRANSFORM,
    OUTPUT_TRANSFORM,
    winograd_applies,
    winograd_conv2d,
    winograd_weights,
)
from memseg_lite.network.model import build_memseg


def test_the_one_dimensional_identity_holds_exactly():
    # F(4, 3): A^T [(G g) * (B^T d)] is the 4 outputs of sliding g over the 6 inputs d (correlation).
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        d = torch.randn(6, dtype=torch.float64, generator=generator)
        g = torch.randn(3, dtype=torch.float64, generator=generator)
        expected = torch.stack([(d[i : i + 3] * g).sum() for i in range(4)])
        got = OUTPUT_TRANSFORM @ ((FILTER_TRANSFORM @ g) * (INPUT_TRANSFORM @ d))
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("batch, channels, out_channels, height, width", [
    (1, 3, 5, 4, 4), (2, 7, 4, 8, 12), (1, 16, 16, 16, 16), (3, 5, 9, 12, 20),
])
@pytest.mark.parametrize("activation", ["none", "relu", "hardswish"])
def test_float64_winograd_equals_the_convolution(batch, channels, out_channels, height, width, activation):
    generator = torch.Generator().manual_seed(batch * 100 + channels)
    x = torch.randn(batch, channels, height, width, dtype=torch.float64, generator=generator)
    weight = torch.randn(out_channels, channels, 3, 3, dtype=torch.float64, generator=generator)
    bias = torch.randn(out_channels, dtype=torch.float64, generator=generator)
    residual = torch.randn(batch, out_channels, height, width, dtype=torch.float64, generator=generator)
    expected = F.conv2d(x, weight, bias, padding=1) + residual
    expected = {"none": expected, "relu": torch.relu(expected), "hardswish": F.hardswish(expected)}[activation]
    got = winograd_conv2d(x, winograd_weights(weight), bias, activation, residual)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    assert got.is_contiguous(memory_format=torch.channels_last)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 2), channels=st.integers(1, 12), out_channels=st.integers(1, 12),
    rows=st.integers(1, 5), cols=st.integers(1, 5), seed=st.integers(0, 2**31 - 1),
    channels_last=st.booleans(),
)
def test_float32_winograd_stays_within_its_rounding(batch, channels, out_channels, rows, cols, seed, channels_last):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, 4 * rows, 4 * cols, generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, channels, 3, 3, generator=generator)
    exact = F.conv2d(x.double(), weight.double(), padding=1)
    got = winograd_conv2d(x, winograd_weights(weight))
    assert got.dtype == torch.float32
    # about 1e-5 of the largest output (module docstring); a wrong transform is off by O(1)
    assert float((got.double() - exact).abs().max()) <= 1e-4 * max(1.0, float(exact.abs().max()))


def test_bad_inputs_are_refused():
    weight = winograd_weights(torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="multiples of 4"):
        winograd_conv2d(torch.randn(1, 3, 6, 8), weight)
    with pytest.raises(ValueError, match="does not fit 5 input channels"):
        winograd_conv2d(torch.randn(1, 5, 8, 8), weight)
    with pytest.raises(ValueError, match="activation"):
        winograd_conv2d(torch.randn(1, 3, 8, 8), weight, activation="gelu")
    with pytest.raises(ValueError, match="3x3 filters"):
        winograd_weights(torch.randn(4, 3, 1, 1))


def test_the_rule_of_where_winograd_applies():
    wide = (256, 128, 3, 3)
    assert winograd_applies(wide, [1, 1], [1, 1], [1, 1], 1, (1, 128, 16, 32))
    assert not winograd_applies(wide, [1, 1], [1, 1], [1, 1], 1, (1, 128, 8, 8))  # too few tiles
    assert not winograd_applies(wide, [1, 1], [1, 1], [1, 1], 1, (1, 128, 18, 16))  # not a multiple of 4
    assert not winograd_applies(wide, [2, 2], [1, 1], [1, 1], 1, (1, 128, 32, 32))  # strided
    assert not winograd_applies(wide, [1, 1], [0, 0], [1, 1], 1, (1, 128, 32, 32))  # no padding
    assert not winograd_applies(wide, [1, 1], [1, 1], [1, 1], 2, (1, 128, 32, 32))  # grouped
    assert not winograd_applies((64, 128, 3, 3), [1, 1], [1, 1], [1, 1], 1, (1, 128, 32, 32))  # too narrow
    assert not winograd_applies((256, 128, 1, 1), [1, 1], [0, 0], [1, 1], 1, (1, 128, 32, 32))  # 1x1


needs_onednn = pytest.mark.skipif(not onednn_fusion_available(), reason="this torch build has no oneDNN fusion")


@needs_onednn
def test_packed_convolution_runs_winograd_only_where_it_applies():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1)
    packed, direct = PackedConv2d(conv, "relu", winograd=True), PackedConv2d(conv, "relu")
    with torch.inference_mode():
        for side, algorithm in ((16, "winograd"), (32, "winograd"), (8, "onednn"), (18, "onednn")):
            x = torch.randn(2, 128, side, side).contiguous(memory_format=torch.channels_last)
            got = packed(x)
            assert packed.last_algorithm == algorithm, side
            direct(x)
            assert direct.last_algorithm == "onednn"
            exact = torch.relu(F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1))
            assert float((got.double() - exact).abs().max()) <= 1e-4 * float(exact.abs().max())
    assert not PackedConv2d(torch.nn.Conv2d(64, 64, 3, padding=1), winograd=True).winograd  # too narrow
    # the transformed filters are made on first use, and again after a move or conversion
    fresh = PackedConv2d(conv, "relu", winograd=True)
    assert fresh.winograd and fresh.winograd_weight is None
    with torch.inference_mode():
        fresh(torch.randn(1, 128, 8, 8))  # too small: direct, no filters transformed
        assert fresh.winograd_weight is None
        fresh(torch.randn(1, 128, 16, 16))
    torch.testing.assert_close(fresh.winograd_weight, winograd_weights(conv.weight.detach()), rtol=0, atol=0)
    fresh.to(torch.float32)
    assert fresh.winograd_weight is None
    with torch.enable_grad():  # autograd needs the plain convolution
        packed(torch.randn(1, 128, 16, 16))
    assert packed.last_algorithm == "conv2d"


def _sharp_model(size: int):
    """A random MemSeg whose maps span [0, 1] (a random decoder head gives maps near 0.5 everywhere,
    where no rounding shows): the head's weights scaled up."""
    generator = torch.Generator().manual_seed(1)
    model = build_memseg(torch.randn(6, 3, size, size, generator=generator), backbone_weights="none", device="cpu",
                         seed=1).eval()
    with torch.no_grad():
        model.decoder.head.weight.mul_(300.0)
    return model, torch.randn(3, 3, size, size, generator=generator)


@needs_onednn
def test_the_folded_backend_with_winograd_gives_the_eager_maps():
    model, images = _sharp_model(128)
    reference_maps, reference_scores = EagerBackend(model, {}, torch.device("cpu"))(images)
    assert float(reference_maps.std()) > 0.1, "the maps must spread for the comparison to mean something"
    backend = FoldedTorchBackend(model, {}, torch.device("cpu"))
    maps, scores = backend(images)
    used = {name for name, module in backend.network.named_modules()
            if isinstance(module, PackedConv2d) and module.last_algorithm == "winograd"}
    # at 128 x 128: layer2 (128 channels on 16 x 16, but not its strided first conv), MSFF level 1's
    # first conv (32 x 32), all of level 2 (16 x 16), the decoder's second block (16 x 16); not
    # layer1 (64 channels), nor layer3, MSFF level 3 and the first decoder block (8 x 8)
    assert {"encoder.layer2.0.conv2", "encoder.layer2.1.conv1", "msff.blocks.0.conv_in.0",
            "msff.blocks.1.conv_in.0", "decoder.blocks.1.up.0"} <= used
    assert not any(name.startswith(("encoder.layer1", "encoder.layer3", "msff.blocks.2", "decoder.blocks.0"))
                   for name in used)
    assert "encoder.layer2.0.conv1" not in used
    assert float((maps - reference_maps).abs().max()) < 1e-4
    assert float((scores - reference_scores).abs().max()) < 1e-4
    direct = FoldedTorchBackend(model, {}, torch.device("cpu"), winograd=False)
    direct_maps, _ = direct(images)
    assert not any(isinstance(m, PackedConv2d) and m.last_algorithm == "winograd" for m in direct.network.modules())
    assert float((direct_maps - reference_maps).abs().max()) < 1e-4
