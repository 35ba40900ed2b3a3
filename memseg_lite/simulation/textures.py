"""Where texture anomalies get their pixels: DTD images when present, else a procedural bank.

MemSeg (after DRAEM) fills a texture anomaly with an image from the Describable Textures Dataset
(DTD), passed through 3 random augmentations out of 10. DTD cannot be downloaded at run time
here, so :class:`TextureSource` falls back to a bank of procedural colour textures (multi-octave
noise, stripes, checks, cells, marble, speckle, each with a random colour map) generated offline
from a seed. Put DTD at ``data/dtd`` (layout ``images/<class>/*.jpg``) to use the real thing.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as tvf

from memseg_lite.core.io import list_images, read_image
from memseg_lite.core.runtime import check_rng
from memseg_lite.simulation.perlin import perlin_noise

DEFAULT_TEXTURE_ROOT = "data/dtd"
PROCEDURAL_FAMILIES = ("fractal", "stripes", "checks", "cells", "marble", "speckle")
# The workbook's own data folder (notebooks run in notebooks/ and point at ../data/dtd).
_WORKBOOK_TEXTURE_ROOT = Path(__file__).resolve().parents[2] / DEFAULT_TEXTURE_ROOT


def is_default_texture_root(root: str | os.PathLike) -> bool:
    """True for the default DTD location: ``data/dtd`` under the current folder or the workbook's folder."""
    resolved = Path(root).expanduser().resolve()
    return resolved in {Path(DEFAULT_TEXTURE_ROOT).resolve(), _WORKBOOK_TEXTURE_ROOT}


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in size)
    ):
        raise ValueError(f"size must be a positive int or a (height, width) pair of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _check_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be an RGB image H x W x 3, got shape {image.shape}")
    return image


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``(height, width)``: area interpolation when shrinking, linear when enlarging."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


# --------------------------------------------------------------------------------------------
# The procedural texture bank
# --------------------------------------------------------------------------------------------
def _normalise(field: np.ndarray) -> np.ndarray:
    low, high = float(field.min()), float(field.max())
    return (field - low) / (high - low) if high > low else np.zeros_like(field)


def _fractal(rng: np.random.Generator, size: int, octaves: int = 4) -> np.ndarray:
    """Sum of Perlin octaves (each twice the frequency, half the amplitude): float64 in [0, 1]."""
    base = int(rng.integers(1, 4))
    field = np.zeros((size, size))
    for octave in range(octaves):
        field += 0.5**octave * perlin_noise((size, size), 2 ** (base + octave), rng)
    return _normalise(field)


def _coordinates(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in [0, 1), rotated by a random angle (so patterns are not axis-aligned)."""
    y, x = np.mgrid[0:size, 0:size] / size
    theta = rng.uniform(0, np.pi)
    return np.cos(theta) * y - np.sin(theta) * x, np.sin(theta) * y + np.cos(theta) * x


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    along, _ = _coordinates(rng, size)
    warp = rng.uniform(0.5, 4.0) * _fractal(rng, size)
    return 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 20) * along + warp)


def _checks(rng: np.random.Generator, size: int) -> np.ndarray:
    a, b = _coordinates(rng, size)
    frequency = rng.uniform(3, 12)
    board = (np.sin(2 * np.pi * frequency * a) * np.sin(2 * np.pi * frequency * b * rng.uniform(0.5, 2))) > 0
    field = cv2.GaussianBlur(board.astype(np.float32), (0, 0), rng.uniform(0.5, 2.0))
    return _normalise(field + 0.25 * _fractal(rng, size))


def _cells(rng: np.random.Generator, size: int) -> np.ndarray:
    """Voronoi-like cells: distance to the nearest (F1) or F2 - F1 of random seed points."""
    points = rng.random((int(rng.integers(8, 60)), 2)) * size
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    distances = np.sqrt((y[..., None] - points[:, 0]) ** 2 + (x[..., None] - points[:, 1]) ** 2)
    nearest = np.partition(distances, 1, axis=-1)
    field = nearest[..., 0] if rng.random() < 0.5 else nearest[..., 1] - nearest[..., 0]
    return _normalise(field)


def _marble(rng: np.random.Generator, size: int) -> np.ndarray:
    along, _ = _coordinates(rng, size)
    turbulence = rng.uniform(3, 10) * _fractal(rng, size, octaves=5)
    return 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 6) * along + turbulence)


def _speckle(rng: np.random.Generator, size: int) -> np.ndarray:
    dots = (rng.random((size, size)) < rng.uniform(0.005, 0.05)).astype(np.float32)
    dots = cv2.GaussianBlur(dots, (0, 0), rng.uniform(0.6, 2.5))
    return _normalise(_normalise(dots) + 0.3 * _fractal(rng, size))


_FIELDS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "fractal": _fractal, "stripes": _stripes, "checks": _checks,
    "cells": _cells, "marble": _marble, "speckle": _speckle,
}


def random_colour_map(rng: np.random.Generator, n_colours: int | None = None) -> np.ndarray:
    """A random colour map: uint8 ``256 x 3`` look-up table through 2-5 random colours."""
    n_colours = int(rng.integers(2, 6)) if n_colours is None else n_colours
    hsv = np.stack(
        [rng.integers(0, 180, n_colours), rng.integers(40, 256, n_colours), rng.integers(30, 256, n_colours)], axis=-1
    ).astype(np.uint8)
    colours = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0].astype(np.float64)
    stops = np.sort(np.concatenate([[0.0, 1.0], rng.random(n_colours - 2)]))
    levels = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(levels, stops, colours[:, c]) for c in range(3)], axis=-1)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def procedural_texture(rng: np.random.Generator, size: int = 256, family: str | None = None) -> np.ndarray:
    """One procedural colour texture: uint8 ``size x size x 3``; ``family`` from :data:`PROCEDURAL_FAMILIES`."""
    check_rng(rng)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    size = int(size)
    if family is None:
        family = PROCEDURAL_FAMILIES[int(rng.integers(len(PROCEDURAL_FAMILIES)))]
    if family not in _FIELDS:
        raise ValueError(f"family must be one of {PROCEDURAL_FAMILIES}, got {family!r}")
    field = _FIELDS[family](rng, size)
    indices = np.clip(np.rint(field * 255), 0, 255).astype(np.uint8)
    return random_colour_map(rng)[indices]


# --------------------------------------------------------------------------------------------
# The texture source
# --------------------------------------------------------------------------------------------
def find_texture_images(root: str | os.PathLike) -> list[Path]:
    """Images of a DTD-style folder (``images/<class>/*``) or a flat / one-level folder of images."""
    root = Path(root)
    base = root / "images" if (root / "images").is_dir() else root
    files = list_images(base)
    for sub in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files.extend(list_images(sub))
    return files


class TextureSource:
    """Texture images for texture anomalies: DTD under ``root`` when present, else procedural.

    - ``root``: a DTD folder (``images/<class>/*.jpg``) or any folder of images. When the default
      location (``data/dtd``, see :func:`is_default_texture_root`) is missing, the procedural bank
      is used (``.kind == "procedural"``) with one warning saying so and how to get DTD; any other
      missing folder is a ``FileNotFoundError`` (a mistyped path must not silently change the
      training data). A folder that exists but holds no images raises ``ValueError``. ``None``:
      always procedural, without a warning.
    - ``seed``: seeds the procedural bank (the same seed gives the same textures).
    - ``n_procedural``: textures in the procedural bank (generated lazily, on first use).
    - ``procedural_size``: their side length (they are resized to the requested size).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = DEFAULT_TEXTURE_ROOT,
        seed: int = 0,
        n_procedural: int = 40,
        procedural_size: int = 256,
    ):
        if not isinstance(n_procedural, int) or n_procedural < 1:
            raise ValueError(f"n_procedural must be a positive int, got {n_procedural!r}")
        self.seed = int(seed)
        self.n_procedural = n_procedural
        if isinstance(procedural_size, bool) or not isinstance(procedural_size, int) or procedural_size < 8:
            raise ValueError(f"procedural_size must be an int >= 8, got {procedural_size!r}")
        self.procedural_size = procedural_size
        self.root = Path(root) if root is not None else None
        self.files: list[Path] = []
        self._bank: dict[int, np.ndarray] = {}
        if self.root is not None and not self.root.exists():
            if not is_default_texture_root(self.root):
                raise FileNotFoundError(
                    f"texture root {self.root} does not exist; point it at a DTD folder (images/<class>/*.jpg) "
                    f"or a folder of texture images, get DTD with `memseg-lite download dtd --dest {self.root}`, "
                    "or leave the option out to use the built-in procedural textures"
                )
            # stacklevel=1: the warning's location is this line, so Python shows it once per process
            # however many sources are built (the trainer builds two).
            warnings.warn(
                f"no DTD textures at {self.root}: the anomaly simulation uses the built-in procedural "
                "textures instead. To use DTD as the paper does, run `memseg-lite download dtd` "
                f"(or unpack dtd-r1.0.1.tar.gz so that {self.root}/images/<class>/*.jpg exists)",
                UserWarning,
                stacklevel=1,
            )
        if self.root is not None and self.root.exists():
            if not self.root.is_dir():
                raise ValueError(
                    f"texture root {self.root} is a file; give a folder of texture images (DTD layout "
                    "images/<class>/*.jpg)"
                )
            self.files = find_texture_images(self.root)
            if not self.files:
                raise ValueError(
                    f"texture folder {self.root} exists but holds no images (expected the DTD layout "
                    "images/<class>/*.jpg or a folder of .jpg/.png files); add images, or remove the "
                    "folder to use the built-in procedural textures"
                )

    @property
    def kind(self) -> str:
        """``"dtd"`` when textures come from image files, ``"procedural"`` otherwise."""
        return "dtd" if self.files else "procedural"

    def __len__(self) -> int:
        return len(self.files) if self.files else self.n_procedural

    def __repr__(self) -> str:
        where = f"root={str(self.root)!r}" if self.files else f"seed={self.seed}"
        return f"TextureSource(kind={self.kind!r}, {len(self)} textures, {where})"

    def image(self, index: int) -> np.ndarray:
        """Texture ``index`` at its own size: uint8 ``H x W x 3``."""
        if not 0 <= index < len(self):
            raise IndexError(f"texture index {index} out of range 0..{len(self) - 1}")
        if self.files:
            return read_image(self.files[index])
        if index not in self._bank:
            # Each texture has its own seed, so texture i is the same whatever was generated before.
            rng = np.random.default_rng([self.seed, index])
            family = PROCEDURAL_FAMILIES[index % len(PROCEDURAL_FAMILIES)]
            self._bank[index] = procedural_texture(rng, self.procedural_size, family)
        return self._bank[index]

    def sample(self, rng: np.random.Generator, size: int | tuple[int, int]) -> np.ndarray:
        """A random texture resized to ``size`` (int or ``(height, width)``): uint8 ``H x W x 3``."""
        check_rng(rng)
        height, width = _size_pair(size)
        return resize_to(self.image(int(rng.integers(len(self)))), (height, width))


# --------------------------------------------------------------------------------------------
# The 10 texture augmentations (3 are applied to each texture)
# --------------------------------------------------------------------------------------------
# Each augmentation is split into drawing its random parameters and applying them. The numpy
# version (one image, parameters from a numpy rng) and the batched torch version (parameters from
# uniform numbers of a torch.Generator) share the parameter distributions below, and with the
# same parameters they give the same pixels (rotation: within interpolation rounding).
def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.permute(1, 2, 0).numpy())


def _signed(rng: np.random.Generator, low: float, high: float) -> float:
    """A magnitude in [low, high] with a random sign (keeps the op away from the identity)."""
    return float(rng.uniform(low, high) * rng.choice([-1.0, 1.0]))


# ---- parameter draws (numpy); the order of the rng calls is part of the seeded behaviour
def _draw_gamma_contrast(rng: np.random.Generator) -> dict:
    # Per-channel gamma in [0.5, 2] (log-uniform, at least 2**0.25 away from 1).
    return {"gammas": 2.0 ** np.array([_signed(rng, 0.25, 1.0) for _ in range(3)])}


def _draw_brightness(rng: np.random.Generator) -> dict:
    gain = rng.uniform(0.8, 1.2)
    return {"gain": gain, "offset": _signed(rng, 10.0, 30.0)}


def _draw_sharpness(rng: np.random.Generator) -> dict:
    return {"factor": rng.uniform(0.0, 0.5) if rng.random() < 0.5 else rng.uniform(2.0, 4.0)}  # blur or sharpen


def _draw_hue_saturation(rng: np.random.Generator) -> dict:
    hue = _signed(rng, 0.05, 0.2)
    return {"hue": hue, "saturation": float(rng.uniform(0.5, 1.5))}


def _draw_solarize(rng: np.random.Generator) -> dict:
    return {"threshold": int(rng.integers(32, 129))}


def _draw_posterize(rng: np.random.Generator) -> dict:
    return {"bits": int(rng.integers(2, 6))}


def _draw_nothing(rng: np.random.Generator) -> dict:
    return {}


def _draw_affine_rotation(rng: np.random.Generator) -> dict:
    return {"angle": _signed(rng, 5.0, 45.0)}


# ---- the same distributions from uniform numbers u ([N, 6], each in [0, 1)) for a batch
def _signed_torch(magnitude: torch.Tensor, sign: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return (low + (high - low) * magnitude) * torch.where(sign < 0.5, -1.0, 1.0).to(magnitude.dtype)


_TORCH_DRAWS: dict[str, Callable[[torch.Tensor], dict]] = {
    "gamma_contrast": lambda u: {"gammas": 2.0 ** _signed_torch(u[:, 0:3].double(), u[:, 3:6].double(), 0.25, 1.0)},
    "brightness": lambda u: {"gain": 0.8 + 0.4 * u[:, 0], "offset": _signed_torch(u[:, 1], u[:, 2], 10.0, 30.0)},
    "sharpness": lambda u: {"factor": torch.where(u[:, 0] < 0.5, 0.5 * u[:, 1], 2.0 + 2.0 * u[:, 1])},
    "hue_saturation": lambda u: {"hue": _signed_torch(u[:, 0], u[:, 1], 0.05, 0.2), "saturation": 0.5 + u[:, 2]},
    "solarize": lambda u: {"threshold": (32 + (u[:, 0] * 97).long()).clamp(max=128)},
    "posterize": lambda u: {"bits": (2 + (u[:, 0] * 4).long()).clamp(max=5)},
    "invert": lambda u: {},
    "autocontrast": lambda u: {},
    "equalize": lambda u: {},
    "affine_rotation": lambda u: {"angle": _signed_torch(u[:, 0], u[:, 1], 5.0, 45.0)},
}
_UNIFORMS_PER_OP = 6  # the most uniform numbers one parameter draw uses (gamma: 3 magnitudes, 3 signs)


# ---- numpy implementations (uint8 H x W x 3 in and out)
def _gamma_contrast(image: np.ndarray, gammas: np.ndarray) -> np.ndarray:
    levels = np.arange(256) / 255.0
    out = np.empty_like(image)
    for channel, gamma in enumerate(np.asarray(gammas, dtype=np.float64)):
        lut = np.clip(np.rint(255.0 * levels**gamma), 0, 255).astype(np.uint8)
        out[..., channel] = cv2.LUT(image[..., channel], lut)
    return out


def _brightness(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.clip(np.rint(image.astype(np.float32) * gain + offset), 0, 255).astype(np.uint8)


def _sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    return _to_numpy(tvf.adjust_sharpness(_to_tensor(image), float(factor)))


def _hue_saturation(image: np.ndarray, hue: float, saturation: float) -> np.ndarray:
    tensor = tvf.adjust_hue(_to_tensor(image), float(hue))
    return _to_numpy(tvf.adjust_saturation(tensor, float(saturation)))


def _solarize(image: np.ndarray, threshold: int) -> np.ndarray:
    return _to_numpy(tvf.solarize(_to_tensor(image), float(threshold)))


def _posterize(image: np.ndarray, bits: int) -> np.ndarray:
    return _to_numpy(tvf.posterize(_to_tensor(image), int(bits)))


def _invert(image: np.ndarray) -> np.ndarray:
    return 255 - image


def _autocontrast(image: np.ndarray) -> np.ndarray:
    return _to_numpy(tvf.autocontrast(_to_tensor(image)))


def _equalize(image: np.ndarray) -> np.ndarray:
    return _to_numpy(tvf.equalize(_to_tensor(image)))


def _affine_rotation(image: np.ndarray, angle: float) -> np.ndarray:
    # DRAEM rotates by up to 45 degrees with black corners; reflecting the border avoids pasting
    # artificial black triangles into the anomaly.
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), float(angle), 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


# ---- batched torch implementations (uint8 [N, 3, H, W] in and out; parameters [N] or [N, 3])
def _per_image(values: torch.Tensor | float, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A parameter as ``[N, 1, 1, 1]`` on the images' device (a number is used for all images)."""
    values = torch.as_tensor(values, device=images.device).to(dtype)
    return values.expand(len(images)).reshape(-1, 1, 1, 1) if values.ndim == 0 else values.reshape(-1, 1, 1, 1)


def _gamma_contrast_torch(images: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
    # One 256-entry look-up table per image and channel, computed in float64 like the numpy one.
    gammas = torch.as_tensor(gammas, dtype=torch.float64, device=images.device).reshape(-1, 3).expand(len(images), 3)
    levels = torch.arange(256, dtype=torch.float64, device=images.device) / 255.0
    tables = (255.0 * levels.view(1, 1, 256) ** gammas.unsqueeze(-1)).round().clamp(0, 255).to(torch.uint8)
    return tables.gather(2, images.flatten(2).long()).view_as(images)


def _brightness_torch(images: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    out = images.float() * _per_image(gain, images) + _per_image(offset, images)
    return out.round().clamp(0, 255).to(torch.uint8)


def _sharpness_torch(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_sharpness with one factor per image: blend with a 3 x 3 smoothed copy
    (the border row and column stay as they are)."""
    if images.shape[-2] <= 2 or images.shape[-1] <= 2:
        return images
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=torch.float32, device=images.device)
    out = images.float()
    smoothed = F.conv2d(out, kernel.expand(3, 1, 3, 3), groups=3).round()
    inner = out[..., 1:-1, 1:-1]
    out[..., 1:-1, 1:-1] = inner + (1.0 - _per_image(factor, images)) * (smoothed - inner)
    return out.clamp(0, 255).to(torch.uint8)  # truncation, like torchvision's uint8 result


def _rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float RGB ``[N, 3, H, W]`` in [0, 1] to (hue in [0, 1), saturation, value), each ``[N, H, W]``."""
    red, green, _ = rgb.unbind(1)
    value, lowest = rgb.amax(1), rgb.amin(1)
    span = value - lowest
    grey = span == 0  # no hue; also covers black (value 0)
    safe_span = torch.where(grey, torch.ones_like(span), span)
    saturation = torch.where(grey, torch.zeros_like(span), span / torch.where(grey, torch.ones_like(value), value))
    # Distances of each channel from the maximum, in units of the span.
    r, g, b = ((value.unsqueeze(1) - rgb) / safe_span.unsqueeze(1)).unbind(1)
    hue = torch.where(value == red, b - g, torch.where(value == green, 2.0 + r - b, 4.0 + g - r))
    hue = torch.where(grey, torch.zeros_like(hue), hue)
    return (hue / 6.0).remainder(1.0), saturation, value


# For each of the 6 hue sectors: which of (v, p, q, t) becomes red, green and blue.
_SECTOR_CHANNELS = ((0, 2, 1, 1, 3, 0), (3, 0, 0, 2, 1, 1), (1, 1, 3, 0, 0, 2))


def _hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    scaled = hue * 6.0
    sector = torch.floor(scaled)
    fraction = scaled - sector
    sector = sector.long().remainder(6)
    p = (value * (1.0 - saturation)).clamp(0.0, 1.0)
    q = (value * (1.0 - saturation * fraction)).clamp(0.0, 1.0)
    t = (value * (1.0 - saturation * (1.0 - fraction))).clamp(0.0, 1.0)
    candidates = torch.stack((value, p, q, t), dim=1)  # [N, 4, H, W]
    table = torch.tensor(_SECTOR_CHANNELS, dtype=torch.long, device=hue.device)  # [3, 6]
    index = table[:, sector].permute(1, 0, 2, 3)  # [N, 3, H, W]
    return candidates.gather(1, index)


def _hue_saturation_torch(images: torch.Tensor, hue: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_hue then adjust_saturation, one factor pair per image."""
    h, s, v = _rgb_to_hsv(images.float() * (1.0 / 255.0))
    h = (h + _per_image(hue, images).view(-1, 1, 1)).remainder(1.0)
    shifted = (_hsv_to_rgb(h, s, v) * (256.0 - 1e-3)).to(torch.uint8)  # torchvision's float -> uint8 rule
    pixels = shifted.float()
    grey = (0.2989 * pixels[:, 0] + 0.587 * pixels[:, 1] + 0.114 * pixels[:, 2]).floor().unsqueeze(1)
    ratio = _per_image(saturation, images)
    return (ratio * pixels + (1.0 - ratio) * grey).clamp(0, 255).to(torch.uint8)


def _solarize_torch(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.where(images >= _per_image(threshold, images, torch.int16), 255 - images, images)


def _posterize_torch(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    bits = _per_image(bits, images, torch.long)
    keep = ((2**bits - 1) * 2 ** (8 - bits)).to(torch.uint8)  # the top `bits` bits
    return images & keep


def _invert_torch(images: torch.Tensor) -> torch.Tensor:
    return 255 - images


def _autocontrast_torch(images: torch.Tensor) -> torch.Tensor:
    return tvf.autocontrast(images)  # per image and channel already


def _equalize_torch(images: torch.Tensor) -> torch.Tensor:
    return tvf.equalize(images)  # per image and channel already


def _reflect_101(coordinate: torch.Tensor, length: int) -> torch.Tensor:
    """Fold pixel coordinates into ``[0, length - 1]`` like ``cv2.BORDER_REFLECT_101`` (gfedcb|abcdefgh|gfedcba)."""
    if length == 1:
        return torch.zeros_like(coordinate)
    period = 2.0 * (length - 1)
    folded = coordinate.remainder(period)
    return torch.where(folded > length - 1, period - folded, folded)


def _affine_rotation_torch(images: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate about the centre by ``angle`` degrees (counter-clockwise, as ``cv2.getRotationMatrix2D``),
    bilinear, border reflected (101)."""
    count, _, height, width = images.shape
    theta = torch.deg2rad(_per_image(angle, images).view(-1, 1, 1))
    cos, sin = torch.cos(theta), torch.sin(theta)
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=images.device),
        torch.arange(width, dtype=torch.float32, device=images.device), indexing="ij",
    )
    dx, dy = x - (width - 1) / 2.0, y - (height - 1) / 2.0
    # Where each output pixel comes from: the inverse rotation (what cv2.warpAffine does).
    source_x = _reflect_101(cos * dx - sin * dy + (width - 1) / 2.0, width)
    source_y = _reflect_101(sin * dx + cos * dy + (height - 1) / 2.0, height)
    grid = torch.stack(
        (2.0 * source_x / max(width - 1, 1) - 1.0, 2.0 * source_y / max(height - 1, 1) - 1.0), dim=-1
    ).expand(count, height, width, 2)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.round().clamp(0, 255).to(torch.uint8)


_AUGMENTATIONS: dict[str, tuple[Callable, Callable, Callable]] = {
    # name: (numpy parameter draw, numpy op, batched torch op)
    "gamma_contrast": (_draw_gamma_contrast, _gamma_contrast, _gamma_contrast_torch),
    "brightness": (_draw_brightness, _brightness, _brightness_torch),
    "sharpness": (_draw_sharpness, _sharpness, _sharpness_torch),
    "hue_saturation": (_draw_hue_saturation, _hue_saturation, _hue_saturation_torch),
    "solarize": (_draw_solarize, _solarize, _solarize_torch),
    "posterize": (_draw_posterize, _posterize, _posterize_torch),
    "invert": (_draw_nothing, _invert, _invert_torch),
    "autocontrast": (_draw_nothing, _autocontrast, _autocontrast_torch),
    "equalize": (_draw_nothing, _equalize, _equalize_torch),
    "affine_rotation": (_draw_affine_rotation, _affine_rotation, _affine_rotation_torch),
}
#: The names of the 10 texture augmentations, in a fixed order.
AUGMENTATIONS: tuple[str, ...] = tuple(_AUGMENTATIONS)


def _check_augmentation(name: str) -> None:
    if name not in _AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {AUGMENTATIONS}")


def draw_augmentation_params(name: str, rng: np.random.Generator) -> dict:
    """The random parameters :func:`apply_augmentation` would draw for ``name`` (keyword arguments)."""
    check_rng(rng)
    _check_augmentation(name)
    return _AUGMENTATIONS[name][0](rng)


def apply_augmentation(
    image: np.ndarray, name: str, rng: np.random.Generator, params: dict | None = None
) -> np.ndarray:
    """Apply the augmentation ``name`` (one of :data:`AUGMENTATIONS`) with random parameters from ``rng``
    (or with ``params``, as :func:`draw_augmentation_params` returns them).

    ``image``: uint8 ``H x W x 3``; returns a new uint8 image of the same shape.
    """
    check_rng(rng)
    image = _check_rgb_uint8(image)
    _check_augmentation(name)
    draw, op, _ = _AUGMENTATIONS[name]
    return op(image, **(draw(rng) if params is None else params))


def augment_texture(image: np.ndarray, rng: np.random.Generator, n_ops: int = 3) -> np.ndarray:
    """``n_ops`` distinct augmentations drawn at random from :data:`AUGMENTATIONS`, in random order.

    ``image``: uint8 ``H x W x 3``; returns uint8 of the same shape.
    """
    check_rng(rng)
    image = _check_rgb_uint8(image)
    _check_n_ops(n_ops)
    for index in rng.permutation(len(AUGMENTATIONS))[:n_ops]:
        draw, op, _ = _AUGMENTATIONS[AUGMENTATIONS[index]]
        image = op(image, **draw(rng))
    return image


def _check_n_ops(n_ops: int) -> int:
    if isinstance(n_ops, bool) or not isinstance(n_ops, (int, np.integer)) or not 0 <= n_ops <= len(AUGMENTATIONS):
        raise ValueError(f"n_ops must be an int in 0..{len(AUGMENTATIONS)}, got {n_ops!r}")
    return int(n_ops)


def _uniform(generator: torch.Generator | None, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn where the generator lives (so they depend on the seed only)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=device)


def _check_texture_batch(textures: torch.Tensor) -> torch.Tensor:
    if (
        not isinstance(textures, torch.Tensor)
        or textures.dtype != torch.uint8
        or textures.ndim != 4
        or textures.shape[1] != 3
    ):
        raise ValueError(
            f"textures must be a uint8 [N, 3, H, W] tensor, got {getattr(textures, 'dtype', type(textures).__name__)} "
            f"{tuple(getattr(textures, 'shape', ()))}"
        )
    return textures


def draw_augmentation_params_torch(name: str, count: int, generator: torch.Generator | None = None) -> dict:
    """``count`` parameter draws for ``name`` as tensors (the distributions of :func:`draw_augmentation_params`)."""
    _check_augmentation(name)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be an int >= 0, got {count!r}")
    return _TORCH_DRAWS[name](_uniform(generator, int(count), _UNIFORMS_PER_OP))


def apply_augmentation_torch(textures: torch.Tensor, name: str, params: dict) -> torch.Tensor:
    """The batched torch version of :func:`apply_augmentation`: uint8 ``[N, 3, H, W]`` in and out.

    ``params``: the keyword arguments of the op, each a number (for all images) or one value per
    image (``gammas``: 3 per image), as :func:`draw_augmentation_params` returns them.
    """
    _check_texture_batch(textures)
    _check_augmentation(name)
    return _AUGMENTATIONS[name][2](textures, **params)


def augment_textures_torch(
    textures: torch.Tensor, generator: torch.Generator | None = None, n_ops: int = 3
) -> torch.Tensor:
    """Batched :func:`augment_texture`: each texture gets its own ``n_ops`` distinct augmentations,
    in its own random order, with its own parameters (the same distributions as the numpy version).

    ``textures``: uint8 ``[N, 3, H, W]`` on any device; returns uint8 of the same shape and device.
    Randomness comes from ``generator`` only (a fixed number of draws per call).
    """
    _check_texture_batch(textures)
    n_ops = _check_n_ops(n_ops)
    count = len(textures)
    if count == 0 or n_ops == 0:
        return textures.clone()
    device = textures.device
    # argsort of uniform numbers: a uniformly random order of the 10 ops for each texture.
    order = _uniform(generator, count, len(AUGMENTATIONS)).argsort(dim=1)[:, :n_ops].to(device)
    out = textures.clone()
    for position in range(n_ops):
        uniforms = _uniform(generator, count, _UNIFORMS_PER_OP).to(device)
        for index, name in enumerate(AUGMENTATIONS):
            selected = order[:, position] == index
            if bool(selected.any()):
                out[selected] = _AUGMENTATIONS[name][2](out[selected], **_TORCH_DRAWS[name](uniforms[selected]))
    return out


def texture_bank(
    source: TextureSource, rng: np.random.Generator, count: int, size: int | tuple[int, int], n_ops: int = 3
) -> np.ndarray:
    """``count`` textures from ``source`` at ``size``, each with ``n_ops`` augmentations: uint8 ``[N, H, W, 3]``.

    A fixed set of textures, e.g. to show them in a notebook. ``n_ops=0`` gives raw textures. (The
    batched torch synthesizer uses a refreshing :class:`TexturePool` and augments at each use.)
    """
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    size = _size_pair(size)
    return np.stack([augment_texture(source.sample(rng, size), rng, n_ops) for _ in range(count)])


# --------------------------------------------------------------------------------------------
# The texture pool on the training device
# --------------------------------------------------------------------------------------------
class TexturePool:
    """Raw (un-augmented) textures kept on the training device and refreshed from a :class:`TextureSource`.

    The batched simulator draws a pool slot per texture anomaly and augments the texture there
    (:func:`augment_textures_torch`), so only raw textures have to cross from the host.

    - When the source holds at most ``pool_size`` textures (the procedural bank: 40), the pool
      holds every texture once and never changes: a uniform slot is a uniform texture, exactly the
      loader path's :meth:`TextureSource.sample`.
    - When the source is larger (DTD: 5640 images), the pool holds ``pool_size`` of them. Textures
      are loaded in the order of a shuffled pass over the whole source (then another shuffled pass,
      and so on), so every texture is loaded equally often and, stationary, each slot holds a
      uniform texture. At the start of every ``refresh_every``-th batch the pool catches up to
      ``floor(loads_per_image * images seen)`` loads, each replacing the slot loaded longest ago.

    The content is a pure function of ``(seed, loads done)``, so :meth:`seek` can rebuild the state
    after any number of batches (for an exact resume). ``load_seconds`` and ``loads_done`` count
    the host-side cost (reading, resizing, copying to the device); a refresh reads its textures
    with up to ``load_threads`` threads. ``size``: ``(height, width)`` of the stored textures
    (resized as :meth:`TextureSource.sample` does).

    ``prefetch`` (default on): because the content is a function of the loads, the textures of the
    next refresh are known one refresh ahead; a background thread reads and resizes them while the
    GPU trains, so the training thread only copies them in (``wait_seconds``: the time it still
    waited). A different batch size or a :meth:`seek` makes the guess wrong; those textures are then
    read on the spot, so the pool's content never depends on prefetching.
    """

    def __init__(
        self,
        source: TextureSource,
        size: int | tuple[int, int],
        pool_size: int = 64,
        loads_per_image: float = 0.125,
        refresh_every: int = 1,
        seed: int = 0,
        device: str | torch.device | None = None,
        load_threads: int = 4,
        prefetch: bool = True,
    ):
        if not isinstance(source, TextureSource):
            raise TypeError(f"source must be a TextureSource, got {type(source).__name__}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, (int, np.integer)) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int, got {pool_size!r}")
        if isinstance(refresh_every, bool) or not isinstance(refresh_every, (int, np.integer)) or refresh_every < 1:
            raise ValueError(f"refresh_every must be a positive int (batches between refreshes), got {refresh_every!r}")
        if (
            isinstance(loads_per_image, bool) or not isinstance(loads_per_image, (int, float, np.floating))
            or not 0.0 <= loads_per_image <= 64.0
        ):
            raise ValueError(
                "loads_per_image must be a number in [0, 64] (textures loaded per image simulated), got "
                f"{loads_per_image!r}"
            )
        if isinstance(load_threads, bool) or not isinstance(load_threads, (int, np.integer)) or load_threads < 1:
            raise ValueError(f"load_threads must be a positive int, got {load_threads!r}")
        self.load_threads = int(load_threads)
        self.source = source
        self.size = _size_pair(size)
        self.capacity = min(int(pool_size), len(source))
        self.refreshing = len(source) > int(pool_size)
        self.loads_per_image = float(loads_per_image)
        self.refresh_every = int(refresh_every)
        self.seed = int(seed)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.batches_done = 0
        self.images_done = 0
        self.loads_done = 0  # refresh loads, after the first fill
        self.load_seconds = 0.0
        self.wait_seconds = 0.0  # the training thread's wait for refresh textures (reads it did or waited on)
        self.textures_loaded = 0
        self.prefetch = bool(prefetch) and self.refreshing
        self._reader: ThreadPoolExecutor | None = None  # the one prefetch thread, started at the first refresh
        self._pending: tuple[list[int], Future] | None = None  # (texture ids, their pixels being read)
        self._orders: dict[int, np.ndarray] = {}
        self.textures, self.ids = self._build(0)

    def __repr__(self) -> str:
        how = (
            f"refreshed {self.loads_per_image:g} loads per image every {self.refresh_every} batch(es)"
            if self.refreshing else "all of the source, fixed"
        )
        height, width = self.size
        return f"TexturePool({self.capacity} textures {height}x{width} on {self.device}, {how}; {self.source!r})"

    def __len__(self) -> int:
        return self.capacity

    # ---- which texture load k brings, and which load a slot holds
    def _texture_id(self, load: int) -> int:
        if not self.refreshing:
            return load
        count = len(self.source)
        cycle = load // count
        if cycle not in self._orders:
            if len(self._orders) > 2:
                self._orders.pop(min(self._orders))
            self._orders[cycle] = np.random.default_rng([self.seed, cycle]).permutation(count)
        return int(self._orders[cycle][load % count])

    def _slot_load(self, slot: int, loads: int) -> int:
        """The load index slot ``slot`` holds after ``loads`` refresh loads (the first fill is loads 0..P-1)."""
        if loads <= slot:
            return slot
        last = slot + self.capacity * ((loads - 1 - slot) // self.capacity)  # the last refresh load into this slot
        return self.capacity + last

    def _read(self, ids: list[int]) -> np.ndarray:
        """The textures ``ids`` read and resized on the host: uint8 ``[len(ids), H, W, 3]``."""
        start = time.perf_counter()

        def load(index: int) -> np.ndarray:
            return resize_to(self.source.image(index), self.size)

        threads = min(self.load_threads, len(ids))
        if threads > 1:  # decoding and resizing release the GIL; the threads end with the refresh
            with ThreadPoolExecutor(max_workers=threads) as executor:
                pixels = np.stack(list(executor.map(load, ids)))
        else:
            pixels = np.stack([load(index) for index in ids])
        self.load_seconds += time.perf_counter() - start
        return pixels

    def _fetch(self, ids: list[int]) -> torch.Tensor:
        """The textures ``ids`` on the device: the prefetched pixels when they are these ids, else read now."""
        start = time.perf_counter()
        pending, self._pending = self._pending, None
        pixels = pending[1].result() if pending is not None else None  # also ends any read still running
        if pending is None or pending[0] != ids:
            pixels = self._read(ids)
        tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous().to(self.device)
        self.wait_seconds += time.perf_counter() - start
        self.textures_loaded += len(ids)
        return tensor

    def _plan(self, loads: int) -> tuple[torch.Tensor | None, list[int]]:
        """What going from ``loads_done`` to ``loads`` refresh loads reads: (slots, ids); slots None: the whole pool."""
        if loads - self.loads_done >= self.capacity:  # every slot changes: load only the final content
            return None, [self._texture_id(self._slot_load(slot, loads)) for slot in range(self.capacity)]
        refreshes = range(self.loads_done, loads)
        slots = torch.tensor([m % self.capacity for m in refreshes], dtype=torch.long)
        return slots, [self._texture_id(self.capacity + m) for m in refreshes]

    def _prefetch_next(self, batch_size: int) -> None:
        """Start reading the textures of the next refresh, assuming batches of ``batch_size`` images."""
        images_then = self.images_done + (self.refresh_every - 1) * int(batch_size)
        loads = self._due(images_then)
        if loads <= self.loads_done:
            return
        ids = self._plan(loads)[1]
        if self._pending is not None and self._pending[0] == ids:
            return
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="texture-prefetch")
        self._pending = (ids, self._reader.submit(self._read, ids))

    def _build(self, loads: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [self._texture_id(self._slot_load(slot, loads)) for slot in range(self.capacity)]
        return self._fetch(ids), torch.tensor(ids, dtype=torch.long)

    def _due(self, images: int) -> int:
        return math.floor(self.loads_per_image * images) if self.refreshing else 0

    def _refresh_to(self, loads: int) -> None:
        if loads <= self.loads_done:
            return
        slots, ids = self._plan(loads)
        if slots is None:
            self.textures, self.ids = self._fetch(ids), torch.tensor(ids, dtype=torch.long)
        else:
            self.textures[slots.to(self.device)] = self._fetch(ids)
            self.ids[slots] = torch.tensor(ids, dtype=torch.long)
        self.loads_done = loads

    # ---- the public interface
    def begin_batch(self, batch_size: int) -> None:
        """Account for one batch of ``batch_size`` images; refresh first when a refresh is due."""
        refresh = self.batches_done % self.refresh_every == 0
        if refresh:
            self._refresh_to(self._due(self.images_done))
        self.batches_done += 1
        self.images_done += int(batch_size)
        if refresh and self.prefetch:
            self._prefetch_next(batch_size)

    def seek(self, batches_done: int, batch_size: int) -> None:
        """Put the pool in the state it has after ``batches_done`` batches of ``batch_size`` images."""
        for name, value in (("batches_done", batches_done), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        last_refresh = ((batches_done - 1) // self.refresh_every) * self.refresh_every if batches_done > 0 else 0
        loads = self._due(last_refresh * batch_size)
        if self._pending is not None:  # read for the state before the seek
            self._pending[1].result()
            self._pending = None
        if loads != self.loads_done:
            self.textures, self.ids = self._build(loads)
            self.loads_done = loads
        self.batches_done, self.images_done = int(batches_done), int(batches_done) * int(batch_size)

    def draw(self, count: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` uniformly drawn pool textures (uint8 ``[count, 3, H, W]`` on the pool's device)
        and their source indices (int64 ``[count]``, CPU)."""
        slots = (_uniform(generator, count) * self.capacity).long().clamp(max=self.capacity - 1).cpu()
        return self.textures[slots.to(self.device)], self.ids[slots]


def describe_bank(source: TextureSource) -> str:
    """One line describing ``source`` (for notebooks and logs)."""
    if source.kind == "dtd":
        return f"{len(source)} DTD texture images from {source.root}"
    return (
        f"{len(source)} procedural textures ({', '.join(PROCEDURAL_FAMILIES)}), seed {source.seed}, "
        f"{source.procedural_size} px; put DTD in data/dtd to use real textures"
    )


__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_TEXTURE_ROOT",
    "PROCEDURAL_FAMILIES",
    "TexturePool",
    "TextureSource",
    "apply_augmentation",
    "apply_augmentation_torch",
    "augment_texture",
    "augment_textures_torch",
    "describe_bank",
    "draw_augmentation_params",
    "draw_augmentation_params_torch",
    "find_texture_images",
    "is_default_texture_root",
    "procedural_texture",
    "random_colour_map",
    "resize_to",
    "texture_bank",
]
