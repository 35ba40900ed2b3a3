r"""Winograd's minimal filtering F(4x4, 3x3): a 3x3 convolution with 4x fewer multiplications.

A 3x3 convolution (stride 1, padding 1) computes each output pixel from a 3x3 window: 9
multiply-adds per pixel and per input/output channel pair. Winograd's algorithm (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", CVPR 2016) computes a 4x4 block of outputs
from a 6x6 input tile ``d`` and the 3x3 filter ``g`` as

$$Y = A^\top \big[(G\,g\,G^\top) \odot (B^\top d\,B)\big] A,$$

with fixed matrices $B^\top$ (6x6), $G$ (6x3) and $A^\top$ (4x6) built on the points
$0, \pm 1, \pm 2, \infty$. Summed over the input channels, the element-wise product becomes 36
matrix products ``[tiles, C_in] @ [C_in, C_out]``: 36 multiply-adds per 16 outputs instead of
144. The transforms of the inputs (``B^T d B``) and of the outputs (``A^T . A``) cost a few
additions per pixel and channel; the filters are transformed once (``U = G g G^T``).

Where it pays (measured on this project's 2-core AVX2 CPU against oneDNN's direct convolution,
one thread): layers with at least 128 input and output channels on feature maps of 16 x 16 and
more, 1.4-2x faster; with fewer channels the transforms, which only move memory, cost more than
the multiplications saved, and on 8 x 8 maps the tiles are too few. :func:`winograd_applies`
is that rule.

Rounding: the transforms use coefficients up to 8 and sums of up to 36 terms, so in float32 the
result differs from the exact convolution by about $10^{-5}$ of its largest value, against about
$2 \cdot 10^{-6}$ for a direct float32 convolution (tests/test_winograd.py). In float64 the
algorithm is exact up to $10^{-12}$, which is how the tests check the algebra.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

#: Input transform ``B^T`` (6 x 6), filter transform ``G`` (6 x 3), output transform ``A^T`` (4 x 6).
INPUT_TRANSFORM = torch.tensor([
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
], dtype=torch.float64)
FILTER_TRANSFORM = torch.tensor([
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
], dtype=torch.float64)
OUTPUT_TRANSFORM = torch.tensor([
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
], dtype=torch.float64)
TILE, OUTPUT_BLOCK = 6, 4
#: The rule of :func:`winograd_applies`: smallest channel count and feature-map side.
MIN_CHANNELS, MIN_SIDE = 128, 16

_TRANSFORMS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _tile_transforms(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B^T (x) B^T [36, 36], A^T (x) A^T [16, 36])``: both 2-D transforms of a flattened tile as one matrix."""
    key = (dtype, device)
    if key not in _TRANSFORMS:
        _TRANSFORMS[key] = (
            torch.kron(INPUT_TRANSFORM, INPUT_TRANSFORM).to(device, dtype).contiguous(),
            torch.kron(OUTPUT_TRANSFORM, OUTPUT_TRANSFORM).to(device, dtype).contiguous(),
        )
    return _TRANSFORMS[key]


def winograd_weights(weight: torch.Tensor) -> torch.Tensor:
    """``U = G g G^T`` of every filter: ``float [C_out, C_in, 3, 3]`` -> ``[36, C_in, C_out]`` (same dtype).

    Computed in float64, so the only rounding is the final cast.
    """
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"winograd_weights needs 3x3 filters [C_out, C_in, 3, 3], got {tuple(weight.shape)}")
    transform = FILTER_TRANSFORM.to(weight.device)
    transformed = torch.einsum("ai,ocij,bj->abco", transform, weight.detach().double(), transform)
    return transformed.reshape(TILE * TILE, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def winograd_applies(weight_shape, stride, padding, dilation, groups, input_shape) -> bool:
    """Whether :func:`winograd_conv2d` computes this convolution, and is the faster way on the CPU.

    It must be a 3x3 convolution with stride 1, padding 1, dilation 1 and one group, on a feature
    map whose sides are multiples of 4; it pays with at least :data:`MIN_CHANNELS` input and output
    channels and sides of at least :data:`MIN_SIDE` (module docstring).
    """
    out_channels, in_channels, *kernel = (int(v) for v in weight_shape)
    height, width = (int(v) for v in input_shape[-2:])
    return (
        kernel == [3, 3] and list(stride) == [1, 1] and list(padding) == [1, 1] and list(dilation) == [1, 1]
        and int(groups) == 1 and min(in_channels, out_channels) >= MIN_CHANNELS
        and height >= MIN_SIDE and width >= MIN_SIDE and height % OUTPUT_BLOCK == 0 and width % OUTPUT_BLOCK == 0
    )


def winograd_conv2d(
    x: torch.Tensor,
    transformed_weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str = "none",
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``activation(conv2d(x, w, bias, padding=1) + residual)`` by F(4x4, 3x3).

    Args:
        x: ``[B, C_in, H, W]`` with ``H`` and ``W`` multiples of 4 (any memory format; channels_last is
            read without a copy).
        transformed_weight: :func:`winograd_weights` of ``w``, ``[36, C_in, C_out]``.
        bias: ``[C_out]`` or ``None``.
        activation: ``"none"``, ``"relu"`` or ``"hardswish"``.
        residual: ``[B, C_out, H, W]`` added before the activation, or ``None``.

    Returns:
        ``[B, C_out, H, W]`` in channels_last memory format.
    """
    batch, channels, height, width = x.shape
    if height % OUTPUT_BLOCK or width % OUTPUT_BLOCK:
        raise ValueError(f"winograd_conv2d needs sides that are multiples of 4, got {height} x {width}")
    if transformed_weight.shape[:2] != (TILE * TILE, channels):
        raise ValueError(f"transformed weight {tuple(transformed_weight.shape)} does not fit {channels} input channels")
    if activation not in ("none", "relu", "hardswish"):
        raise ValueError(f"activation must be 'none', 'relu' or 'hardswish', got {activation!r}")
    input_tiles, output_blocks = _tile_transforms(x.dtype, x.device)
    rows, cols = height // OUTPUT_BLOCK, width // OUTPUT_BLOCK
    tiles_per_channel = batch * rows * cols
    # [B, H+2, W+2, C] (padding 1), then the 6x6 tiles, which overlap by 2, as a strided view.
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)
    s_batch, s_row, s_col, s_channel = padded.stride()
    tiles = padded.as_strided(
        (TILE, TILE, batch, rows, cols, channels),
        (s_row, s_col, s_batch, OUTPUT_BLOCK * s_row, OUTPUT_BLOCK * s_col, s_channel),
    ).reshape(TILE * TILE, tiles_per_channel * channels)
    transformed = torch.mm(input_tiles, tiles).view(TILE * TILE, tiles_per_channel, channels)
    products = torch.bmm(transformed, transformed_weight)  # the 36 matrix products
    out_channels = transformed_weight.shape[2]
    blocks = torch.mm(output_blocks, products.view(TILE * TILE, tiles_per_channel * out_channels))
    blocks = blocks.view(OUTPUT_BLOCK, OUTPUT_BLOCK, batch, rows, cols, out_channels)
    y = blocks.permute(2, 3, 0, 4, 1, 5).reshape(batch, height, width, out_channels).permute(0, 3, 1, 2)
    if bias is not None:
        y = y.add_(bias.view(1, -1, 1, 1))
    if residual is not None:
        y = y.add_(residual)
    if activation == "relu":
        return y.relu_()
    return F.hardswish(y, inplace=True) if activation == "hardswish" else y
