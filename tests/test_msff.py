"""Multi-scale feature fusion: shapes, the top-down direction and the attention weighting."""

from __future__ import annotations

import pytest
import torch

from memseg_lite.network.msff import MSFF, MSFFBlock


def concatenated_inputs(batch: int, height: int, width: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``CI_1..CI_3`` for an ``height x width`` image (128@/4, 256@/8, 512@/16)."""
    return [
        torch.randn(batch, channels, height // stride, width // stride, generator=generator)
        for channels, stride in ((128, 4), (256, 8), (512, 16))
    ]


@pytest.fixture(scope="module")
def msff() -> MSFF:
    torch.manual_seed(0)
    return MSFF().eval()


@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_output_shapes(msff, size):
    height, width = size
    inputs = concatenated_inputs(2, height, width, torch.Generator().manual_seed(0))
    outputs = msff(inputs)
    expected = [
        (2, 64, height // 4, width // 4),
        (2, 128, height // 8, width // 8),
        (2, 256, height // 16, width // 16),
    ]
    assert [tuple(o.shape) for o in outputs] == expected


def test_block_halves_channels():
    block = MSFFBlock(128).eval()
    assert block(torch.randn(1, 128, 8, 8)).shape == (1, 64, 8, 8)


def test_fusion_runs_top_down(msff):
    generator = torch.Generator().manual_seed(1)
    inputs = concatenated_inputs(1, 64, 64, generator)
    base = msff(inputs)
    finer_changed = msff([torch.randn(inputs[0].shape, generator=generator), *inputs[1:]])
    coarser_changed = msff([*inputs[:2], torch.randn(inputs[2].shape, generator=generator)])
    # Level 3 only sees CI_3; the finer levels receive the coarser ones.
    torch.testing.assert_close(finer_changed[2], base[2])
    torch.testing.assert_close(finer_changed[1], base[1])
    assert not torch.allclose(coarser_changed[0], base[0])
    assert not torch.allclose(coarser_changed[1], base[1])


def test_attention_maps_multiply_the_fused_levels(msff):
    generator = torch.Generator().manual_seed(2)
    inputs = concatenated_inputs(2, 64, 64, generator)
    maps = [torch.rand(2, 1, s, s, generator=generator) for s in (16, 8, 4)]
    plain = msff(inputs)
    weighted = msff(inputs, maps)
    for got, fused, weights in zip(weighted, plain, maps, strict=True):
        torch.testing.assert_close(got, fused * weights)


def test_parameter_count_of_a_block():
    channels, hidden = 128, 8
    block = MSFFBlock(channels, reduction=32)

    def conv_bn(cin, cout):
        return cin * cout * 9 + 2 * cout  # 3x3 conv without bias + BN

    coordinate = channels * hidden + 2 * hidden + 2 * (hidden * channels + channels)
    expected = conv_bn(channels, channels) + coordinate + conv_bn(channels, 64) + conv_bn(64, 64)
    assert sum(p.numel() for p in block.parameters()) == expected


def test_bad_input(msff):
    inputs = concatenated_inputs(1, 64, 64, torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="3 concatenated levels"):
        msff(inputs[:2])
    with pytest.raises(ValueError, match=r"level 2: expected \[B, 256"):
        msff([inputs[0], inputs[0], inputs[2]])
    with pytest.raises(ValueError, match="3 attention maps"):
        msff(inputs, [torch.ones(1, 1, 16, 16)])
    with pytest.raises(ValueError, match="even"):
        MSFFBlock(7)
