"""Two attention mechanisms of MemSeg.

Spatial attention maps (no parameters): the difference information says *where* the input
differs from the closest good image. Its channel mean at each level, multiplied with the
coarser levels' maps, gives one weight per position:

    M3 = mean_c(DI*_3)
    M2 = mean_c(DI*_2) * Up(M3)
    M1 = mean_c(DI*_1) * Up(M2)

The product keeps a position large only when it stands out at every coarser level, which
suppresses fine-level noise. The fused features of level ``l`` are multiplied by ``M_l``.

Coordinate attention (Hou, Zhou, Feng, CVPR 2021, "Coordinate Attention for Efficient Mobile
Network Design"), used inside the multi-scale feature fusion: a channel attention that keeps
one coordinate. Average pooling along the width gives one descriptor per row, pooling along
the height one per column; a shared 1x1 convolution mixes channels for both, and two 1x1
convolutions with a sigmoid turn them into a row gate ``a_h`` and a column gate ``a_w``:
``output = x * a_h * a_w``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def upsample_to(tensor: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of ``[B, C, h, w]`` to ``size = (H, W)`` (``align_corners=False``)."""
    return F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False)


def spatial_attention_maps(di_star: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The spatial attention maps ``[M1, M2, M3]`` from the difference information.

    Args:
        di_star: 3 tensors ``float [B, C_l, h_l, w_l]`` (levels 1, 2, 3; finest first).

    Returns:
        3 tensors ``float [B, 1, h_l, w_l]``, finest first.
    """
    if len(di_star) != 3:
        raise ValueError(f"di_star must hold the 3 levels (finest first), got {len(di_star)} tensors")
    for level, tensor in enumerate(di_star, start=1):
        if tensor.ndim != 4:
            raise ValueError(f"di_star[{level - 1}] must be [B, C, h, w], got shape {tuple(tensor.shape)}")
    means = [tensor.mean(dim=1, keepdim=True) for tensor in di_star]
    m3 = means[2]
    m2 = means[1] * upsample_to(m3, means[1].shape[-2:])
    m1 = means[0] * upsample_to(m2, means[0].shape[-2:])
    return [m1, m2, m3]


class CoordinateAttention(nn.Module):
    """Coordinate attention block: ``x * a_h * a_w`` with a row gate and a column gate.

    Args:
        channels: ``C`` of the input (and output).
        reduction: the shared 1x1 convolution maps ``C`` to ``max(min_hidden, C // reduction)``.
        min_hidden: lower bound of the hidden width (the CA paper uses 8).

    The activation after the shared convolution is hard-swish, as in the CA paper
    (``x * relu6(x + 3) / 6``: smooth like swish, cheap like ReLU).
    """

    def __init__(self, channels: int, reduction: int = 32, min_hidden: int = 8):
        super().__init__()
        if channels < 1 or reduction < 1 or min_hidden < 1:
            raise ValueError(
                f"channels, reduction and min_hidden must be >= 1, got {channels}, {reduction}, {min_hidden}"
            )
        hidden = max(min_hidden, channels // reduction)
        self.channels = channels
        self.hidden = hidden
        # No bias: the batch norm right after it has its own shift.
        self.shared = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(hidden)
        self.activation = nn.Hardswish()
        self.conv_h = nn.Conv2d(hidden, channels, kernel_size=1)
        self.conv_w = nn.Conv2d(hidden, channels, kernel_size=1)

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The row gate ``a_h`` ``[B, C, H, 1]`` and the column gate ``a_w`` ``[B, C, 1, W]``, in (0, 1).

        Args:
            x: ``float [B, C, H, W]``.
        """
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected input [B, {self.channels}, H, W], got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        along_width = x.mean(dim=3, keepdim=True)  # [B, C, H, 1]: one value per row
        along_height = x.mean(dim=2, keepdim=True)  # [B, C, 1, W]: one value per column
        # Stack rows and columns on one spatial axis so one conv + BN sees both.
        stacked = torch.cat([along_width, along_height.transpose(2, 3)], dim=2)  # [B, C, H+W, 1]
        mixed = self.activation(self.norm(self.shared(stacked)))  # [B, hidden, H+W, 1]
        rows, columns = torch.split(mixed, [height, width], dim=2)
        a_h = torch.sigmoid(self.conv_h(rows))  # [B, C, H, 1]
        a_w = torch.sigmoid(self.conv_w(columns.transpose(2, 3)))  # [B, C, 1, W]
        return a_h, a_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * a_h * a_w``, same shape as ``x`` (``float [B, C, H, W]``)."""
        a_h, a_w = self.gates(x)
        return x * a_h * a_w

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}"
