"""The U-Net decoder: from the layer4 bottleneck back to a full-resolution 2-class map.

Up-path, each step doubling the resolution:

=========================  ==================  =================================
step                       skip (concatenated)  output (default channels)
=========================  ==================  =================================
layer4 512@H/32 -> H/16    fused level 3 (256)  256@H/16
H/16 -> H/8                fused level 2 (128)  128@H/8
H/8 -> H/4                 fused level 1 (64)   64@H/4
H/4 -> H/2                 encoder stem (64)    48@H/2
H/2 -> H                   none                 32@H, then a 3x3 conv to 2 logits
=========================  ==================  =================================

Every step is "upsample x2 (bilinear) + 3x3 conv", not a transposed convolution: a strided
transposed convolution covers the output pixels unevenly and tends to leave checkerboard
patterns (Odena et al., Distill 2016), which an anomaly map would show as false defects.
Upsampling to the skip's exact size also keeps the shapes right by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from memseg_lite.network.attention import upsample_to
from memseg_lite.network.msff import conv_bn_relu


class UpBlock(nn.Module):
    """Upsample to the skip's size, 3x3 conv, concatenate the skip, two 3x3 convs.

    Args:
        in_channels: channels of the coarser input.
        skip_channels: channels of the skip connection (0: no skip; then the target size is x2).
        out_channels: channels of the output.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.up = conv_bn_relu(in_channels, out_channels)
        self.skip_channels = skip_channels
        self.fuse = nn.Sequential(
            conv_bn_relu(out_channels + skip_channels, out_channels),
            conv_bn_relu(out_channels, out_channels),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """``float [B, C_in, h, w]`` (+ skip ``[B, C_skip, 2h, 2w]``) -> ``float [B, C_out, 2h, 2w]``."""
        size = skip.shape[-2:] if skip is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        x = self.up(upsample_to(x, size))
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.fuse(x)


class UNetDecoder(nn.Module):
    """U-Net up-path with skips from the three fused levels and the stem.

    Args:
        bottleneck_channels: channels of the layer4 features (512).
        skip_channels: channels of fused level 3, fused level 2, fused level 1 and the stem,
            in the order the up-path meets them.
        decoder_channels: output channels of the five up steps (the last one has no skip).
        num_classes: output channels (2: normal, anomalous).
    """

    def __init__(
        self,
        bottleneck_channels: int = 512,
        skip_channels: Sequence[int] = (256, 128, 64, 64),
        decoder_channels: Sequence[int] = (256, 128, 64, 48, 32),
        num_classes: int = 2,
    ):
        super().__init__()
        if len(skip_channels) != 4 or len(decoder_channels) != 5:
            raise ValueError(
                f"need 4 skip_channels and 5 decoder_channels, got {tuple(skip_channels)} and {tuple(decoder_channels)}"
            )
        widths = [bottleneck_channels, *decoder_channels]
        skips = [*skip_channels, 0]
        self.blocks = nn.ModuleList(UpBlock(widths[k], skips[k], widths[k + 1]) for k in range(5))
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, kernel_size=3, padding=1)

    def forward(self, bottleneck: torch.Tensor, fused: Sequence[torch.Tensor], stem: torch.Tensor) -> torch.Tensor:
        """Logits at the input resolution.

        Args:
            bottleneck: layer4 features ``float [B, 512, H/32, W/32]``.
            fused: MSFF outputs, finest first: ``[B, 64, H/4, W/4]``, ``[B, 128, H/8, W/8]``,
                ``[B, 256, H/16, W/16]``.
            stem: encoder stem features ``float [B, 64, H/2, W/2]``.

        Returns:
            ``float [B, num_classes, H, W]`` logits.
        """
        if len(fused) != 3:
            raise ValueError(f"expected 3 fused levels (finest first), got {len(fused)}")
        skips = [fused[2], fused[1], fused[0], stem, None]
        x = bottleneck
        for block, skip in zip(self.blocks, skips, strict=True):
            x = block(x, skip)
        return self.head(x)
