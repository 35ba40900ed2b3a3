"""Scenes: the albedo of a good image (button, wood, mesh) plus its capture (lighting, noise)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from memseg_lite.datasets.demo.drawing import (
    disc_coverage,
    grain,
    pixel_grid,
    smooth_noise,
    smoothstep,
)


@dataclass
class Scene:
    albedo: np.ndarray  # float32 H x W x C (C = 3 RGB, or 1 grey), grey levels under flat light
    light: np.ndarray  # float32 H x W, multiplicative lighting field
    noise: np.ndarray  # float32 H x W x C, additive camera noise
    foreground: np.ndarray  # float32 H x W, coverage of the product (ones for textures)
    light_dir: np.ndarray  # unit 2-vector (x, y) pointing towards the light
    extras: dict = field(default_factory=dict)  # layers some defects need


def _capture(rng: np.random.Generator, size: int, channels: int, gradient: float, noise_std: float):
    """Lighting field (level x linear gradient x mild vignette) and camera noise."""
    ys, xs = pixel_grid(size)
    centre = (size - 1) / 2
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xs - centre) * math.cos(angle) + (ys - centre) * math.sin(angle)) / size
    radius2 = ((xs - centre) ** 2 + (ys - centre) ** 2) / (0.5 * size * size)
    level = rng.uniform(0.9, 1.08)
    light = level * (1.0 + rng.uniform(0.0, gradient) * ramp) * (1.0 - rng.uniform(0.0, 0.08) * radius2)
    noise_std *= rng.uniform(0.7, 1.3)
    noise = rng.standard_normal((size, size, channels), dtype=np.float32) * np.float32(noise_std)
    return light.astype(np.float32), noise


def finish(albedo: np.ndarray, scene: Scene) -> np.ndarray:
    """Capture an albedo: light it, add the camera noise, round to uint8 (grey scenes drop the channel axis)."""
    pixels = albedo * scene.light[:, :, None] + scene.noise
    image = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
    return image[:, :, 0] if image.shape[2] == 1 else image


def _button_scene(rng: np.random.Generator, size: int) -> Scene:
    ys, xs = pixel_grid(size)
    s = float(size)
    cx, cy = (float(c) for c in s / 2 + rng.uniform(-0.07, 0.07, 2) * s)
    radius = s * rng.uniform(0.30, 0.335)
    rotation = rng.uniform(0, 2 * np.pi)
    light_angle = np.deg2rad(225 + rng.uniform(-25, 25))  # from the upper left
    light_dir = np.array([math.cos(light_angle), math.sin(light_angle)], np.float32)
    lx, ly = float(light_dir[0]), float(light_dir[1])

    # Slate table: a cool dark grey with fine grain and slow mottling.
    table = np.array([64, 68, 75], np.float32) * rng.uniform(0.9, 1.1) + rng.normal(0, 1.5, 3).astype(np.float32)
    texture = 3.0 * smooth_noise(rng, size, 6) + 3.5 * grain(rng, size, 0.8)
    background = table + texture[:, :, None]
    # Soft drop shadow, cast away from the light.
    shadow_x, shadow_y = cx - lx * 0.035 * s, cy - ly * 0.035 * s
    shadow = smoothstep(-0.05 * s, 0.05 * s, radius - np.hypot(xs - shadow_x, ys - shadow_y))
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
        bevel = smoothstep(hole_radius, hole_radius + 1.0, hole_rho)
        bevel *= smoothstep(1.7 * hole_radius, 1.5 * hole_radius, hole_rho)
        hole_facing = (hole_dx * lx + hole_dy * ly) / np.maximum(hole_rho, 1e-3)
        shade[window] *= 1.0 + 0.3 * bevel * hole_facing  # the countersink wall facing the light is lit
    arrow = np.zeros_like(rho)
    arrow_points = _arrow_points(cx, cy, radius, rotation)
    arrow_x, arrow_y = cx + 0.57 * radius * math.cos(rotation), cy + 0.57 * radius * math.sin(rotation)
    window = _window(size, arrow_x, arrow_y, 0.12 * radius + 2)
    arrow[window] = _triangle_coverage(ys[window], xs[window], arrow_points)

    colour = rng.uniform(0.97, 1.03, 3).astype(np.float32) * rng.uniform(0.93, 1.04)
    base = np.array([226, 208, 172], np.float32) * colour
    surface = 1.0 + 0.02 * smooth_noise(rng, size, 5) + 0.012 * grain(rng, size, 0.7)
    body = base * (shade * surface * (1.0 - 0.4 * arrow))[:, :, None]

    disc = disc_coverage(size, cx, cy, radius)
    seen_through_holes = 0.55 * background  # the table under the button, in its shadow
    inside = body * (1.0 - holes)[:, :, None] + seen_through_holes * holes[:, :, None]
    albedo = background * (1.0 - disc)[:, :, None] + inside * disc[:, :, None]
    light, noise = _capture(rng, size, 3, gradient=0.25, noise_std=1.8)
    return Scene(
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


def _wood_scene(rng: np.random.Generator, size: int) -> Scene:
    ys, xs = pixel_grid(size)
    s = float(size)
    centre = (s - 1) / 2
    grain_angle = rng.uniform(-0.12, 0.12)  # radians from vertical
    cos, sin = math.cos(grain_angle), math.sin(grain_angle)
    across = (xs - centre) * cos + (ys - centre) * sin
    along = -(xs - centre) * sin + (ys - centre) * cos
    # Slow waves across the grain that change slowly along it, so the rings stay roughly parallel.
    waves = cv2.resize(rng.standard_normal((3, 4), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    warp = s * (0.035 * waves + 0.004 * smooth_noise(rng, size, 7))
    arcs = rng.uniform(-0.35, 0.35) * (along - rng.uniform(-0.5, 0.5) * s) ** 2 / s  # flat-sawn "cathedral" arcs
    position = across + warp + arcs
    period = s * rng.uniform(0.055, 0.09)
    phase = position / period + rng.uniform(0, 1)
    within = phase - np.floor(phase)
    # Earlywood is light; latewood darkens gradually, then the next ring starts abruptly.
    ring = within**2.5 * (1.0 - smoothstep(0.9, 1.0, within))

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
    mix = np.clip(0.12 + 0.62 * ring + 0.1 * fibres + 0.06 * smooth_noise(rng, size, 4), 0, 1)
    albedo = light_tone + (dark_tone - light_tone) * mix[:, :, None]
    light, noise = _capture(rng, size, 3, gradient=0.2, noise_std=1.5)
    light_angle = rng.uniform(0, 2 * np.pi)
    return Scene(
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
        "warp_x": 0.006 * s * smooth_noise(rng, size, 5),
        "warp_y": 0.006 * s * smooth_noise(rng, size, 5),
        "wire_gain": rng.uniform(0.92, 1.06, 64).astype(np.float32),
        "wire_level": rng.uniform(175, 205),
        "backing": (rng.uniform(28, 42) * (1.0 + 0.12 * smooth_noise(rng, size, 4))).astype(np.float32),
        "grain": 0.03 * grain(rng, size, 0.7),
    }


def mesh_albedo(
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
    ys, xs = pixel_grid(size)
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


def _mesh_scene(rng: np.random.Generator, size: int) -> Scene:
    params = _mesh_params(rng, size)
    albedo, _ = mesh_albedo(params, size)
    light, noise = _capture(rng, size, 1, gradient=0.35, noise_std=2.0)
    light_angle = rng.uniform(0, 2 * np.pi)
    return Scene(
        albedo=albedo[:, :, None],
        light=light,
        noise=noise,
        foreground=np.ones((size, size), np.float32),
        light_dir=np.array([np.cos(light_angle), np.sin(light_angle)], np.float32),
        extras={"params": params},
    )


SCENES: dict[str, Callable[[np.random.Generator, int], Scene]] = {
    "button": _button_scene,
    "wood": _wood_scene,
    "mesh": _mesh_scene,
}


