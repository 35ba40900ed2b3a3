"""Perlin (gradient) noise and the thresholded Perlin masks that shape simulated anomalies.

Perlin noise puts a random unit gradient vector on every point of a coarse lattice. At a sample
point with lattice coordinates ``(u, v)`` (row, column; lattice points are integer coordinates)
each of the four surrounding corners contributes the dot product of its gradient with the offset
from that corner, and the four contributions are blended with the fade curve
``f(t) = 6t^5 - 15t^4 + 10t^3``. The result is smooth, zero at every lattice point, and bounded
by ``sqrt(2) / 2`` in 2-D.

MemSeg (following DRAEM) draws the lattice resolution per axis as ``2**k`` with ``k`` uniform in
``0..5``, rotates the noise by a uniform angle in [-90, 90] degrees and keeps ``noise > 0.5``.
DRAEM's code multiplies its noise by ``sqrt(2)``, i.e. the 0.5 applies to noise scaled to
[-1, 1]; the mask functions here therefore compare ``noise / NOISE_BOUND`` with the threshold
(0.5 there is 0.354 on the raw noise, and covers several times more pixels).
Here the rotation is applied to the sampling coordinates (the noise is a continuous function, so
a rotated field is just the same function read along rotated axes): no interpolation, and no
empty corners, which rotating a finished noise image would leave behind.

Conventions: ``shape = (height, width)``; ``res = (res_y, res_x)`` lattice cells across the
image; gradients are ``(..., 2)`` arrays holding the (row, column) components.

The numpy functions are the reference, and what the trainer's data loader uses; the ``*_torch``
functions compute the same values for a batch on any device (``TorchAnomalySynthesizer`` builds
on them), so masks can be made where the model runs, e.g. on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from memseg_lite.core.runtime import check_rng, resolve_device

#: The largest value 2-D Perlin noise with unit gradients can take: sqrt(2) / 2.
NOISE_BOUND = math.sqrt(2.0) / 2.0


# --------------------------------------------------------------------------------------------
# Argument checks shared by the numpy and torch versions
# --------------------------------------------------------------------------------------------
def _pair(value: int | Sequence[int], name: str, minimum: int) -> tuple[int, int]:
    """``7`` -> ``(7, 7)``; ``(a, b)`` -> ``(a, b)``; checks both are integers >= ``minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum} on both axes, got {value!r}")
    return pair


def _check_scale_range(scale_range: Sequence[int]) -> tuple[int, int]:
    if isinstance(scale_range, (int, np.integer)):
        raise TypeError(f"scale_range must be a pair (low, high) of exponents, got {scale_range!r}")
    low, high = _pair(scale_range, "scale_range", 0)
    if low > high:
        raise ValueError(f"scale_range must be (low, high) with low <= high, got {scale_range!r}")
    if high > 10:
        raise ValueError(f"scale_range allows at most 2**10 lattice cells per axis, got {scale_range!r}")
    return low, high


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise TypeError(f"threshold must be a number, got {threshold!r}")
    if not -1.0 <= float(threshold) < 1.0:
        raise ValueError(
            f"threshold must be in [-1, 1) (it applies to the noise scaled to [-1, 1]), got {threshold!r}"
        )
    return float(threshold)


# --------------------------------------------------------------------------------------------
# numpy reference
# --------------------------------------------------------------------------------------------
def fade(t: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Perlin's quintic fade ``6t^5 - 15t^4 + 10t^3``: 0 -> 0, 1 -> 1, first and second derivatives 0 at both ends."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def random_gradients(lattice_shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Unit vectors with uniform random directions: float64 ``(ny, nx, 2)`` for a lattice of ``ny x nx`` points."""
    check_rng(rng)
    ny, nx = _pair(lattice_shape, "lattice_shape", 1)
    angles = 2.0 * np.pi * rng.random((ny, nx))
    return np.stack([np.sin(angles), np.cos(angles)], axis=-1)


def perlin_at(u: np.ndarray, v: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Perlin noise at lattice coordinates ``(u, v)`` (row, column), float64.

    ``u`` and ``v`` are broadcastable float arrays with ``0 <= u <= ny - 1`` and
    ``0 <= v <= nx - 1``; ``gradients`` is ``(ny, nx, 2)``. The result has the broadcast shape.
    """
    u, v = np.broadcast_arrays(np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))
    ny, nx = gradients.shape[:2]
    # Cell index of each sample; the last lattice row/column only ever acts as a far corner.
    i0 = np.clip(np.floor(u).astype(np.int64), 0, ny - 2)
    j0 = np.clip(np.floor(v).astype(np.int64), 0, nx - 2)
    fu, fv = u - i0, v - j0  # position inside the cell, in [0, 1]
    # Flat indices into each gradient component: np.take is much faster than 2-D fancy indexing.
    flat = i0 * nx + j0
    g_row, g_col = gradients[..., 0].ravel(), gradients[..., 1].ravel()

    def corner(di: int, dj: int) -> np.ndarray:
        index = flat + (di * nx + dj)
        return np.take(g_row, index) * (fu - di) + np.take(g_col, index) * (fv - dj)

    su, sv = fade(fu), fade(fv)
    top = corner(0, 0) + sv * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + sv * (corner(1, 1) - corner(1, 0))
    return top + su * (bottom - top)


def lattice_coordinates(
    shape: tuple[int, int], res: int | tuple[int, int], angle: float | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Lattice coordinates of every pixel: ``(u, v, lattice_shape)``.

    Without ``angle``: pixel ``(y, x)`` sits at ``(y * res_y / H, x * res_x / W)``, so ``u`` is
    ``(H, 1)``, ``v`` is ``(1, W)`` and the lattice has ``(res_y + 1) x (res_x + 1)`` points. Any
    ``H``, ``W`` work (the lattice is sampled continuously, not cut into whole-pixel cells).

    With ``angle`` (degrees, counter-clockwise): the pixel offsets from the image centre are
    rotated first, then scaled the same way; ``u``, ``v`` are full ``(H, W)`` arrays and the lattice
    is enlarged (and the coordinates shifted) so the rotated image fits inside it.
    """
    height, width = _pair(shape, "shape", 1)
    res_y, res_x = _pair(res, "res", 1)
    if angle is None:
        u = (np.arange(height, dtype=np.float64) * (res_y / height))[:, None]
        v = (np.arange(width, dtype=np.float64) * (res_x / width))[None, :]
        return u, v, (res_y + 1, res_x + 1)
    centre_y, centre_x = (height - 1) / 2.0, (width - 1) / 2.0
    dy = (np.arange(height, dtype=np.float64) - centre_y)[:, None]
    dx = (np.arange(width, dtype=np.float64) - centre_x)[None, :]
    theta = math.radians(float(angle))
    cos, sin = math.cos(theta), math.sin(theta)
    rotated_y = cos * dy - sin * dx
    rotated_x = sin * dy + cos * dx
    # Every rotated offset lies within the half-diagonal; leave that much room on each side.
    radius = math.hypot(centre_y, centre_x)
    scale_y, scale_x = res_y / height, res_x / width
    u = rotated_y * scale_y + radius * scale_y
    v = rotated_x * scale_x + radius * scale_x
    lattice = (math.ceil(2 * radius * scale_y) + 2, math.ceil(2 * radius * scale_x) + 2)
    return u, v, lattice


def perlin_noise_from_gradients(
    shape: tuple[int, int], res: int | tuple[int, int], gradients: np.ndarray
) -> np.ndarray:
    """Perlin noise for fixed lattice gradients: float32 ``shape``.

    ``gradients``: float ``(res_y + 1, res_x + 1, 2)`` unit vectors, (row, column) components.
    """
    height, width = _pair(shape, "shape", 1)
    res_y, res_x = _pair(res, "res", 1)
    gradients = np.asarray(gradients, dtype=np.float64)
    if gradients.shape != (res_y + 1, res_x + 1, 2):
        raise ValueError(
            f"gradients must have shape (res_y + 1, res_x + 1, 2) = {(res_y + 1, res_x + 1, 2)}, got {gradients.shape}"
        )
    u, v, _ = lattice_coordinates((height, width), (res_y, res_x))
    return perlin_at(u, v, gradients).astype(np.float32)


def perlin_noise(shape: tuple[int, int], res: int | tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D Perlin noise with ``res`` lattice cells per axis and random gradients: float32 ``shape``."""
    res_y, res_x = _pair(res, "res", 1)
    gradients = random_gradients((res_y + 1, res_x + 1), rng)
    return perlin_noise_from_gradients(shape, (res_y, res_x), gradients)


def rotated_perlin_noise(
    shape: tuple[int, int], res: int | tuple[int, int], angle: float, rng: np.random.Generator
) -> np.ndarray:
    """Perlin noise read along axes rotated by ``angle`` degrees: float32 ``shape``, no empty corners."""
    u, v, lattice = lattice_coordinates(shape, res, angle)
    return perlin_at(u, v, random_gradients(lattice, rng)).astype(np.float32)


def draw_mask_parameters(
    rng: np.random.Generator, scale_range: Sequence[int] = (0, 5), rotate: bool = True
) -> tuple[tuple[int, int], float | None]:
    """Draw ``(res, angle)`` for one Perlin mask: ``res = (2**ky, 2**kx)``, ``k`` uniform per axis
    in the inclusive ``scale_range``; ``angle`` uniform in [-90, 90] degrees, or ``None``."""
    check_rng(rng)
    low, high = _check_scale_range(scale_range)
    ky, kx = rng.integers(low, high + 1, size=2)
    angle = float(rng.uniform(-90.0, 90.0)) if rotate else None
    return (2 ** int(ky), 2 ** int(kx)), angle


def perlin_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    scale_range: Sequence[int] = (0, 5),
    threshold: float = 0.5,
    rotate: bool = True,
) -> np.ndarray:
    """A random anomaly-shaped mask: bool ``shape``.

    ``True`` where the (rotated) Perlin noise, scaled to [-1, 1] by ``1 / NOISE_BOUND``, exceeds
    ``threshold``. Resolution ``2**k`` per axis, ``k`` uniform in the inclusive ``scale_range``.
    """
    threshold = _check_threshold(threshold)
    _pair(shape, "shape", 1)
    res, angle = draw_mask_parameters(rng, scale_range, rotate)
    u, v, lattice = lattice_coordinates(shape, res, angle)
    noise = perlin_at(u, v, random_gradients(lattice, rng))
    return np.broadcast_to(noise > threshold * NOISE_BOUND, tuple(shape)).copy()


# --------------------------------------------------------------------------------------------
# torch, batched, any device
# --------------------------------------------------------------------------------------------
def _resolve_torch_device(device: str | torch.device | None, generator: torch.Generator | None) -> torch.device:
    if device is None:
        return generator.device if generator is not None else torch.device("cpu")
    return resolve_device(device)


def _generator_device(generator: torch.Generator | None) -> torch.device:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator.device if generator is not None else torch.device("cpu")


def _check_batch(batch: int) -> int:
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    return int(batch)


def random_gradients_torch(
    batch: int, lattice_shape: tuple[int, int], generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Random unit gradients, float32 ``[B, ny, nx, 2]``, drawn on the generator's device then moved.

    Drawing where the generator lives makes the numbers depend on the seed only, not on ``device``.
    """
    ny, nx = _pair(lattice_shape, "lattice_shape", 1)
    source = _generator_device(generator)
    angles = 2.0 * math.pi * torch.rand((_check_batch(batch), ny, nx), generator=generator, device=source)
    gradients = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1)
    return gradients.to(_resolve_torch_device(device, generator))


def perlin_at_torch(u: torch.Tensor, v: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Batched :func:`perlin_at`: ``u``, ``v`` broadcastable to ``[B, H, W]``; ``gradients`` ``[B, ny, nx, 2]``."""
    batch, ny, nx, _ = gradients.shape
    u, v = torch.broadcast_tensors(u, v)
    shape = u.shape
    i0 = torch.floor(u).long().clamp_(0, ny - 2)
    j0 = torch.floor(v).long().clamp_(0, nx - 2)
    fu, fv = u - i0, v - j0
    # One flat gather per component and corner is much faster than 4-D fancy indexing.
    flat = (i0 * nx + j0).reshape(batch, -1)
    g_row = gradients[..., 0].reshape(batch, -1)
    g_col = gradients[..., 1].reshape(batch, -1)

    def corner(di: int, dj: int) -> torch.Tensor:
        index = flat + (di * nx + dj)
        dot_row = torch.gather(g_row, 1, index).view(shape) * (fu - di)
        return dot_row + torch.gather(g_col, 1, index).view(shape) * (fv - dj)

    su, sv = fade(fu), fade(fv)
    c00, c01, c10, c11 = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
    top = c00 + sv * (c01 - c00)
    bottom = c10 + sv * (c11 - c10)
    return top + su * (bottom - top)


def lattice_coordinates_torch(
    shape: tuple[int, int], res: torch.Tensor, angles: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Batched :func:`lattice_coordinates` with a resolution (and angle) per sample.

    ``res``: ``[B, 2]`` (res_y, res_x) on the target device; ``angles``: ``[B]`` degrees or ``None``.
    Returns ``u``, ``v`` broadcastable to ``[B, H, W]`` (float32) and the lattice shape large enough
    for every sample.
    """
    height, width = _pair(shape, "shape", 1)
    device = res.device
    res = res.to(torch.float32)
    scale_y = (res[:, 0] / height).view(-1, 1, 1)
    scale_x = (res[:, 1] / width).view(-1, 1, 1)
    rows = torch.arange(height, device=device, dtype=torch.float32).view(1, -1, 1)
    cols = torch.arange(width, device=device, dtype=torch.float32).view(1, 1, -1)
    if angles is None:
        lattice = (int(res[:, 0].max().item()) + 1, int(res[:, 1].max().item()) + 1)
        return rows * scale_y, cols * scale_x, lattice
    centre_y, centre_x = (height - 1) / 2.0, (width - 1) / 2.0
    dy, dx = rows - centre_y, cols - centre_x
    theta = torch.deg2rad(angles.to(device=device, dtype=torch.float32)).view(-1, 1, 1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    radius = math.hypot(centre_y, centre_x)
    u = (cos * dy - sin * dx) * scale_y + radius * scale_y
    v = (sin * dy + cos * dx) * scale_x + radius * scale_x
    max_y, max_x = res[:, 0].max().item() / height, res[:, 1].max().item() / width
    lattice = (math.ceil(2 * radius * max_y) + 2, math.ceil(2 * radius * max_x) + 2)
    return u, v, lattice


def perlin_noise_torch(
    batch: int,
    shape: tuple[int, int],
    res: int | tuple[int, int],
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    gradients: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """``batch`` Perlin noise fields: float32 ``[B, H, W]`` on ``device``.

    ``gradients`` (optional): ``[B, res_y + 1, res_x + 1, 2]`` or one ``[res_y + 1, res_x + 1, 2]``
    lattice shared by the batch; with the same gradients the values equal
    :func:`perlin_noise_from_gradients` (up to float32 rounding).
    """
    batch = _check_batch(batch)
    height, width = _pair(shape, "shape", 1)
    res_y, res_x = _pair(res, "res", 1)
    target = _resolve_torch_device(device, generator)
    if gradients is None:
        gradients = random_gradients_torch(batch, (res_y + 1, res_x + 1), generator, target)
    else:
        gradients = torch.as_tensor(gradients, dtype=torch.float32, device=target)
        if gradients.ndim == 3:
            gradients = gradients.unsqueeze(0).expand(batch, -1, -1, -1)
        if tuple(gradients.shape) != (batch, res_y + 1, res_x + 1, 2):
            raise ValueError(
                f"gradients must have shape [B, res_y + 1, res_x + 1, 2] = {[batch, res_y + 1, res_x + 1, 2]} "
                f"(or without the batch axis), got {list(gradients.shape)}"
            )
    res_tensor = torch.tensor([[res_y, res_x]], device=target).expand(batch, 2)
    u, v, _ = lattice_coordinates_torch((height, width), res_tensor)
    return perlin_at_torch(u, v, gradients)


def perlin_mask_torch(
    batch: int,
    shape: tuple[int, int],
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    scale_range: Sequence[int] = (0, 5),
    threshold: float = 0.5,
    rotate: bool = True,
) -> torch.Tensor:
    """``batch`` independent Perlin masks (own resolution and angle each): bool ``[B, H, W]`` on ``device``.

    Same distribution as :func:`perlin_mask`; the random numbers are drawn on the generator's device.
    """
    batch = _check_batch(batch)
    height, width = _pair(shape, "shape", 1)
    low, high = _check_scale_range(scale_range)
    threshold = _check_threshold(threshold)
    source = _generator_device(generator)
    target = _resolve_torch_device(device, generator)
    exponents = torch.randint(low, high + 1, (batch, 2), generator=generator, device=source)
    res = (2 ** exponents).to(target)
    angles = None
    if rotate:
        angles = (torch.rand(batch, generator=generator, device=source) * 180.0 - 90.0).to(target)
    u, v, lattice = lattice_coordinates_torch((height, width), res, angles)
    gradients = random_gradients_torch(batch, lattice, generator, target)
    noise = perlin_at_torch(u, v, gradients)
    return noise.expand(batch, height, width) > threshold * NOISE_BOUND
