"""Defects: each draws into a scene's albedo and returns (new albedo, coverage); mask = coverage >= MASK_COVERAGE."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from memseg_lite.datasets.demo.catalogue import (
    MASK_COVERAGE,
    MAX_TRIES,
    MIN_VISIBILITY,
)
from memseg_lite.datasets.demo.drawing import (
    blob,
    curve,
    ellipse_frame,
    pixel_grid,
    random_walk,
    smooth_noise,
    smoothstep,
    stroke_coverage,
)
from memseg_lite.datasets.demo.scenes import Scene, mesh_albedo


def _spot_on_product(rng: np.random.Generator, scene: Scene, size: int, margin: float) -> np.ndarray:
    """A random point (x, y) on the button face (objects) or anywhere ``margin`` away from the border (textures)."""
    if "radius" in scene.extras:
        cx, cy = scene.extras["centre"]
        distance = scene.extras["radius"] * 0.7 * np.sqrt(rng.uniform(0, 1))
        angle = rng.uniform(0, 2 * np.pi)
        return np.array([cx + distance * math.cos(angle), cy + distance * math.sin(angle)])
    return rng.uniform(margin * size, (1 - margin) * size, 2)


def _scale(scene: Scene, size: int) -> float:
    """The product's scale in pixels: the button's radius, or a third of the frame for textures."""
    return scene.extras.get("radius", size / 3)


def _tint_towards(
    albedo: np.ndarray, coverage: np.ndarray, target: np.ndarray | float, strength: np.ndarray | float
) -> np.ndarray:
    """Move ``albedo`` (``H x W x C``) towards ``target`` by ``coverage * strength`` (``H x W``)."""
    weight = (coverage * strength)[:, :, None]
    return albedo + (np.asarray(target, np.float32) - albedo) * weight


def _defect_scratch(scene: Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A thin curved antialiased stroke, lighter (polished) or darker (dirt in the groove)."""
    scale = _scale(scene, size)
    start = _spot_on_product(rng, scene, size, margin=0.15)
    length = scale * rng.uniform(0.35, 1.0)
    width = max(1.5, rng.uniform(1.2, 3.0) * size / 256)
    path = curve(rng, start, rng.uniform(0, 2 * np.pi), length, bend=1.2)
    coverage = stroke_coverage(size, [(path, width)]) * scene.foreground
    if rng.uniform() < 0.4:
        albedo = _tint_towards(scene.albedo, coverage, 255.0, rng.uniform(0.35, 0.8))
    else:
        albedo = _tint_towards(scene.albedo, coverage, 0.0, rng.uniform(0.15, 0.55))
    return albedo, coverage


def _shaded_pit(scene: Scene, rng: np.random.Generator, size: int, radius: float, depth: float, core: float):
    """An elliptical pit: uniform darkening, a wall shaded by the light, and optionally a dark core."""
    centre = _spot_on_product(rng, scene, size, margin=0.1)
    a = radius * rng.uniform(0.8, 1.25)
    b = a * rng.uniform(0.5, 1.0)
    angle = rng.uniform(0, np.pi)
    pu, pv, rho, distance = ellipse_frame(size, centre[0], centre[1], a, b, angle)
    coverage = np.clip(0.5 - distance, 0, 1) * scene.foreground
    cos, sin = math.cos(angle), math.sin(angle)
    lx, ly = float(scene.light_dir[0]), float(scene.light_dir[1])
    light_u, light_v = lx * cos + ly * sin, -lx * sin + ly * cos
    towards_light = np.clip(pu * light_u + pv * light_v, -1, 1)
    # In a pit the wall on the light's side faces away from it (dark), the far wall catches light.
    wall = 1.0 - rng.uniform(0.25, 0.5) * towards_light
    bottom = 1.0 - core * smoothstep(0.9, 0.35, rho)
    factor = (1.0 - depth) * wall * bottom
    albedo = scene.albedo * (1.0 - coverage + coverage * factor)[:, :, None]
    return albedo, coverage


def _defect_dent(scene: Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    radius = max(2.5, _scale(scene, size) * rng.uniform(0.06, 0.16))
    return _shaded_pit(scene, rng, size, radius, depth=rng.uniform(0.03, 0.15), core=0.0)


def _defect_hole(scene: Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    radius = max(2.0, size * rng.uniform(0.012, 0.04))
    return _shaded_pit(scene, rng, size, radius, depth=rng.uniform(0.15, 0.35), core=rng.uniform(0.45, 0.85))


def _defect_stain(scene: Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A partly transparent irregular blob that tints the surface, darker at its rim (a dried liquid)."""
    centre = _spot_on_product(rng, scene, size, margin=0.12)
    radius = max(3.0, _scale(scene, size) * rng.uniform(0.12, 0.33))
    coverage, q = blob(rng, size, centre[0], centre[1], radius, irregularity=rng.uniform(0.3, 0.9))
    coverage = coverage * scene.foreground
    opacity = rng.uniform(0.25, 0.6)
    rim = np.exp(-(((1.0 - q) * radius / max(1.5, 0.12 * radius)) ** 2))  # pigment gathers at the edge
    density = opacity * np.clip(0.75 + 0.15 * smooth_noise(rng, size, 8) + 0.5 * rim, 0, 1.5)
    if scene.albedo.shape[2] == 1:
        tint = np.array([rng.uniform(0.25, 0.6)], np.float32)
    elif "radius" in scene.extras:  # on the button: oil, ink or rust
        tint = np.array([[0.45, 0.33, 0.2], [0.35, 0.42, 0.55], [0.6, 0.3, 0.22]][rng.integers(3)], np.float32)
    else:  # on wood: water or coffee, darker and a little greyer
        tint = np.array([0.5, 0.45, 0.42], np.float32)
    multiply = 1.0 - (coverage * np.minimum(density, 1.0))[:, :, None] * (1.0 - tint)
    return scene.albedo * multiply, coverage


def _defect_crack(scene: Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A jagged dark split mostly along the grain, with a thinner side branch or two."""
    grain = scene.extras.get("grain_angle", 0.0)
    heading = np.pi / 2 + grain + rng.uniform(-0.25, 0.25) + (np.pi if rng.uniform() < 0.5 else 0.0)
    start = _spot_on_product(rng, scene, size, margin=0.2)
    length = size * rng.uniform(0.2, 0.55)
    step = max(2.0, size / 64)
    width = max(1.5, rng.uniform(1.5, 3.0) * size / 256)
    trunk = random_walk(rng, start, heading, length, step, jitter=0.35)
    paths = [(trunk, width)]
    for _ in range(rng.integers(0, 3)):
        fork = trunk[rng.integers(1, len(trunk) - 1)]
        side = heading + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9)
        branch = random_walk(rng, fork, side, length * rng.uniform(0.15, 0.35), step, 0.4)
        paths.append((branch, max(1.5, 0.7 * width)))
    coverage = stroke_coverage(size, paths)
    albedo = scene.albedo * (1.0 - coverage * rng.uniform(0.3, 0.75))[:, :, None]
    return albedo, coverage


def _defect_chip(scene: Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A piece broken off the button's edge: the table shows where the button was."""
    cx, cy = scene.extras["centre"]
    radius = scene.extras["radius"]
    angle = rng.uniform(0, 2 * np.pi)
    reach = radius * rng.uniform(0.98, 1.06)
    bite = max(2.5, radius * rng.uniform(0.1, 0.24))
    coverage, _ = blob(rng, size, cx + reach * math.cos(angle), cy + reach * math.sin(angle), bite, irregularity=0.8)
    coverage = coverage * scene.foreground
    albedo = scene.albedo * (1.0 - coverage)[:, :, None] + scene.extras["background"] * coverage[:, :, None]
    return albedo, coverage


def _defect_broken(scene: Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A wire missing over one to three pitches (snapped and gone)."""
    params = scene.extras["params"]
    n_wires = size / params["period"]
    direction = "h" if rng.uniform() < 0.5 else "v"
    # Horizontal wire j runs along u and sits at v = j; a vertical one the other way round.
    across, along = (1, 0) if direction == "h" else (0, 1)
    wire = int(np.floor(params["offset"][across] + rng.uniform(0.15, 0.85) * n_wires + 0.5))
    start = params["offset"][along] + rng.uniform(0.1, 0.7) * n_wires
    stop = start + rng.uniform(0.6, 2.5)
    albedo, coverage = mesh_albedo(params, size, cut=(direction, wire, start, stop))
    return albedo[:, :, None], coverage


def _defect_bent(scene: Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A dent that pushes the wires sideways inside a round patch (smooth, compactly supported)."""
    params = scene.extras["params"]
    ys, xs = pixel_grid(size)
    cx, cy = (float(c) for c in rng.uniform(0.15 * size, 0.85 * size, 2))
    radius = size * rng.uniform(0.07, 0.13)
    amplitude = params["period"] * rng.uniform(0.35, 0.65)
    angle = rng.uniform(0, 2 * np.pi)
    r2 = ((xs - cx) ** 2 + (ys - cy) ** 2) / radius**2
    profile = np.clip(1.0 - r2, 0, 1) ** 3
    shift = amplitude * profile
    albedo, _ = mesh_albedo(params, size, displacement=(shift * math.cos(angle), shift * math.sin(angle)))
    # The mask is where the wires moved by more than a tenth of a pixel (beyond that they look unchanged).
    coverage = np.clip((shift - 0.1) * 4.0 + MASK_COVERAGE, 0, 1).astype(np.float32)
    return albedo[:, :, None], coverage


def _defect_glue(scene: Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A translucent grey blob that bridges the mesh openings."""
    centre = rng.uniform(0.12 * size, 0.88 * size, 2)
    radius = max(3.0, size * rng.uniform(0.04, 0.1))
    coverage, q = blob(rng, size, centre[0], centre[1], radius, irregularity=rng.uniform(0.3, 0.8))
    level = rng.uniform(95, 165)
    opacity = rng.uniform(0.45, 0.9) * (0.85 + 0.15 * np.sqrt(np.clip(1 - q * q, 0, 1)))  # thicker in the middle
    return _tint_towards(scene.albedo, coverage, level, opacity), coverage


def _defect_thread(scene: Scene, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A loose fibre lying across the mesh: a long thin curve, light or dark."""
    start = rng.uniform(0.1 * size, 0.9 * size, 2)
    path = curve(rng, start, rng.uniform(0, 2 * np.pi), size * rng.uniform(0.25, 0.6), bend=2.0)
    width = max(1.5, rng.uniform(1.3, 2.5) * size / 256)
    coverage = stroke_coverage(size, [(path, width)])
    target = rng.uniform(215, 250) if rng.uniform() < 0.6 else rng.uniform(5, 25)
    return _tint_towards(scene.albedo, coverage, target, rng.uniform(0.55, 0.95)), coverage


_DEFECTS: dict[str, dict[str, Callable[[Scene, np.random.Generator, int], tuple[np.ndarray, np.ndarray]]]] = {
    "button": {"scratch": _defect_scratch, "dent": _defect_dent, "stain": _defect_stain, "chip": _defect_chip},
    "wood": {"scratch": _defect_scratch, "hole": _defect_hole, "stain": _defect_stain, "crack": _defect_crack},
    "mesh": {"broken": _defect_broken, "bent": _defect_bent, "glue": _defect_glue, "thread": _defect_thread},
}


def add_defect(
    category: str, defect: str, scene: Scene, rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the defect until it is large and visible enough; returns ``(albedo, bool mask)``."""
    draw = _DEFECTS[category][defect]
    min_area = max(4, round(2e-4 * size * size))
    for _ in range(MAX_TRIES):
        albedo, coverage = draw(scene, rng, size)
        mask = coverage >= MASK_COVERAGE
        if mask.sum() < min_area:
            continue
        change = np.abs(albedo - scene.albedo).max(axis=2)[mask].mean()
        if change >= MIN_VISIBILITY:
            return albedo, mask
    raise RuntimeError(f"could not draw a visible {category}/{defect} defect in {MAX_TRIES} tries (size {size})")


