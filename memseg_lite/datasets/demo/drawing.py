"""Drawing primitives, vectorised; pixel i covers [i - 0.5, i + 0.5) so its centre is at i."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=8)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float32 ``size x size`` arrays of the pixel centres' y and x coordinates."""
    ys, xs = np.indices((size, size), dtype=np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise, float32 ``size x size``, zero mean and unit std, with about ``cells`` bumps a side.

    Bicubic upsampling of a small random grid: cheap, smooth, and not Perlin noise (which is
    what MemSeg's anomaly simulation uses).
    """
    grid = rng.standard_normal((cells + 2, cells + 2), dtype=np.float32)
    noise = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    noise -= noise.mean()
    return noise / (noise.std() + 1e-6)


def grain(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Fine grain, float32 ``size x size``, unit std: white noise blurred by ``sigma`` pixels."""
    noise = rng.standard_normal((size, size), dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    return noise / (noise.std() + 1e-6)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def disc_coverage(size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """Antialiased coverage (float32 ``size x size`` in [0, 1]) of a disc."""
    ys, xs = pixel_grid(size)
    return np.clip(float(radius) - np.hypot(xs - float(cx), ys - float(cy)) + 0.5, 0.0, 1.0)


def ellipse_frame(size: int, cx: float, cy: float, a: float, b: float, angle: float):
    """Normalised ellipse coordinates (u / a, v / b) and the approximate signed distance to its edge."""
    ys, xs = pixel_grid(size)
    a, b = float(a), float(b)  # numpy float64 scalars would promote the float32 grids
    dx, dy = xs - float(cx), ys - float(cy)
    cos, sin = math.cos(angle), math.sin(angle)
    u = dx * cos + dy * sin
    v = -dx * sin + dy * cos
    pu, pv = u / a, v / b
    rho = np.sqrt(pu * pu + pv * pv)
    # First-order distance to the edge: (rho - 1) / |grad rho|, good within a few pixels of it.
    gradient = np.sqrt((pu / a) ** 2 + (pv / b) ** 2) / np.maximum(rho, 1e-6)
    distance = (rho - 1.0) / np.maximum(gradient, 1e-6)
    return pu, pv, rho, distance


def blob(rng: np.random.Generator, size: int, cx: float, cy: float, radius: float, irregularity: float):
    """An irregular, smooth-edged blob: a polar radius ``r(theta)`` with a few random harmonics.

    Returns ``(coverage, q)``: antialiased coverage and ``q = distance from centre / r(theta)``
    (0 in the middle, 1 on the edge), both float32 ``size x size``.
    """
    ys, xs = pixel_grid(size)
    stretch = rng.uniform(1.0, 1.6)
    angle = rng.uniform(0, np.pi)
    dx, dy = xs - float(cx), ys - float(cy)
    cos, sin = math.cos(angle), math.sin(angle)
    u = (dx * cos + dy * sin) / stretch
    v = -dx * sin + dy * cos
    theta = np.arctan2(v, u)
    rho = np.hypot(u, v)
    edge = np.ones_like(rho)
    for k in range(2, 6):
        edge += irregularity * rng.uniform(0.0, 1.0) / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    edge = float(radius) * np.maximum(edge, 0.35)
    coverage = np.clip(edge - rho + 0.5, 0.0, 1.0)
    return coverage, rho / edge


def stroke_coverage(size: int, paths: Sequence[tuple[np.ndarray, float]], supersample: int = 4) -> np.ndarray:
    """Antialiased coverage of polylines, float32 ``size x size``.

    ``paths`` holds ``(points, width)`` pairs: ``points`` float ``N x 2`` (x, y) in pixels, ``width``
    in pixels. Drawn ``supersample`` times larger inside the strokes' bounding box, then averaged
    down, which gives sub-pixel widths and positions.
    """
    coverage = np.zeros((size, size), np.float32)
    all_points = np.concatenate([points for points, _ in paths])
    margin = max(width for _, width in paths) + 2
    x0 = int(np.clip(np.floor(all_points[:, 0].min() - margin), 0, size))
    y0 = int(np.clip(np.floor(all_points[:, 1].min() - margin), 0, size))
    x1 = int(np.clip(np.ceil(all_points[:, 0].max() + margin), 0, size))
    y1 = int(np.clip(np.ceil(all_points[:, 1].max() + margin), 0, size))
    if x1 <= x0 or y1 <= y0:
        return coverage
    canvas = np.zeros(((y1 - y0) * supersample, (x1 - x0) * supersample), np.uint8)
    shift = 4  # cv2 takes fixed-point coordinates with this many fractional bits
    for points, width in paths:
        # Pixel centre of the big canvas j sits at (j + 0.5) / supersample - 0.5 in image pixels.
        big = (points - (x0, y0) + 0.5) * supersample - 0.5
        fixed = np.round(big * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
        thickness = max(1, int(round(width * supersample)))
        cv2.polylines(canvas, [fixed], False, 255, thickness, cv2.LINE_AA, shift)
    small = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    coverage[y0:y1, x0:x1] = small.astype(np.float32) / 255.0
    return coverage


def curve(rng: np.random.Generator, start: np.ndarray, heading: float, length: float, bend: float) -> np.ndarray:
    """A smooth curve (``64 x 2`` points, x / y) whose heading turns by up to ``bend`` radians, with a slight wobble."""
    t = np.linspace(0.0, 1.0, 64)
    wobble = rng.uniform(0, 0.25) * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 2 * np.pi))
    turn = rng.uniform(-bend, bend) * t + wobble
    angles = heading + turn
    steps = np.stack([np.cos(angles), np.sin(angles)], axis=1) * (length / (len(t) - 1))
    return start + np.vstack([[0.0, 0.0], np.cumsum(steps[:-1], axis=0)])


def random_walk(
    rng: np.random.Generator, start: np.ndarray, heading: float, length: float, step: float, jitter: float
) -> np.ndarray:
    """A jagged path (``N x 2`` points, x / y): straight steps of ``step`` pixels.

    The heading wanders by about ``jitter`` radians a step and is pulled back towards ``heading``.
    """
    n = max(3, int(np.ceil(length / step)))
    angles = np.empty(n)
    angle = heading
    for i in range(n):  # n ~ 10-40 steps: a short loop over segments, not over pixels
        angle += rng.normal(0.0, jitter) - 0.3 * (angle - heading)
        angles[i] = angle
    steps = np.stack([np.cos(angles), np.sin(angles)], axis=1) * step
    return start + np.vstack([[0.0, 0.0], np.cumsum(steps, axis=0)])


