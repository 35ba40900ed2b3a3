"""Multi-scale feature fusion (MSFF).

Input: the concatenated information of each level, ``CI_l = concat(II_l, DI*_l)`` (what the
input looks like, and how it differs from the closest good image), with 128, 256 and 512
channels at ``H/4``, ``H/8`` and ``H/16``. Per level:

1. a 3x3 convolution (+BN+ReLU) mixes appearance and difference channels;
2. a coordinate-attention block re-weights the result (row gate x column gate);
3. two 3x3 convolutions (+BN+ReLU) halve the channels (128->64, 256->128, 512->256).

Then top-down fusion, as in a feature pyramid: the coarser fused level is upsampled x2,
convolved to the finer level's channels and added to it (level 3 -> 2 -> 1), so the fine
levels get the context of the coarse ones. Finally each level is multiplied by its spatial
attention map ``M_l`` (:func:`memseg_lite.network.attention.spatial_attention_maps`).

Where the CA block sits is read differently in the implementations: here it gates the output
of the 3x3 convolution (its attention computed from that output, the usual way to insert CA
into a block). The tootouch re-implementation multiplies the 3x3-conv output with the CA block
applied to the raw ``CI``, so ``CI`` also enters as a factor.

:class:`PlainSkips` is the "no MSFF" ablation (``MemSeg(fusion="plain")``): one 1x1 convolution
per level to the same channel count, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from memseg_lite.network.attention import CoordinateAttention, upsample_to


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """``Conv2d`` (same padding, no bias: the BN shifts) -> ``BatchNorm2d`` -> ``ReLU``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MSFFBlock(nn.Module):
    """One level of MSFF before the fusion: conv -> coordinate attention -> two convs halving ``C``.

    Args:
        channels: ``C`` of ``CI_l`` (even); the output has ``C // 2``.
        reduction: coordinate-attention reduction.
    """

    def __init__(self, channels: int, reduction: int = 32):
        super().__init__()
        if channels < 2 or channels % 2:
            raise ValueError(f"channels must be an even number >= 2, got {channels}")
        self.conv_in = conv_bn_relu(channels, channels)
        self.attention = CoordinateAttention(channels, reduction=reduction)
        self.conv_out = nn.Sequential(
            conv_bn_relu(channels, channels // 2),
            conv_bn_relu(channels // 2, channels // 2),
        )

    def forward(self, concatenated: torch.Tensor) -> torch.Tensor:
        """``float [B, C, h, w]`` -> ``float [B, C/2, h, w]``."""
        return self.conv_out(self.attention(self.conv_in(concatenated)))


class MSFF(nn.Module):
    """Multi-scale feature fusion of the three concatenated levels.

    Args:
        in_channels: channels of ``CI_1, CI_2, CI_3`` (twice the encoder's 64, 128, 256).
        reduction: coordinate-attention reduction.
    """

    def __init__(self, in_channels: Sequence[int] = (128, 256, 512), reduction: int = 32):
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"in_channels must give 3 levels, got {tuple(in_channels)}")
        self.in_channels = tuple(int(channels) for channels in in_channels)
        self.out_channels = tuple(channels // 2 for channels in self.in_channels)
        self.blocks = nn.ModuleList(MSFFBlock(channels, reduction) for channels in self.in_channels)
        # lateral[k] brings level k+2 (coarser) to level k+1's channels after upsampling.
        self.lateral = nn.ModuleList(
            conv_bn_relu(self.out_channels[k + 1], self.out_channels[k]) for k in range(2)
        )

    def forward(
        self, concatenated: Sequence[torch.Tensor], attention_maps: Sequence[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Fuse the three levels.

        Args:
            concatenated: ``CI_1, CI_2, CI_3``: ``float [B, 128, H/4, W/4]``, ``[B, 256, H/8, W/8]``,
                ``[B, 512, H/16, W/16]`` (for the default channels).
            attention_maps: ``M1, M2, M3`` ``float [B, 1, h_l, w_l]``; ``None`` skips the weighting
                (for ablations and pictures).

        Returns:
            3 tensors: ``[B, 64, H/4, W/4]``, ``[B, 128, H/8, W/8]``, ``[B, 256, H/16, W/16]``.
        """
        if len(concatenated) != 3:
            raise ValueError(f"expected 3 concatenated levels, got {len(concatenated)}")
        for level, (tensor, channels) in enumerate(zip(concatenated, self.in_channels, strict=True), start=1):
            if tensor.ndim != 4 or tensor.shape[1] != channels:
                raise ValueError(f"level {level}: expected [B, {channels}, h, w], got {tuple(tensor.shape)}")
        fused = [block(tensor) for block, tensor in zip(self.blocks, concatenated, strict=True)]
        for k in (1, 0):  # top-down: level 3 into 2, then the new level 2 into 1
            coarser = upsample_to(fused[k + 1], fused[k].shape[-2:])
            fused[k] = fused[k] + self.lateral[k](coarser)
        if attention_maps is not None:
            if len(attention_maps) != 3:
                raise ValueError(f"expected 3 attention maps, got {len(attention_maps)}")
            fused = [features * weights for features, weights in zip(fused, attention_maps, strict=True)]
        return fused


class PlainSkips(nn.Module):
    """The "no MSFF" ablation: each level's ``CI_l`` goes to the decoder through one 1x1 convolution
    (+BN+ReLU) to the channel count MSFF would give (``C // 2``); no coordinate attention, no
    3x3 convolutions, no top-down fusion. The decoder is then the same as with MSFF.

    Args:
        in_channels: channels of ``CI_1, CI_2, CI_3`` (even).
    """

    def __init__(self, in_channels: Sequence[int] = (128, 256, 512)):
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"in_channels must give 3 levels, got {tuple(in_channels)}")
        self.in_channels = tuple(int(channels) for channels in in_channels)
        if any(channels < 2 or channels % 2 for channels in self.in_channels):
            raise ValueError(f"in_channels must be even numbers >= 2, got {self.in_channels}")
        self.out_channels = tuple(channels // 2 for channels in self.in_channels)
        self.projections = nn.ModuleList(
            conv_bn_relu(c_in, c_out, kernel_size=1)
            for c_in, c_out in zip(self.in_channels, self.out_channels, strict=True)
        )

    def forward(
        self, concatenated: Sequence[torch.Tensor], attention_maps: Sequence[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Same interface as :meth:`MSFF.forward`: 3 levels in, 3 levels of half the channels out."""
        if len(concatenated) != 3:
            raise ValueError(f"expected 3 concatenated levels, got {len(concatenated)}")
        for level, (tensor, channels) in enumerate(zip(concatenated, self.in_channels, strict=True), start=1):
            if tensor.ndim != 4 or tensor.shape[1] != channels:
                raise ValueError(f"level {level}: expected [B, {channels}, h, w], got {tuple(tensor.shape)}")
        fused = [projection(tensor) for projection, tensor in zip(self.projections, concatenated, strict=True)]
        if attention_maps is not None:
            if len(attention_maps) != 3:
                raise ValueError(f"expected 3 attention maps, got {len(attention_maps)}")
            fused = [features * weights for features, weights in zip(fused, attention_maps, strict=True)]
        return fused
