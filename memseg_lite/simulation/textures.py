"""Where texture anomalies get their pixels: DTD images when present, else a procedural bank.

MemSeg (after DRAEM) fills a texture anomaly with an image from the Describable Textures Dataset
(DTD), passed through 3 random augmentations out of 10. DTD cannot be downloaded at run time
here, so :class:`TextureSource` falls back to a bank of procedural colour textures (multi-octave
noise, stripes, checks, cells, marble, speckle, each with a random colour map) generated offline
from a seed. Put DTD at ``data/dtd`` (layout ``images/<class>/*.jpg``) to use the real thing.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.transforms.v2 import functional as tvf

from memseg_lite.core.io import list_images, read_image
from memseg_lite.simulation.perlin import perlin_noise

DEFAULT_TEXTURE_ROOT = "data/dtd"
PROCEDURAL_FAMILIES = ("fractal", "stripes", "checks", "cells", "marble", "speckle")
# The workbook's own data folder (notebooks run in notebooks/ and point at ../data/dtd).
_WORKBOOK_TEXTURE_ROOT = Path(__file__).resolve().parents[2] / DEFAULT_TEXTURE_ROOT


def is_default_texture_root(root: str | os.PathLike) -> bool:
    """True for the default DTD location: ``data/dtd`` under the current folder or the workbook's folder."""
    resolved = Path(root).expanduser().resolve()
    return resolved in {Path(DEFAULT_TEXTURE_ROOT).resolve(), _WORKBOOK_TEXTURE_ROOT}


def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


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
    _check_rng(rng)
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
                raise ValueError(f"texture root {self.root} is a file; give a folder of texture images (DTD layout images/<class>/*.jpg)")
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
        _check_rng(rng)
        height, width = _size_pair(size)
        return resize_to(self.image(int(rng.integers(len(self)))), (height, width))


# --------------------------------------------------------------------------------------------
# The 10 texture augmentations (3 are applied to each texture)
# --------------------------------------------------------------------------------------------
def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.permute(1, 2, 0).numpy())


def _signed(rng: np.random.Generator, low: float, high: float) -> float:
    """A magnitude in [low, high] with a random sign (keeps the op away from the identity)."""
    return float(rng.uniform(low, high) * rng.choice([-1.0, 1.0]))


def _gamma_contrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Per-channel gamma in [0.5, 2] (log-uniform, at least 2**0.25 away from 1).
    gammas = 2.0 ** np.array([_signed(rng, 0.25, 1.0) for _ in range(3)])
    levels = np.arange(256) / 255.0
    out = np.empty_like(image)
    for channel, gamma in enumerate(gammas):
        lut = np.clip(np.rint(255.0 * levels**gamma), 0, 255).astype(np.uint8)
        out[..., channel] = cv2.LUT(image[..., channel], lut)
    return out


def _brightness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gain, offset = rng.uniform(0.8, 1.2), _signed(rng, 10.0, 30.0)
    return np.clip(np.rint(image.astype(np.float32) * gain + offset), 0, 255).astype(np.uint8)


def _sharpness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    factor = rng.uniform(0.0, 0.5) if rng.random() < 0.5 else rng.uniform(2.0, 4.0)  # blur or sharpen
    return _to_numpy(tvf.adjust_sharpness(_to_tensor(image), float(factor)))


def _hue_saturation(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    tensor = tvf.adjust_hue(_to_tensor(image), _signed(rng, 0.05, 0.2))
    return _to_numpy(tvf.adjust_saturation(tensor, float(rng.uniform(0.5, 1.5))))


def _solarize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _to_numpy(tvf.solarize(_to_tensor(image), float(rng.integers(32, 129))))


def _posterize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _to_numpy(tvf.posterize(_to_tensor(image), int(rng.integers(2, 6))))


def _invert(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 255 - image


def _autocontrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _to_numpy(tvf.autocontrast(_to_tensor(image)))


def _equalize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _to_numpy(tvf.equalize(_to_tensor(image)))


def _affine_rotation(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # DRAEM rotates by up to 45 degrees with black corners; reflecting the border avoids pasting
    # artificial black triangles into the anomaly.
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), _signed(rng, 5.0, 45.0), 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


_AUGMENTATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "gamma_contrast": _gamma_contrast,
    "brightness": _brightness,
    "sharpness": _sharpness,
    "hue_saturation": _hue_saturation,
    "solarize": _solarize,
    "posterize": _posterize,
    "invert": _invert,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "affine_rotation": _affine_rotation,
}
#: The names of the 10 texture augmentations, in a fixed order.
AUGMENTATIONS: tuple[str, ...] = tuple(_AUGMENTATIONS)


def apply_augmentation(image: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """Apply the augmentation ``name`` (one of :data:`AUGMENTATIONS`) with random parameters from ``rng``.

    ``image``: uint8 ``H x W x 3``; returns a new uint8 image of the same shape.
    """
    _check_rng(rng)
    image = _check_rgb_uint8(image)
    if name not in _AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {AUGMENTATIONS}")
    return _AUGMENTATIONS[name](image, rng)


def augment_texture(image: np.ndarray, rng: np.random.Generator, n_ops: int = 3) -> np.ndarray:
    """``n_ops`` distinct augmentations drawn at random from :data:`AUGMENTATIONS`, in random order.

    ``image``: uint8 ``H x W x 3``; returns uint8 of the same shape.
    """
    _check_rng(rng)
    image = _check_rgb_uint8(image)
    if isinstance(n_ops, bool) or not isinstance(n_ops, (int, np.integer)) or not 0 <= n_ops <= len(AUGMENTATIONS):
        raise ValueError(f"n_ops must be an int in 0..{len(AUGMENTATIONS)}, got {n_ops!r}")
    for index in rng.permutation(len(AUGMENTATIONS))[:n_ops]:
        image = _AUGMENTATIONS[AUGMENTATIONS[index]](image, rng)
    return image


def texture_bank(
    source: TextureSource, rng: np.random.Generator, count: int, size: int | tuple[int, int], n_ops: int = 3
) -> np.ndarray:
    """``count`` augmented textures from ``source`` at ``size``: uint8 ``[N, H, W, 3]``.

    For the batched torch synthesizer, which draws its texture anomalies from such a bank on the
    training device instead of reading and augmenting images in the loop.
    """
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    size = _size_pair(size)
    return np.stack([augment_texture(source.sample(rng, size), rng, n_ops) for _ in range(count)])


def describe_bank(source: TextureSource) -> str:
    """One line describing ``source`` (for notebooks and logs)."""
    if source.kind == "dtd":
        return f"{len(source)} DTD texture images from {source.root}"
    return (
        f"{len(source)} procedural textures ({', '.join(PROCEDURAL_FAMILIES)}), seed {source.seed}, "
        f"{source.procedural_size} px; put DTD in data/dtd to use real textures"
    )


__all__ = [
    "AUGMENTATIONS", "DEFAULT_TEXTURE_ROOT", "PROCEDURAL_FAMILIES", "TextureSource", "apply_augmentation",
    "augment_texture", "describe_bank", "find_texture_images", "is_default_texture_root", "procedural_texture",
    "random_colour_map", "resize_to", "texture_bank",
]
