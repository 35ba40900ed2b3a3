"""U-Net decoder: output shape, and every skip connection reaches the output."""

from __future__ import annotations

import pytest
import torch

from memseg_lite.network.decoder import UNetDecoder, UpBlock


def decoder_inputs(height: int, width: int, requires_grad: bool = False):
    generator = torch.Generator().manual_seed(0)

    def make(channels: int, stride: int) -> torch.Tensor:
        values = torch.randn(1, channels, height // stride, width // stride, generator=generator)
        return values.requires_grad_(requires_grad)

    return make(512, 32), [make(64, 4), make(128, 8), make(256, 16)], make(64, 2)


@pytest.mark.parametrize("size", [(64, 64), (64, 128)])
def test_output_is_full_resolution_two_class(size):
    decoder = UNetDecoder().eval()
    bottleneck, fused, stem = decoder_inputs(*size)
    assert decoder(bottleneck, fused, stem).shape == (1, 2, *size)


def test_every_input_reaches_the_output():
    decoder = UNetDecoder().eval()
    bottleneck, fused, stem = decoder_inputs(64, 64, requires_grad=True)
    decoder(bottleneck, fused, stem)[:, 1].sum().backward()
    for name, tensor in [
        ("bottleneck", bottleneck),
        ("fused1", fused[0]),
        ("fused2", fused[1]),
        ("fused3", fused[2]),
        ("stem", stem),
    ]:
        assert tensor.grad is not None and float(tensor.grad.abs().sum()) > 0, name


def test_up_block_without_skip_doubles_the_size():
    block = UpBlock(8, 0, 4).eval()
    assert block(torch.randn(1, 8, 5, 7)).shape == (1, 4, 10, 14)


def test_custom_widths():
    decoder = UNetDecoder(decoder_channels=(32, 32, 16, 16, 8), num_classes=3).eval()
    bottleneck, fused, stem = decoder_inputs(32, 64)
    assert decoder(bottleneck, fused, stem).shape == (1, 3, 32, 64)
    assert decoder.head.in_channels == 8


def test_bad_arguments():
    with pytest.raises(ValueError, match="4 skip_channels and 5 decoder_channels"):
        UNetDecoder(decoder_channels=(1, 2, 3))
    bottleneck, fused, stem = decoder_inputs(64, 64)
    with pytest.raises(ValueError, match="3 fused levels"):
        UNetDecoder()(bottleneck, fused[:2], stem)
