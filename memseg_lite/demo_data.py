"""Procedural demo categories in the MVTec AD layout, so the workbook runs offline.

MVTec AD cannot be downloaded here, so three small "products" stand in for it:

- ``button``: an ivory button on a dark slate table (an *object* category, RGB): it moves, turns,
  catches the light from slightly different sides and varies a little in colour;
- ``wood``: a full-frame wooden surface (a *texture* category, RGB) with warped growth rings and
  fibres;
- ``mesh``: a woven wire mesh (a *texture* category, grey-level like MVTec's grid, screw and
  zipper), with jittered wires and uneven lighting.

Every image is rendered in two stages. The *albedo* is what the surface looks like under flat
light; the *capture* step multiplies it by a lighting field, adds camera noise and rounds to
8 bits. A defect only changes the albedo, inside its own antialiased footprint (its *coverage*),
and the capture step is shared, so the ``clean`` and defective ``image`` of a sample differ only
where the ground-truth mask says, plus at most a one-pixel antialiasing rim. The mask holds the
pixels whose centre lies inside the defect (coverage >= 0.5).

The defects are geometry: strokes, shaded pits, polar blobs, chipped edges, removed or displaced
wires. None is made the way MemSeg simulates anomalies for training (textures or shuffled
patches pasted through thresholded Perlin noise), so a model that does well here has learnt the
product, not the simulator.

Seeds: each image has its own ``numpy.random.SeedSequence`` derived from
``(seed, category, split, index)`` (see :func:`sample_seed`), so adding a category or changing
the counts leaves every other image byte-identical.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from memseg_lite.io import write_image

GENERATOR_VERSION = 1
MASK_COVERAGE = 0.5  # a pixel is in the mask when the defect covers at least half of it
MIN_SIZE = 32
MAX_SIZE = 4096
MIN_VISIBILITY = 8.0  # mean albedo change (grey levels) a defect must reach inside its mask
_MAX_TRIES = 50


@dataclass(frozen=True)
class CategorySpec:
    """What a demo category is: its name, kind, colour mode, defect types and a description."""

    name: str
    kind: str  # "object" (foreground on a background) or "texture" (full-frame surface)
    grayscale: bool  # written as single-channel PNG, like MVTec's grid, screw and zipper
    defects: tuple[str, ...]
    description: str


CATEGORIES: dict[str, CategorySpec] = {
    "button": CategorySpec(
        name="button",
        kind="object",
        grayscale=False,
        defects=("scratch", "dent", "stain", "chip"),
        description=(
            "An ivory four-hole button with a raised rim and an engraved arrow on a dark slate table; "
            "position, rotation, light direction, brightness and colour vary."
        ),
    ),
    "wood": CategorySpec(
        name="wood",
        kind="texture",
        grayscale=False,
        defects=("scratch", "hole", "stain", "crack"),
        description=(
            "A full-frame wooden board with warped growth rings and fibres; ring spacing, phase, "
            "grain angle, arcs and tone vary."
        ),
    ),
    "mesh": CategorySpec(
        name="mesh",
        kind="texture",
        grayscale=True,
        defects=("broken", "bent", "glue", "thread"),
        description=(
            "A grey-level woven wire mesh on a dark backing; wire pitch, angle, phase, jitter and "
            "lighting vary."
        ),
    ),
}


@dataclass(frozen=True, eq=False)
class DemoSample:
    """One rendered image with its ground truth.

    ``image`` and ``clean`` are uint8, ``H x W x 3`` (RGB) or ``H x W`` (grey categories);
    ``clean`` is the same image without the defect (same seed). ``mask`` is bool ``H x W``,
    True on the defect, all False for a good sample.
    """

    image: np.ndarray
    mask: np.ndarray
    clean: np.ndarray
    category: str
    defect: str | None


@dataclass(frozen=True)
class DemoDatasetSummary:
    """What :func:`write_demo_dataset` wrote; ``str()`` gives a short table."""

    root: Path
    seed: int
    size: int
    counts: dict[str, dict[str, int]]  # category -> split ("train/good", "test/<defect>") -> images
    seconds: float = field(compare=False)

    @property
    def n_images(self) -> int:
        return sum(sum(splits.values()) for splits in self.counts.values())

    def __str__(self) -> str:
        rows = [("category", "kind", "channels", "train", "test good", "test defect (per type)")]
        for name, splits in self.counts.items():
            spec = CATEGORIES[name]
            per_defect = ", ".join(f"{d} {splits[f'test/{d}']}" for d in spec.defects)
            n_defect = sum(splits[f"test/{d}"] for d in spec.defects)
            rows.append(
                (
                    name,
                    spec.kind,
                    "grey" if spec.grayscale else "RGB",
                    str(splits["train/good"]),
                    str(splits["test/good"]),
                    f"{n_defect} ({per_defect})",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            f"demo data: {self.n_images} images of {self.size} x {self.size} px, seed {self.seed}, "
            f"written to {self.root} in {self.seconds:.1f} s"
        ]
        lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Seeds and argument checks
# ----------------------------------------------------------------------------------------------


def sample_seed(seed: int, category: str, split: str, index: int) -> np.random.SeedSequence:
    """The seed of one image: ``split`` is ``"train/good"``, ``"test/good"`` or ``"test/<defect>"``.

    Names enter through CRC-32 (stable across Python runs, unlike ``hash``), so each image's
    seed depends only on its own coordinates.
    """
    seed = _check_int("seed", seed, minimum=0)
    index = _check_int("index", index, minimum=0)
    if not isinstance(category, str) or not isinstance(split, str):
        raise TypeError(f"category and split must be strings, got {category!r} and {split!r}")
    key = (zlib.crc32(category.encode()), zlib.crc32(split.encode()), index)
    return np.random.SeedSequence(seed, spawn_key=key)


def _child_seed(sequence: np.random.SeedSequence, number: int) -> np.random.SeedSequence:
    # Built by hand rather than with .spawn(), which counts calls and would make a reused
    # SeedSequence give different children the second time.
    return np.random.SeedSequence(
        sequence.entropy, spawn_key=(*sequence.spawn_key, number), pool_size=sequence.pool_size
    )


def _as_seed_sequence(seed: int | Sequence[int] | np.random.SeedSequence) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"seed must be an int, a sequence of ints or a numpy SeedSequence, got {seed!r}")
    if isinstance(seed, (int, np.integer)):
        _check_int("seed", seed, minimum=0)
        return np.random.SeedSequence(int(seed))
    if isinstance(seed, Sequence) and seed and all(isinstance(s, (int, np.integer)) and s >= 0 for s in seed):
        return np.random.SeedSequence([int(s) for s in seed])
    raise TypeError(
        f"seed must be a non-negative int, a sequence of them or a numpy SeedSequence, got {seed!r}"
    )


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _check_size(size: object) -> int:
    return _check_int("size", size, minimum=MIN_SIZE, maximum=MAX_SIZE)


def _spec(category: object) -> CategorySpec:
    if not isinstance(category, str):
        raise TypeError(f"category must be a string, got {type(category).__name__} {category!r}")
    if category not in CATEGORIES:
        raise ValueError(f"unknown demo category {category!r}; known categories: {', '.join(CATEGORIES)}")
    return CATEGORIES[category]


def _check_categories(categories: str | Iterable[str] | None) -> list[str]:
    if categories is None:
        return list(CATEGORIES)
    if isinstance(categories, str):
        categories = [categories]
    names = list(dict.fromkeys(categories))  # keep order, drop repeats
    if not names:
        raise ValueError(f"categories is empty; pass None for all, or some of: {', '.join(CATEGORIES)}")
    for name in names:
        _spec(name)
    return names


# ----------------------------------------------------------------------------------------------
# Drawing primitives (vectorised; pixel i covers [i - 0.5, i + 0.5) so its centre is at i)
# ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float32 ``size x size`` arrays of the pixel centres' y and x coordinates."""
    ys, xs = np.indices((size, size), dtype=np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise, float32 ``size x size``, zero mean and unit std, with about ``cells`` bumps a side.

    Bicubic upsampling of a small random grid: cheap, smooth, and not Perlin noise (which is
    what MemSeg's anomaly simulation uses).
    """
    grid = rng.standard_normal((cells + 2, cells + 2), dtype=np.float32)
    noise = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    noise -= noise.mean()
    return noise / (noise.std() + 1e-6)


def _grain(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Fine grain, float32 ``size x size``, unit std: white noise blurred by ``sigma`` pixels."""
    noise = rng.standard_normal((size, size), dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    return noise / (noise.std() + 1e-6)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _disc_coverage(size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """Antialiased coverage (float32 ``size x size`` in [0, 1]) of a disc."""
    ys, xs = _pixel_grid(size)
    return np.clip(float(radius) - np.hypot(xs - float(cx), ys - float(cy)) + 0.5, 0.0, 1.0)


def _ellipse_frame(size: int, cx: float, cy: float, a: float, b: float, angle: float):
    """Normalised ellipse coordinates (u / a, v / b) and the approximate signed distance to its edge."""
    ys, xs = _pixel_grid(size)
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


def _blob(rng: np.random.Generator, size: int, cx: float, cy: float, radius: float, irregularity: float):
    """An irregular, smooth-edged blob: a polar radius ``r(theta)`` with a few random harmonics.

    Returns ``(coverage, q)``: antialiased coverage and ``q = distance from centre / r(theta)``
    (0 in the middle, 1 on the edge), both float32 ``size x size``.
    """
    ys, xs = _pixel_grid(size)
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


def _stroke_coverage(size: int, paths: Sequence[tuple[np.ndarray, float]], supersample: int = 4) -> np.ndarray:
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


def _curve(rng: np.random.Generator, start: np.ndarray, heading: float, length: float, bend: float) -> np.ndarray:
    """A smooth curve (``64 x 2`` points, x / y) whose heading turns by up to ``bend`` radians, with a slight wobble."""
    t = np.linspace(0.0, 1.0, 64)
    wobble = rng.uniform(0, 0.25) * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 2 * np.pi))
    turn = rng.uniform(-bend, bend) * t + wobble
    angles = heading + turn
    steps = np.stack([np.cos(angles), np.sin(angles)], axis=1) * (length / (len(t) - 1))
    return start + np.vstack([[0.0, 0.0], np.cumsum(steps[:-1], axis=0)])


def _random_walk(
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


# ----------------------------------------------------------------------------------------------
# Scenes: the albedo of a good image plus its capture (lighting, noise)
# ----------------------------------------------------------------------------------------------


@dataclass
class _Scene:
    albedo: np.ndarray  # float32 H x W x C (C = 3 RGB, or 1 grey), grey levels under flat light
    light: np.ndarray  # float32 H x W, multiplicative lighting field
    noise: np.ndarray  # float32 H x W x C, additive camera noise
    foreground: np.ndarray  # float32 H x W, coverage of the product (ones for textures)
    light_dir: np.ndarray  # unit 2-vector (x, y) pointing towards the light
    extras: dict = field(default_factory=dict)  # layers some defects need


def _capture(rng: np.random.Generator, size: int, channels: int, gradient: float, noise_std: float):
    """Lighting field (level x linear gradient x mild vignette) and camera noise."""
    ys, xs = _pixel_grid(size)
    centre = (size - 1) / 2
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xs - centre) * math.cos(angle) + (ys - centre) * math.sin(angle)) / size
    radius2 = ((xs - centre) ** 2 + (ys - centre) ** 2) / (0.5 * size * size)
    level = rng.uniform(0.9, 1.08)
    light = level * (1.0 + rng.uniform(0.0, gradient) * ramp) * (1.0 - rng.uniform(0.0, 0.08) * radius2)
    noise_std *= rng.uniform(0.7, 1.3)
    noise = rng.standard_normal((size, size, channels), dtype=np.float32) * np.float32(noise_std)
    return light.astype(np.float32), noise


def _finish(albedo: np.ndarray, scene: _Scene) -> np.ndarray:
    """Capture an albedo: light it, add the camera noise, round to uint8 (grey scenes drop the channel axis)."""
    pixels = albedo * scene.light[:, :, None] + scene.noise
    image = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
    return image[:, :, 0] if image.shape[2] == 1 else image


def _button_scene(rng: np.random.Generator, size: int) -> _Scene:
    ys, xs = _pixel_grid(size)
    s = float(size)
    cx, cy = (float(c) for c in s / 2 + rng.uniform(-0.07, 0.07, 2) * s)
    radius = s * rng.uniform(0.30, 0.335)
    rotation = rng.uniform(0, 2 * np.pi)
    light_angle = np.deg2rad(225 + rng.uniform(-25, 25))  # from the upper left
    light_dir = np.array([math.cos(light_angle), math.sin(light_angle)], np.float32)
    lx, ly = float(light_dir[0]), float(light_dir[1])

    # Slate table: a cool dark grey with fine grain and slow mottling.
    table = np.array([64, 68, 75], np.float32) * rng.uniform(0.9, 1.1) + rng.normal(0, 1.5, 3).astype(np.float32)
    texture = 3.0 * _smooth_noise(rng, size, 6) + 3.5 * _grain(rng, size, 0.8)
    background = table + texture[:, :, None]
    # Soft drop shadow, cast away from the light.
    shadow_x, shadow_y = cx - lx * 0.035 * s, cy - ly * 0.035 * s
    shadow = _smoothstep(-0.05 * s, 0.05 * s, radius - np.hypot(xs - shadow_x, ys - shadow_y))
    background *= (1.0 - 0.45 * shadow)[:, :, None]

    # Relief of the button, as a radial slope dh/dr: a shallow dish inside a raised rim.
    dx, dy = xs - cx, ys - cy
    rho = np.hypot(dx, dy)
    facing = (dx * lx + dy * ly) / np.maximum(rho, 1e-3)  # +1 on the side facing the light
    rim_start = 0.78 * radius
    rim_t = np.clip((rho - rim_start) / (radius - rim_start), 0, 1)
    slope = np.where(rho < rim_start, 0.35 * rho / rim_start, np.cos(np.pi * rim_t))
    shade = 1.0 - 0.22 * slope * facing

    # Four holes with countersunk edges, and an engraved arrow between two of them (shows the rotation).
    holes = np.zeros_like(rho)
    hole_radius = 0.09 * radius
    for k in range(4):
        angle = rotation + np.pi / 4 + k * np.pi / 2
        hx, hy = cx + 0.27 * radius * math.cos(angle), cy + 0.27 * radius * math.sin(angle)
        window = _window(size, hx, hy, 1.7 * hole_radius + 2)  # work near the hole only
        hole_dx, hole_dy = xs[window] - hx, ys[window] - hy
        hole_rho = np.hypot(hole_dx, hole_dy)
        holes[window] = np.maximum(holes[window], np.clip(hole_radius - hole_rho + 0.5, 0, 1))
        bevel = _smoothstep(hole_radius, hole_radius + 1.0, hole_rho)
        bevel *= _smoothstep(1.7 * hole_radius, 1.5 * hole_radius, hole_rho)
        hole_facing = (hole_dx * lx + hole_dy * ly) / np.maximum(hole_rho, 1e-3)
        shade[window] *= 1.0 + 0.3 * bevel * hole_facing  # the countersink wall facing the light is lit
    arrow = np.zeros_like(rho)
    arrow_points = _arrow_points(cx, cy, radius, rotation)
    arrow_x, arrow_y = cx + 0.57 * radius * math.cos(rotation), cy + 0.57 * radius * math.sin(rotation)
    window = _window(size, arrow_x, arrow_y, 0.12 * radius + 2)
    arrow[window] = _triangle_coverage(ys[window], xs[window], arrow_points)

    colour = rng.uniform(0.97, 1.03, 3).astype(np.float32) * rng.uniform(0.93, 1.04)
    base = np.array([226, 208, 172], np.float32) * colour
    surface = 1.0 + 0.02 * _smooth_noise(rng, size, 5) + 0.012 * _grain(rng, size, 0.7)
    body = base * (shade * surface * (1.0 - 0.4 * arrow))[:, :, None]

    disc = _disc_coverage(size, cx, cy, radius)
    seen_through_holes = 0.55 * background  # the table under the button, in its shadow
    inside = body * (1.0 - holes)[:, :, None] + seen_through_holes * holes[:, :, None]
    albedo = background * (1.0 - disc)[:, :, None] + inside * disc[:, :, None]
    light, noise = _capture(rng, size, 3, gradient=0.25, noise_std=1.8)
    return _Scene(
        albedo=albedo.astype(np.float32),
        light=light,
        noise=noise,
        foreground=(disc * (1.0 - holes)).astype(np.float32),
        light_dir=light_dir,
        extras={"background": background.astype(np.float32), "centre": (cx, cy), "radius": radius},
    )


def _arrow_points(cx: float, cy: float, radius: float, rotation: float) -> np.ndarray:
    direction = np.array([np.cos(rotation), np.sin(rotation)])
    normal = np.array([-direction[1], direction[0]])
    centre = np.array([cx, cy])
    tip = centre + 0.67 * radius * direction
    base = centre + 0.47 * radius * direction
    return np.stack([tip, base + 0.09 * radius * normal, base - 0.09 * radius * normal])


def _window(size: int, cx: float, cy: float, reach: float) -> tuple[slice, slice]:
    """Rows and columns of the pixels within ``reach`` of ``(cx, cy)`` (a square, clipped to the image)."""
    rows = slice(int(np.clip(np.floor(cy - reach), 0, size)), int(np.clip(np.ceil(cy + reach) + 1, 0, size)))
    cols = slice(int(np.clip(np.floor(cx - reach), 0, size)), int(np.clip(np.ceil(cx + reach) + 1, 0, size)))
    return rows, cols


def _triangle_coverage(ys: np.ndarray, xs: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Antialiased coverage of a triangle (``points`` 3 x 2, x / y) at pixel centres ``ys``, ``xs``.

    The nearest edge's signed distance, shifted by half a pixel.
    """
    (ax, ay), (bx, by) = points[1] - points[0], points[2] - points[0]
    orientation = 1.0 if ax * by - ay * bx >= 0 else -1.0
    inside = np.full(xs.shape, np.inf, np.float32)
    for i in range(3):
        a, b = points[i], points[(i + 1) % 3]
        edge = b - a
        normal = orientation * np.array([-edge[1], edge[0]]) / np.linalg.norm(edge)  # points inwards
        nx, ny = float(normal[0]), float(normal[1])
        inside = np.minimum(inside, (xs - float(a[0])) * nx + (ys - float(a[1])) * ny)
    return np.clip(inside + 0.5, 0, 1)


def _wood_scene(rng: np.random.Generator, size: int) -> _Scene:
    ys, xs = _pixel_grid(size)
    s = float(size)
    centre = (s - 1) / 2
    grain_angle = rng.uniform(-0.12, 0.12)  # radians from vertical
    cos, sin = math.cos(grain_angle), math.sin(grain_angle)
    across = (xs - centre) * cos + (ys - centre) * sin
    along = -(xs - centre) * sin + (ys - centre) * cos
    # Slow waves across the grain that change slowly along it, so the rings stay roughly parallel.
    waves = cv2.resize(rng.standard_normal((3, 4), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    warp = s * (0.035 * waves + 0.004 * _smooth_noise(rng, size, 7))
    arcs = rng.uniform(-0.35, 0.35) * (along - rng.uniform(-0.5, 0.5) * s) ** 2 / s  # flat-sawn "cathedral" arcs
    position = across + warp + arcs
    period = s * rng.uniform(0.055, 0.09)
    phase = position / period + rng.uniform(0, 1)
    within = phase - np.floor(phase)
    # Earlywood is light; latewood darkens gradually, then the next ring starts abruptly.
    ring = within**2.5 * (1.0 - _smoothstep(0.9, 1.0, within))

    # Fibres: a noise strip stretched along the grain, looked up through the same warp.
    strip = rng.standard_normal((size // 8 + 4, 2 * size + 8), dtype=np.float32)
    strip = cv2.GaussianBlur(strip, (0, 0), 0.6)
    map_x = (position * 2 + size + 4).astype(np.float32)
    map_y = ((along + s) / 16 + 2).astype(np.float32)
    fibres = cv2.remap(strip, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    fibres /= fibres.std() + 1e-6

    tone = rng.uniform(0.9, 1.07) * rng.uniform(0.96, 1.04, 3).astype(np.float32)
    light_tone = np.array([212, 168, 118], np.float32) * tone
    dark_tone = light_tone * rng.uniform(0.6, 0.7) * np.array([1.0, 0.94, 0.88], np.float32)
    mix = np.clip(0.12 + 0.62 * ring + 0.1 * fibres + 0.06 * _smooth_noise(rng, size, 4), 0, 1)
    albedo = light_tone + (dark_tone - light_tone) * mix[:, :, None]
    light, noise = _capture(rng, size, 3, gradient=0.2, noise_std=1.5)
    light_angle = rng.uniform(0, 2 * np.pi)
    return _Scene(
        albedo=albedo.astype(np.float32),
        light=light,
        noise=noise,
        foreground=np.ones((size, size), np.float32),
        light_dir=np.array([np.cos(light_angle), np.sin(light_angle)], np.float32),
        extras={"grain_angle": grain_angle, "period": period},
    )


def _mesh_params(rng: np.random.Generator, size: int) -> dict:
    s = float(size)
    period = s / rng.uniform(11.0, 13.5)
    return {
        "period": period,
        "half_width": period * rng.uniform(0.2, 0.25),
        "angle": rng.uniform(-0.07, 0.07),
        "offset": rng.uniform(0, 1, 2),
        "warp_x": 0.006 * s * _smooth_noise(rng, size, 5),
        "warp_y": 0.006 * s * _smooth_noise(rng, size, 5),
        "wire_gain": rng.uniform(0.92, 1.06, 64).astype(np.float32),
        "wire_level": rng.uniform(175, 205),
        "backing": (rng.uniform(28, 42) * (1.0 + 0.12 * _smooth_noise(rng, size, 4))).astype(np.float32),
        "grain": 0.03 * _grain(rng, size, 0.7),
    }


def _mesh_albedo(
    params: dict,
    size: int,
    displacement: tuple[np.ndarray, np.ndarray] | None = None,
    cut: tuple[str, int, float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render the woven mesh; returns ``(albedo H x W, coverage of the cut wire segment H x W)``.

    Vertical wire ``i`` lies at ``u = i``, horizontal wire ``j`` at ``v = j`` (mesh coordinates in
    pitches). They weave: vertical wire ``i`` rises as ``(-1)^i cos(pi v)`` and horizontal wire
    ``j`` as ``-(-1)^j cos(pi u)``, so at every crossing one is up where the other is down.
    ``displacement`` shifts the sampling positions (a bent patch); ``cut = (direction, wire, start,
    stop)`` removes wire ``wire`` ("h" or "v") between mesh coordinates ``start`` and ``stop``.
    """
    ys, xs = _pixel_grid(size)
    x = xs + params["warp_x"]
    y = ys + params["warp_y"]
    if displacement is not None:
        x = x + displacement[0]
        y = y + displacement[1]
    period, width = params["period"], params["half_width"]
    cos, sin = math.cos(params["angle"]), math.sin(params["angle"])
    u = (x * cos + y * sin) / period + float(params["offset"][0])
    v = (-x * sin + y * cos) / period + float(params["offset"][1])
    iu, iv = np.floor(u + 0.5), np.floor(v + 0.5)  # nearest vertical / horizontal wire
    du, dv = (u - iu) * period, (v - iv) * period  # signed distance to it, in pixels
    cover_v = np.clip(width - np.abs(du) + 0.5, 0, 1)
    cover_h = np.clip(width - np.abs(dv) + 0.5, 0, 1)
    cut_coverage = np.zeros_like(cover_h)
    if cut is not None:
        direction, wire, start, stop = cut
        along, index, cover = (u, iv, cover_h) if direction == "h" else (v, iu, cover_v)
        gap = (index == wire) * np.clip(np.minimum(along - start, stop - along) * period + 0.5, 0, 1)
        cut_coverage = cover * gap
        cover *= 1.0 - gap  # in place: cover is cover_h or cover_v
    parity_u = 1.0 - 2.0 * np.mod(iu, 2)
    parity_v = 1.0 - 2.0 * np.mod(iv, 2)
    height_v = parity_u * np.cos(np.pi * v)
    height_h = -parity_v * np.cos(np.pi * u)
    gains = params["wire_gain"]
    level = params["wire_level"]

    def wire_tone(distance: np.ndarray, height: np.ndarray, index: np.ndarray) -> np.ndarray:
        across = np.clip(np.abs(distance) / width, 0, 1)
        cylinder = 0.55 + 0.45 * np.sqrt(1.0 - across * across)  # round wire: bright crest, darker flanks
        return level * cylinder * (0.72 + 0.28 * height) * gains[np.mod(index, len(gains)).astype(np.intp)]

    tone_v = wire_tone(du, height_v, iu)
    tone_h = wire_tone(dv, height_h, iv)
    v_on_top = height_v >= height_h
    top_cover = np.where(v_on_top, cover_v, cover_h)
    top_tone = np.where(v_on_top, tone_v, tone_h)
    under_cover = np.where(v_on_top, cover_h, cover_v)
    under_tone = np.where(v_on_top, tone_h, tone_v) * 0.85  # in the upper wire's shade
    backing = params["backing"] * (1.0 - 0.35 * np.maximum(cover_h, cover_v))  # wires' shadow on the backing
    under = under_cover * under_tone + (1.0 - under_cover) * backing
    albedo = (top_cover * top_tone + (1.0 - top_cover) * under) * (1.0 + params["grain"])
    return albedo.astype(np.float32), cut_coverage.astype(np.float32)


def _mesh_scene(rng: np.random.Generator, size: int) -> _Scene:
    params = _mesh_params(rng, size)
    albedo, _ = _mesh_albedo(params, size)
    light, noise = _capture(rng, size, 1, gradient=0.35, noise_std=2.0)
    light_angle = rng.uniform(0, 2 * np.pi)
    return _Scene(
        albedo=albedo[:, :, None],
        light=light,
        noise=noise,
        foreground=np.ones((size, size), np.float32),
        light_dir=np.array([np.cos(light_angle), np.sin(light_angle)], np.float32),
        extras={"params": params},
    )


_SCENES: dict[str, Callable[[np.random.Generator, int], _Scene]] = {
    "button": _button_scene,
    "wood": _wood_scene,
    "mesh": _mesh_scene,
}


# ----------------------------------------------------------------------------------------------
# Defects: each returns (new albedo, coverage); mask = coverage >= MASK_COVERAGE
# ----------------------------------------------------------------------------------------------


def _spot_on_product(rng: np.random.Generator, scene: _Scene, size: int, margin: float) -> np.ndarray:
    """A random point (x, y) on the button face (objects) or anywhere ``margin`` away from the border (textures)."""
    if "radius" in scene.extras:
        cx, cy = scene.extras["centre"]
        distance = scene.extras["radius"] * 0.7 * np.sqrt(rng.uniform(0, 1))
        angle = rng.uniform(0, 2 * np.pi)
        return np.array([cx + distance * math.cos(angle), cy + distance * math.sin(angle)])
    return rng.uniform(margin * size, (1 - margin) * size, 2)


def _scale(scene: _Scene, size: int) -> float:
    """The product's scale in pixels: the button's radius, or a third of the frame for textures."""
    return scene.extras.get("radius", size / 3)


def _tint_towards(
    albedo: np.ndarray, coverage: np.ndarray, target: np.ndarray | float, strength: np.ndarray | float
) -> np.ndarray:
    """Move ``albedo`` (``H x W x C``) towards ``target`` by ``coverage * strength`` (``H x W``)."""
    weight = (coverage * strength)[:, :, None]
    return albedo + (np.asarray(target, np.float32) - albedo) * weight


def _defect_scratch(scene: _Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A thin curved antialiased stroke, lighter (polished) or darker (dirt in the groove)."""
    scale = _scale(scene, size)
    start = _spot_on_product(rng, scene, size, margin=0.15)
    length = scale * rng.uniform(0.35, 1.0)
    width = max(1.5, rng.uniform(1.2, 3.0) * size / 256)
    path = _curve(rng, start, rng.uniform(0, 2 * np.pi), length, bend=1.2)
    coverage = _stroke_coverage(size, [(path, width)]) * scene.foreground
    if rng.uniform() < 0.4:
        albedo = _tint_towards(scene.albedo, coverage, 255.0, rng.uniform(0.35, 0.8))
    else:
        albedo = _tint_towards(scene.albedo, coverage, 0.0, rng.uniform(0.15, 0.55))
    return albedo, coverage


def _shaded_pit(scene: _Scene, rng: np.random.Generator, size: int, radius: float, depth: float, core: float):
    """An elliptical pit: uniform darkening, a wall shaded by the light, and optionally a dark core."""
    centre = _spot_on_product(rng, scene, size, margin=0.1)
    a = radius * rng.uniform(0.8, 1.25)
    b = a * rng.uniform(0.5, 1.0)
    angle = rng.uniform(0, np.pi)
    pu, pv, rho, distance = _ellipse_frame(size, centre[0], centre[1], a, b, angle)
    coverage = np.clip(0.5 - distance, 0, 1) * scene.foreground
    cos, sin = math.cos(angle), math.sin(angle)
    lx, ly = float(scene.light_dir[0]), float(scene.light_dir[1])
    light_u, light_v = lx * cos + ly * sin, -lx * sin + ly * cos
    towards_light = np.clip(pu * light_u + pv * light_v, -1, 1)
    # In a pit the wall on the light's side faces away from it (dark), the far wall catches light.
    wall = 1.0 - rng.uniform(0.25, 0.5) * towards_light
    bottom = 1.0 - core * _smoothstep(0.9, 0.35, rho)
    factor = (1.0 - depth) * wall * bottom
    albedo = scene.albedo * (1.0 - coverage + coverage * factor)[:, :, None]
    return albedo, coverage


def _defect_dent(scene: _Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    radius = max(2.5, _scale(scene, size) * rng.uniform(0.06, 0.16))
    return _shaded_pit(scene, rng, size, radius, depth=rng.uniform(0.03, 0.15), core=0.0)


def _defect_hole(scene: _Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    radius = max(2.0, size * rng.uniform(0.012, 0.04))
    return _shaded_pit(scene, rng, size, radius, depth=rng.uniform(0.15, 0.35), core=rng.uniform(0.45, 0.85))


def _defect_stain(scene: _Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A partly transparent irregular blob that tints the surface, darker at its rim (a dried liquid)."""
    centre = _spot_on_product(rng, scene, size, margin=0.12)
    radius = max(3.0, _scale(scene, size) * rng.uniform(0.12, 0.33))
    coverage, q = _blob(rng, size, centre[0], centre[1], radius, irregularity=rng.uniform(0.3, 0.9))
    coverage = coverage * scene.foreground
    opacity = rng.uniform(0.25, 0.6)
    rim = np.exp(-(((1.0 - q) * radius / max(1.5, 0.12 * radius)) ** 2))  # pigment gathers at the edge
    density = opacity * np.clip(0.75 + 0.15 * _smooth_noise(rng, size, 8) + 0.5 * rim, 0, 1.5)
    if scene.albedo.shape[2] == 1:
        tint = np.array([rng.uniform(0.25, 0.6)], np.float32)
    elif "radius" in scene.extras:  # on the button: oil, ink or rust
        tint = np.array([[0.45, 0.33, 0.2], [0.35, 0.42, 0.55], [0.6, 0.3, 0.22]][rng.integers(3)], np.float32)
    else:  # on wood: water or coffee, darker and a little greyer
        tint = np.array([0.5, 0.45, 0.42], np.float32)
    multiply = 1.0 - (coverage * np.minimum(density, 1.0))[:, :, None] * (1.0 - tint)
    return scene.albedo * multiply, coverage


def _defect_crack(scene: _Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A jagged dark split mostly along the grain, with a thinner side branch or two."""
    grain = scene.extras.get("grain_angle", 0.0)
    heading = np.pi / 2 + grain + rng.uniform(-0.25, 0.25) + (np.pi if rng.uniform() < 0.5 else 0.0)
    start = _spot_on_product(rng, scene, size, margin=0.2)
    length = size * rng.uniform(0.2, 0.55)
    step = max(2.0, size / 64)
    width = max(1.5, rng.uniform(1.5, 3.0) * size / 256)
    trunk = _random_walk(rng, start, heading, length, step, jitter=0.35)
    paths = [(trunk, width)]
    for _ in range(rng.integers(0, 3)):
        fork = trunk[rng.integers(1, len(trunk) - 1)]
        side = heading + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9)
        branch = _random_walk(rng, fork, side, length * rng.uniform(0.15, 0.35), step, 0.4)
        paths.append((branch, max(1.5, 0.7 * width)))
    coverage = _stroke_coverage(size, paths)
    albedo = scene.albedo * (1.0 - coverage * rng.uniform(0.3, 0.75))[:, :, None]
    return albedo, coverage


def _defect_chip(scene: _Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A piece broken off the button's edge: the table shows where the button was."""
    cx, cy = scene.extras["centre"]
    radius = scene.extras["radius"]
    angle = rng.uniform(0, 2 * np.pi)
    reach = radius * rng.uniform(0.98, 1.06)
    bite = max(2.5, radius * rng.uniform(0.1, 0.24))
    coverage, _ = _blob(rng, size, cx + reach * math.cos(angle), cy + reach * math.sin(angle), bite, irregularity=0.8)
    coverage = coverage * scene.foreground
    albedo = scene.albedo * (1.0 - coverage)[:, :, None] + scene.extras["background"] * coverage[:, :, None]
    return albedo, coverage


def _defect_broken(scene: _Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A wire missing over one to three pitches (snapped and gone)."""
    params = scene.extras["params"]
    n_wires = size / params["period"]
    direction = "h" if rng.uniform() < 0.5 else "v"
    # Horizontal wire j runs along u and sits at v = j; a vertical one the other way round.
    across, along = (1, 0) if direction == "h" else (0, 1)
    wire = int(np.floor(params["offset"][across] + rng.uniform(0.15, 0.85) * n_wires + 0.5))
    start = params["offset"][along] + rng.uniform(0.1, 0.7) * n_wires
    stop = start + rng.uniform(0.6, 2.5)
    albedo, coverage = _mesh_albedo(params, size, cut=(direction, wire, start, stop))
    return albedo[:, :, None], coverage


def _defect_bent(scene: _Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A dent that pushes the wires sideways inside a round patch (smooth, compactly supported)."""
    params = scene.extras["params"]
    ys, xs = _pixel_grid(size)
    cx, cy = (float(c) for c in rng.uniform(0.15 * size, 0.85 * size, 2))
    radius = size * rng.uniform(0.07, 0.13)
    amplitude = params["period"] * rng.uniform(0.35, 0.65)
    angle = rng.uniform(0, 2 * np.pi)
    r2 = ((xs - cx) ** 2 + (ys - cy) ** 2) / radius**2
    profile = np.clip(1.0 - r2, 0, 1) ** 3
    shift = amplitude * profile
    albedo, _ = _mesh_albedo(params, size, displacement=(shift * math.cos(angle), shift * math.sin(angle)))
    # The mask is where the wires moved by more than a tenth of a pixel (beyond that they look unchanged).
    coverage = np.clip((shift - 0.1) * 4.0 + MASK_COVERAGE, 0, 1).astype(np.float32)
    return albedo[:, :, None], coverage


def _defect_glue(scene: _Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A translucent grey blob that bridges the mesh openings."""
    centre = rng.uniform(0.12 * size, 0.88 * size, 2)
    radius = max(3.0, size * rng.uniform(0.04, 0.1))
    coverage, q = _blob(rng, size, centre[0], centre[1], radius, irregularity=rng.uniform(0.3, 0.8))
    level = rng.uniform(95, 165)
    opacity = rng.uniform(0.45, 0.9) * (0.85 + 0.15 * np.sqrt(np.clip(1 - q * q, 0, 1)))  # thicker in the middle
    return _tint_towards(scene.albedo, coverage, level, opacity), coverage


def _defect_thread(scene: _Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A loose fibre lying across the mesh: a long thin curve, light or dark."""
    start = rng.uniform(0.1 * size, 0.9 * size, 2)
    path = _curve(rng, start, rng.uniform(0, 2 * np.pi), size * rng.uniform(0.25, 0.6), bend=2.0)
    width = max(1.5, rng.uniform(1.3, 2.5) * size / 256)
    coverage = _stroke_coverage(size, [(path, width)])
    target = rng.uniform(215, 250) if rng.uniform() < 0.6 else rng.uniform(5, 25)
    return _tint_towards(scene.albedo, coverage, target, rng.uniform(0.55, 0.95)), coverage


_DEFECTS: dict[str, dict[str, Callable[[_Scene, np.random.Generator, int], tuple[np.ndarray, np.ndarray]]]] = {
    "button": {"scratch": _defect_scratch, "dent": _defect_dent, "stain": _defect_stain, "chip": _defect_chip},
    "wood": {"scratch": _defect_scratch, "hole": _defect_hole, "stain": _defect_stain, "crack": _defect_crack},
    "mesh": {"broken": _defect_broken, "bent": _defect_bent, "glue": _defect_glue, "thread": _defect_thread},
}


def _add_defect(
    category: str, defect: str, scene: _Scene, rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the defect until it is large and visible enough; returns ``(albedo, bool mask)``."""
    draw = _DEFECTS[category][defect]
    min_area = max(4, round(2e-4 * size * size))
    for _ in range(_MAX_TRIES):
        albedo, coverage = draw(scene, rng, size)
        mask = coverage >= MASK_COVERAGE
        if mask.sum() < min_area:
            continue
        change = np.abs(albedo - scene.albedo).max(axis=2)[mask].mean()
        if change >= MIN_VISIBILITY:
            return albedo, mask
    raise RuntimeError(f"could not draw a visible {category}/{defect} defect in {_MAX_TRIES} tries (size {size})")


# ----------------------------------------------------------------------------------------------
# Public rendering API
# ----------------------------------------------------------------------------------------------


def render_good(category: str, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Render one defect-free image of ``category``: uint8 ``size x size x 3`` (RGB), or ``size x size`` (grey)."""
    spec = _spec(category)
    size = _check_size(size)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    scene = _SCENES[spec.name](rng, size)
    return _finish(scene.albedo, scene)


def render_sample(
    category: str,
    size: int,
    seed: int | Sequence[int] | np.random.SeedSequence,
    defect: str | None = None,
) -> DemoSample:
    """Render one sample with its ground truth: the image, its defect mask and the clean image.

    The clean image comes from the first child of ``seed`` and equals
    ``render_good(category, np.random.default_rng(child_0), size)``; the defect is drawn from the
    second child, so the same seed gives the same product with or without a defect.
    ``defect=None`` gives a good sample (``image == clean``, empty mask).
    """
    spec = _spec(category)
    size = _check_size(size)
    if defect is not None and defect not in spec.defects:
        raise ValueError(f"unknown defect {defect!r} for category {category!r}; its defects: {', '.join(spec.defects)}")
    sequence = _as_seed_sequence(seed)
    scene = _SCENES[spec.name](np.random.default_rng(_child_seed(sequence, 0)), size)
    clean = _finish(scene.albedo, scene)
    if defect is None:
        return DemoSample(image=clean, mask=np.zeros((size, size), bool), clean=clean, category=category, defect=None)
    albedo, mask = _add_defect(spec.name, defect, scene, np.random.default_rng(_child_seed(sequence, 1)), size)
    return DemoSample(image=_finish(albedo, scene), mask=mask, clean=clean, category=category, defect=defect)


# ----------------------------------------------------------------------------------------------
# Writing the data set
# ----------------------------------------------------------------------------------------------


def write_demo_dataset(
    out: str | os.PathLike,
    categories: str | Iterable[str] | None = None,
    size: int = 256,
    n_train: int = 60,
    n_test_good: int = 20,
    n_per_defect: int = 10,
    seed: int = 0,
    force: bool = False,
) -> DemoDatasetSummary:
    """Write the demo categories to ``out`` in the MVTec AD layout and return what was written.

    ``<out>/<category>/train/good/000.png``, ``test/good/...``, ``test/<defect>/...`` and
    ``ground_truth/<defect>/000_mask.png`` (single-channel uint8, 0 or 255), then
    ``<out>/manifest.json`` last. The set is built in a hidden sibling folder and swapped in when
    complete, so an interrupted run never leaves a half-written set at ``out``. Same arguments,
    byte-identical files.
    """
    out = Path(out)
    names = _check_categories(categories)
    size = _check_size(size)
    n_train = _check_int("n_train", n_train, minimum=1)
    n_test_good = _check_int("n_test_good", n_test_good, minimum=1)
    n_per_defect = _check_int("n_per_defect", n_per_defect, minimum=1)
    seed = _check_int("seed", seed, minimum=0)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out={out} is a file, not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} already exists and is not empty; pass --force (or force=True) to replace it")
        if not _is_demo_folder(out):
            # --force replaces demo data, never a folder of someone's own files.
            raise FileExistsError(
                f"{out} is not empty and holds no demo-data manifest.json, so it was not written by "
                "`memseg-lite demo-data`; refusing to delete it even with --force. Choose another --out, "
                "or empty the folder yourself"
            )
    target = out.resolve()
    if target.parent == target:
        raise ValueError(f"out={out} is a filesystem root; choose a folder such as data/demo")
    working = Path.cwd().resolve()
    if target.exists() and (working == target or target in working.parents):
        raise ValueError(f"refusing to replace {out}: it holds the current working directory; choose another --out")

    start = time.perf_counter()
    jobs = [
        (name, split, index, defect)
        for name in names
        for split, count, defect in _splits(CATEGORIES[name], n_train, n_test_good, n_per_defect)
        for index in range(count)
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        digits = max(3, len(str(max(n_train, n_test_good, n_per_defect) - 1)))
        for name, split, index, defect in tqdm(jobs, desc="demo data", unit="img", disable=None, leave=False):
            sample = render_sample(name, size, sample_seed(seed, name, split, index), defect)
            stem = f"{index:0{digits}d}"
            write_image(staging / name / split / f"{stem}.png", sample.image)
            if defect is not None:
                mask = sample.mask.astype(np.uint8) * np.uint8(255)
                write_image(staging / name / "ground_truth" / defect / f"{stem}_mask.png", mask)
        counts = {
            name: {split: count for split, count, _ in _splits(CATEGORIES[name], n_train, n_test_good, n_per_defect)}
            for name in names
        }
        manifest = {
            "generator": "memseg_lite.demo_data",
            "generator_version": GENERATOR_VERSION,
            "layout": "MVTec AD",
            "seed": seed,
            "size": size,
            "categories": {
                name: {
                    "kind": CATEGORIES[name].kind,
                    "grayscale": CATEGORIES[name].grayscale,
                    "defects": list(CATEGORIES[name].defects),
                    "description": CATEGORIES[name].description,
                    "counts": counts[name],
                }
                for name in names
            },
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return DemoDatasetSummary(root=out, seed=seed, size=size, counts=counts, seconds=time.perf_counter() - start)


def _is_demo_folder(folder: Path) -> bool:
    """True when ``folder`` holds a manifest written by this generator."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("generator") == "memseg_lite.demo_data"


def _splits(spec: CategorySpec, n_train: int, n_test_good: int, n_per_defect: int):
    yield "train/good", n_train, None
    yield "test/good", n_test_good, None
    for defect in spec.defects:
        yield f"test/{defect}", n_per_defect, defect


def _swap_in(staging: Path, out: Path) -> None:
    """Move the finished ``staging`` folder to ``out``; an old ``out`` is removed only afterwards."""
    if not out.exists():
        os.replace(staging, out)
        return
    retired = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.replace(out, retired)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(retired, out)  # put the old set back
        raise
    shutil.rmtree(retired, ignore_errors=True)


def ensure_demo_data(root: str | os.PathLike = "data/demo", **kwargs) -> Path:
    """Return ``root`` after making sure a finished demo set is there (its ``manifest.json`` exists).

    A missing or empty ``root`` is generated with :func:`write_demo_dataset` (``kwargs`` are passed
    on); a non-empty ``root`` without a manifest is not touched (``FileExistsError``). An existing
    set is reused as it is; if ``categories`` asks for ones it lacks, a ``ValueError`` says how to
    regenerate it.
    """
    if "force" in kwargs:
        raise TypeError("ensure_demo_data never replaces data; call write_demo_dataset(..., force=True) to do that")
    root = Path(root)
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
            present = set(manifest["categories"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{manifest_path} is not a demo-data manifest ({error}); delete {root} and run ensure_demo_data again"
            ) from error
        if manifest.get("generator_version") != GENERATOR_VERSION:
            warnings.warn(
                f"the demo data in {root} was made by generator version {manifest.get('generator_version')}, "
                f"this is version {GENERATOR_VERSION}; regenerate it with `memseg-lite demo-data --out {root} --force`",
                stacklevel=2,
            )
        missing = [name for name in _check_categories(kwargs.get("categories")) if name not in present]
        if missing:
            raise ValueError(
                f"the demo data in {root} lacks categories {', '.join(missing)}; regenerate it with "
                f"`memseg-lite demo-data --out {root} --force` (all categories) or write_demo_dataset(..., force=True)"
            )
        return root
    empty = not root.exists() or (root.is_dir() and not any(root.iterdir()))
    summary = write_demo_dataset(root, force=empty, **kwargs)
    print(summary)
    return root
