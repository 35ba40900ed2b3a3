"""The anomaly simulator: turn a good image into (image with a simulated defect, target mask).

MemSeg trains its segmenter on good images with pasted-in anomalies. One sample:

1. ``M = M_P * M_I``: a thresholded Perlin-noise mask ``M_P`` (random blob shapes), restricted to
   the object by the foreground mask ``M_I``. An empty ``M`` is drawn again.
2. A noise image ``I_n``: either a *texture* (a DTD / procedural texture, 3 random augmentations)
   or a *structure* image (the image itself, mirrored / rotated / colour-jittered, cut into a
   grid of cells that are shuffled), probability 1/2 each.
3. The blend, with ``delta ~ U[0.15, 1]``::

       I_A = (1 - M) * I + (1 - delta) * (M * I) + delta * (M * I_n)

   Outside ``M`` the image is untouched; inside, it moves a fraction ``delta`` of the way towards
   ``I_n``, so small deltas make faint, hard anomalies.

About half of the training samples stay normal (empty mask), so the network also sees clean
images. :class:`AnomalySynthesizer` does this with numpy / opencv per image (the reference);
:class:`TorchAnomalySynthesizer` does the same for a batch on the training device, with the same
distributions (kinds, masks, deltas, textures and their augmentations), so training on the device
and validating with the numpy path see the same kind of anomalies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from memseg_lite.core.runtime import check_rng, resolve_device
from memseg_lite.simulation.foreground import (
    ForegroundSettings,
    foreground_mask,
    foreground_mask_torch,
    resolve_foreground,
)
from memseg_lite.simulation.perlin import perlin_mask, perlin_mask_torch
from memseg_lite.simulation.textures import TexturePool, TextureSource, augment_texture, augment_textures_torch


class SimulationError(RuntimeError):
    """No usable anomaly mask could be drawn (e.g. the foreground is too small for the settings)."""


ANOMALY_KINDS = ("normal", "texture", "structure")
#: Range of the random colour-jitter factors (brightness, contrast, saturation) of structure anomalies.
JITTER_RANGE = (0.7, 1.3)
#: Largest "small" rotation of structure anomalies, in degrees.
SMALL_ANGLE = 15.0


# --------------------------------------------------------------------------------------------
# Argument checks (shared by both synthesizers)
# --------------------------------------------------------------------------------------------
def _check_probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_int_pair(name: str, value: Sequence[int], minimum: int) -> tuple[int, int]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(f"{name} must be a pair of ints, got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{name} must hold ints >= {minimum}, got {value!r}")
    return int(value[0]), int(value[1])


def _check_config(
    p_normal: float, p_texture: float, delta_range: Sequence[float], perlin_scale_range: Sequence[int],
    perlin_threshold: float, structure_grid: Sequence[int], max_tries: int,
) -> dict:
    p_normal = _check_probability("p_normal", p_normal)
    p_texture = _check_probability("p_texture", p_texture)
    if (
        not isinstance(delta_range, (tuple, list))
        or len(delta_range) != 2
        or not all(isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) for v in delta_range)
        or not 0.0 <= delta_range[0] <= delta_range[1] <= 1.0
    ):
        raise ValueError(f"delta_range must be (low, high) with 0 <= low <= high <= 1, got {delta_range!r}")
    scale_range = _check_int_pair("perlin_scale_range", perlin_scale_range, 0)
    if scale_range[0] > scale_range[1] or scale_range[1] > 10:
        raise ValueError(
            f"perlin_scale_range must be (low, high) with 0 <= low <= high <= 10, got {perlin_scale_range!r}"
        )
    if (
        isinstance(perlin_threshold, bool)
        or not isinstance(perlin_threshold, (int, float, np.floating))
        or not -1.0 <= perlin_threshold < 1.0
    ):
        raise ValueError(
            f"perlin_threshold must be in [-1, 1) (it applies to the noise scaled to [-1, 1]), got {perlin_threshold!r}"
        )
    grid = _check_int_pair("structure_grid", structure_grid, 1)
    if isinstance(max_tries, bool) or not isinstance(max_tries, (int, np.integer)) or max_tries < 1:
        raise ValueError(f"max_tries must be an int >= 1, got {max_tries!r}")
    return {
        "p_normal": p_normal, "p_texture": p_texture,
        "delta_range": (float(delta_range[0]), float(delta_range[1])),
        "perlin_scale_range": scale_range, "perlin_threshold": float(perlin_threshold),
        "structure_grid": grid, "max_tries": int(max_tries),
    }


def _check_delta(delta: float | None) -> float | None:
    if delta is None:
        return None
    if isinstance(delta, bool) or not isinstance(delta, (int, float, np.floating)) or not 0.0 <= delta <= 1.0:
        raise ValueError(f"delta must be None or a number in [0, 1], got {delta!r}")
    return float(delta)


def _check_kind(kind: str | None) -> str | None:
    if kind is not None and kind not in ANOMALY_KINDS:
        raise ValueError(f"kind must be None or one of {ANOMALY_KINDS}, got {kind!r}")
    return kind


# --------------------------------------------------------------------------------------------
# Building blocks (numpy)
# --------------------------------------------------------------------------------------------
def blend(image: np.ndarray, noise_image: np.ndarray, mask: np.ndarray, delta: float) -> np.ndarray:
    """``(1 - M) * I + (1 - delta) * (M * I) + delta * (M * I_n)`` in float32 (float64 for float64 input).

    ``image``, ``noise_image``: ``H x W x C`` (or ``H x W``), same scale; ``mask``: ``H x W`` in [0, 1].
    """
    # float32, or float64 for float64 input, so that 1 * I is I exactly outside the mask.
    dtype = np.result_type(np.asarray(image).dtype, np.float32)
    image = np.asarray(image, dtype=dtype)
    noise_image = np.asarray(noise_image, dtype=dtype)
    m = np.asarray(mask, dtype=dtype)
    if m.shape != image.shape[:2] or noise_image.shape != image.shape:
        raise ValueError(
            f"blend needs image {image.shape}, noise_image of the same shape and an H x W mask; "
            f"got noise_image {noise_image.shape}, mask {m.shape}"
        )
    if image.ndim == 3:
        m = m[:, :, None]
    delta = dtype.type(delta)
    return (1 - m) * image + (1 - delta) * (m * image) + delta * (m * noise_image)


def shuffle_grid(image: np.ndarray, grid: tuple[int, int], permutation: np.ndarray) -> np.ndarray:
    """Cut ``image`` (``H x W x C``) into a ``rows x cols`` grid and rearrange the cells.

    Output cell ``i`` (row-major) is input cell ``permutation[i]``. When ``H`` or ``W`` is not a
    multiple of the grid, the image is first extended by reflection to a multiple (so all cells
    have the same size), shuffled, and cropped back.
    """
    rows, cols = grid
    height, width = image.shape[:2]
    permutation = np.asarray(permutation)
    if sorted(permutation.tolist()) != list(range(rows * cols)):
        raise ValueError(f"permutation must be a permutation of 0..{rows * cols - 1}, got {permutation!r}")
    cell_h, cell_w = math.ceil(height / rows), math.ceil(width / cols)
    canvas = cv2.copyMakeBorder(
        image, 0, rows * cell_h - height, 0, cols * cell_w - width, cv2.BORDER_REFLECT_101
    ).reshape(rows * cell_h, cols * cell_w, -1)
    channels = canvas.shape[2]
    cells = (
        canvas.reshape(rows, cell_h, cols, cell_w, channels)
        .transpose(0, 2, 1, 3, 4)
        .reshape(-1, cell_h, cell_w, channels)
    )
    shuffled = cells[permutation].reshape(rows, cols, cell_h, cell_w, channels).transpose(0, 2, 1, 3, 4)
    out = shuffled.reshape(rows * cell_h, cols * cell_w, channels)[:height, :width]
    return out.reshape(image.shape)


def colour_jitter(image: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """Brightness (scale), contrast (around the mean grey) and saturation (around each pixel's grey)
    of uint8 RGB ``H x W x 3``; returns uint8."""
    pixels = image.astype(np.float32) * brightness
    grey = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    pixels = grey.mean() + contrast * (pixels - grey.mean())
    grey = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    pixels = grey[..., None] + saturation * (pixels - grey[..., None])
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def structure_noise(image: np.ndarray, rng: np.random.Generator, grid: tuple[int, int] = (4, 8)) -> np.ndarray:
    """The structure noise image: ``image`` (uint8 ``H x W x 3``) randomly mirrored, rotated
    (90-degree steps, or a small angle up to :data:`SMALL_ANGLE`), colour-jittered, then cut into
    a ``grid`` of cells that are shuffled. Returns uint8 ``H x W x 3``."""
    out = image
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1]
    height, width = out.shape[:2]
    if rng.random() < 0.5:
        steps = int(rng.integers(1, 4)) if height == width else 2  # a quarter turn would change the shape
        out = np.rot90(out, steps)
    else:
        matrix = cv2.getRotationMatrix2D(
            ((width - 1) / 2.0, (height - 1) / 2.0), rng.uniform(-SMALL_ANGLE, SMALL_ANGLE), 1.0
        )
        out = cv2.warpAffine(
            np.ascontiguousarray(out),
            matrix,
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )
    out = colour_jitter(np.ascontiguousarray(out), *rng.uniform(*JITTER_RANGE, size=3))
    return shuffle_grid(out, grid, rng.permutation(grid[0] * grid[1]))


def _as_float_image(image: np.ndarray) -> tuple[np.ndarray, float]:
    """(float image, its full-scale value): float32 0..255 for uint8; float images in [0, 1] as they are."""
    if image.dtype == np.uint8:
        return image.astype(np.float32), 255.0
    return image.astype(np.result_type(image.dtype, np.float32)), 1.0


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"image must be a numpy array (uint8 H x W x 3 / H x W, or float in [0, 1]), got {type(image).__name__}"
        )
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise ValueError(f"image must be H x W x 3 (RGB), H x W x 1 or H x W (grey), got shape {image.shape}")
    if min(image.shape[:2]) < 2:
        raise ValueError(f"image is too small for anomaly simulation: shape {image.shape}")
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.floating):
            raise TypeError(f"image must be uint8, or float in [0, 1]; got {image.dtype}")
        if not np.isfinite(image).all() or image.min() < 0.0 or image.max() > 1.0:
            raise ValueError("a float image must hold finite values in [0, 1]; convert it, e.g. image / 255.0")
    return image


# --------------------------------------------------------------------------------------------
# The numpy synthesizer
# --------------------------------------------------------------------------------------------
@dataclass
class SynthesisResult:
    """One simulated sample and its ingredients.

    - ``image``: the output, same dtype and shape as the input.
    - ``mask``: float32 ``H x W`` in {0, 1}, the training target ``M = M_P * M_I``.
    - ``kind``: ``"normal"``, ``"texture"`` or ``"structure"``.
    - ``delta``: the blend factor (``None`` for normal samples).
    - ``noise_image``: the texture / structure image ``I_n`` (input's dtype and shape) or ``None``.
    - ``perlin_mask``, ``foreground_mask``: bool ``H x W`` (``None`` for normal samples).
    """

    image: np.ndarray
    mask: np.ndarray
    kind: str
    delta: float | None = None
    noise_image: np.ndarray | None = None
    perlin_mask: np.ndarray | None = None
    foreground_mask: np.ndarray | None = None


class AnomalySynthesizer:
    """MemSeg's anomaly simulation for one image at a time (numpy / opencv).

    Arguments (all validated):

    - ``foreground``: :class:`ForegroundSettings`, a category name, ``"none"`` / ``"otsu"``, or
      ``None`` (no foreground mask).
    - ``texture_source``: a :class:`TextureSource` (default: DTD at ``data/dtd`` if present,
      else the procedural bank, seed 0).
    - ``p_normal``: probability of a normal sample (image unchanged, empty mask).
    - ``p_texture``: probability of a texture (rather than structure) anomaly.
    - ``delta_range``: ``delta ~ U[low, high]``.
    - ``perlin_scale_range``, ``perlin_threshold``: see :func:`memseg_lite.simulation.perlin.perlin_mask`.
    - ``structure_grid``: ``(rows, cols)`` of the structure shuffle (paper 4 x 8; tootouch 8 x 8).
    - ``max_tries``: Perlin masks drawn before giving up on an empty ``M_P * M_I``.
    """

    def __init__(
        self,
        foreground: ForegroundSettings | str | None = None,
        texture_source: TextureSource | None = None,
        p_normal: float = 0.5,
        p_texture: float = 0.5,
        delta_range: tuple[float, float] = (0.15, 1.0),
        perlin_scale_range: tuple[int, int] = (0, 5),
        perlin_threshold: float = 0.5,
        structure_grid: tuple[int, int] = (4, 8),
        max_tries: int = 10,
    ):
        self.foreground, self._foreground_label = resolve_foreground(foreground)
        if texture_source is not None and not isinstance(texture_source, TextureSource):
            raise TypeError(f"texture_source must be a TextureSource or None, got {type(texture_source).__name__}")
        self._texture_source = texture_source
        config = _check_config(
            p_normal, p_texture, delta_range, perlin_scale_range, perlin_threshold, structure_grid, max_tries
        )
        # p_normal, p_texture, delta_range, perlin_scale_range, perlin_threshold, structure_grid, max_tries
        for name, value in config.items():
            setattr(self, name, value)

    @property
    def texture_source(self) -> TextureSource:
        """The texture source (created on first use, so structure-only runs never build one)."""
        if self._texture_source is None:
            self._texture_source = TextureSource()
        return self._texture_source

    def __repr__(self) -> str:
        return (
            f"AnomalySynthesizer(foreground={self._foreground_label}, p_normal={self.p_normal}, "
            f"p_texture={self.p_texture}, delta_range={self.delta_range}, "
            f"perlin_scale_range={self.perlin_scale_range}, "
            f"perlin_threshold={self.perlin_threshold}, structure_grid={self.structure_grid}, "
            f"max_tries={self.max_tries})"
        )

    def draw_kind(self, rng: np.random.Generator) -> str:
        """``"normal"`` with probability ``p_normal``, else ``"texture"`` with probability ``p_texture``,
        else ``"structure"``."""
        if rng.random() < self.p_normal:
            return "normal"
        return "texture" if rng.random() < self.p_texture else "structure"

    def anomaly_mask(self, foreground: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(M, M_P)``: draw Perlin masks until ``M = M_P * foreground`` is non-empty (bool ``H x W``)."""
        for _ in range(self.max_tries):
            noise_mask = perlin_mask(foreground.shape, rng, self.perlin_scale_range, self.perlin_threshold)
            mask = noise_mask & foreground
            if mask.any():
                return mask, noise_mask
        raise SimulationError(
            f"no non-empty anomaly mask in max_tries={self.max_tries} Perlin draws: the foreground "
            f"({self._foreground_label}) covers {foreground.mean():.1%} of the image, perlin_threshold="
            f"{self.perlin_threshold}, perlin_scale_range={self.perlin_scale_range}. Check the foreground "
            "settings, lower perlin_threshold, or raise max_tries."
        )

    def noise_image(self, rgb: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
        """The noise image ``I_n`` for uint8 RGB ``rgb``: an augmented texture or a structure image."""
        if kind == "texture":
            return augment_texture(self.texture_source.sample(rng, rgb.shape[:2]), rng)
        return structure_noise(rgb, rng, self.structure_grid)

    def sample(
        self, image: np.ndarray, rng: np.random.Generator, kind: str | None = None, delta: float | None = None
    ) -> SynthesisResult:
        """Simulate one sample from ``image`` (uint8 RGB / grey, or float in [0, 1]).

        ``kind``: force ``"normal"``, ``"texture"`` or ``"structure"`` (default: drawn with
        ``p_normal`` and ``p_texture``); ``delta``: force the blend factor (default: drawn).
        """
        image = _check_image(image)
        check_rng(rng)
        kind = _check_kind(kind)
        delta = _check_delta(delta)
        if kind is None:
            kind = self.draw_kind(rng)
        if kind == "normal":
            return SynthesisResult(image.copy(), np.zeros(image.shape[:2], dtype=np.float32), "normal")

        foreground = foreground_mask(image, self.foreground)
        mask, noise_mask = self.anomaly_mask(foreground, rng)
        if delta is None:
            delta = float(rng.uniform(*self.delta_range))

        pixels, full_scale = _as_float_image(image)
        as_uint8 = image if image.dtype == np.uint8 else np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
        grey_input = as_uint8.ndim == 2 or as_uint8.shape[2] == 1
        rgb = cv2.cvtColor(as_uint8.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB) if grey_input else as_uint8
        noise_rgb = self.noise_image(rgb, kind, rng)
        noise = cv2.cvtColor(noise_rgb, cv2.COLOR_RGB2GRAY).reshape(image.shape) if grey_input else noise_rgb
        noise = noise.astype(pixels.dtype) * (full_scale / 255.0)

        blended = blend(pixels, noise, mask, delta)
        if image.dtype == np.uint8:
            out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
            noise_out = noise.astype(np.uint8)
        else:
            out = blended.astype(image.dtype)
            noise_out = noise.astype(image.dtype)
        return SynthesisResult(out, mask.astype(np.float32), kind, delta, noise_out, noise_mask, foreground)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(image, mask)``: the simulated image (input's dtype and shape) and its float32 ``H x W`` mask."""
        result = self.sample(image, rng)
        return result.image, result.mask


# --------------------------------------------------------------------------------------------
# The batched torch synthesizer
# --------------------------------------------------------------------------------------------
def _rand(generator: torch.Generator | None, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn where the generator lives (so they depend on the seed only)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=device)


def blend_torch(
    images: torch.Tensor, noise_images: torch.Tensor, masks: torch.Tensor, deltas: torch.Tensor
) -> torch.Tensor:
    """Batched :func:`blend`: float ``[B, C, H, W]`` images and noise, ``[B, H, W]`` masks, ``[B]`` deltas."""
    m = masks.unsqueeze(1).to(images.dtype)
    d = deltas.view(-1, 1, 1, 1).to(images.dtype)
    return (1 - m) * images + (1 - d) * (m * images) + d * (m * noise_images)


def shuffle_grid_torch(images: torch.Tensor, grid: tuple[int, int], permutations: torch.Tensor) -> torch.Tensor:
    """Batched :func:`shuffle_grid`: ``images`` ``[B, C, H, W]``, ``permutations`` int64 ``[B, rows * cols]``."""
    rows, cols = grid
    batch, channels, height, width = images.shape
    cell_h, cell_w = math.ceil(height / rows), math.ceil(width / cols)
    pad_h, pad_w = rows * cell_h - height, cols * cell_w - width
    canvas = F.pad(images, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else images
    cells = canvas.reshape(batch, channels, rows, cell_h, cols, cell_w).permute(0, 2, 4, 1, 3, 5)
    cells = cells.reshape(batch, rows * cols, channels, cell_h, cell_w)
    shuffled = cells[torch.arange(batch, device=images.device).unsqueeze(1), permutations.to(images.device)]
    shuffled = shuffled.reshape(batch, rows, cols, channels, cell_h, cell_w).permute(0, 3, 1, 4, 2, 5)
    return shuffled.reshape(batch, channels, rows * cell_h, cols * cell_w)[:, :, :height, :width]


def colour_jitter_torch(images: torch.Tensor, factors: torch.Tensor, full_scale: float) -> torch.Tensor:
    """Batched :func:`colour_jitter` on float RGB ``[B, 3, H, W]``; ``factors`` ``[B, 3]`` (brightness,
    contrast, saturation). No rounding: the result stays float, clipped to ``[0, full_scale]``.

    The three steps are linear, so they collapse into one colour matrix and offset per image:
    ``out = c * b * (s * p + (1 - s) * grey(p)) + (1 - c) * b * mean(grey(p))``.
    """
    batch = images.shape[0]
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype)
    b, c, s = (factors[:, i].to(images.dtype).view(-1, 1, 1) for i in range(3))
    eye = torch.eye(3, device=images.device, dtype=images.dtype)
    matrix = c * b * (s * eye + (1 - s) * weights.view(1, 1, 3).expand(batch, 3, 3))
    flat = images.reshape(batch, 3, -1)
    mean_grey = torch.einsum("c,bcn->b", weights, flat) / flat.shape[-1]
    offset = ((1 - c) * b).view(-1, 1, 1) * mean_grey.view(-1, 1, 1)
    return torch.baddbmm(offset, matrix, flat).clamp_(0, full_scale).view_as(images)


def _rotate_small(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate ``[N, C, H, W]`` about the centre (bilinear, border reflected), like ``cv2.warpAffine``."""
    _, _, height, width = images.shape
    theta = torch.deg2rad(angles_deg.to(images.dtype))
    cos, sin = torch.cos(theta), torch.sin(theta)
    # affine_grid works in normalised coordinates; the aspect ratio keeps the rotation rigid in pixels.
    aspect = width / height
    matrix = torch.zeros(len(images), 2, 3, device=images.device, dtype=images.dtype)
    matrix[:, 0, 0], matrix[:, 0, 1] = cos, sin / aspect
    matrix[:, 1, 0], matrix[:, 1, 1] = -sin * aspect, cos
    grid = F.affine_grid(matrix, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def structure_noise_torch(
    images: torch.Tensor, generator: torch.Generator | None, grid: tuple[int, int], full_scale: float
) -> torch.Tensor:
    """Batched :func:`structure_noise` on float RGB ``[B, 3, H, W]`` (values in ``[0, full_scale]``)."""
    batch, _, height, width = images.shape
    device = images.device
    draws = _rand(generator, batch, 8).to(device)
    out = images.clone()
    # Each geometric step touches only the images it selects (cheaper than torch.where on all).
    for selected, dims in ((draws[:, 0] < 0.5, (-1,)), (draws[:, 1] < 0.5, (-2,))):
        if bool(selected.any()):
            out[selected] = out[selected].flip(dims)
    quarter = draws[:, 2] < 0.5
    if height == width:
        steps = (draws[:, 3] * 3).long().clamp(max=2) + 1  # 1, 2 or 3 quarter turns
    else:
        steps = torch.full((batch,), 2, device=device)  # a quarter turn would change the shape
    for k in (1, 2, 3):
        selected = quarter & (steps == k)
        if bool(selected.any()):
            out[selected] = torch.rot90(out[selected], k, dims=(-2, -1))
    small = ~quarter
    if bool(small.any()):
        angles = (draws[:, 4] * 2 - 1) * SMALL_ANGLE
        out[small] = _rotate_small(out[small], angles[small])
    low, high = JITTER_RANGE
    out = colour_jitter_torch(out, low + (high - low) * draws[:, 5:8], full_scale)
    permutations = _rand(generator, batch, grid[0] * grid[1]).argsort(dim=1)
    return shuffle_grid_torch(out, grid, permutations)


@dataclass
class SynthesisBatch:
    """A simulated batch (all tensors on the synthesizer's device).

    ``images``: input dtype ``[B, C, H, W]``; ``masks``: float32 ``[B, H, W]`` in {0, 1};
    ``kinds``: int64 ``[B]`` indices into :data:`ANOMALY_KINDS`; ``deltas``: float32 ``[B]`` (0 for
    normal samples); ``noise_images``: float32 ``[B, C, H, W]`` in the input's scale (0 for normal
    samples); ``perlin_masks``, ``foreground_masks``: bool ``[B, H, W]``; ``texture_ids``: int64
    ``[B]``, for texture anomalies the index of the raw texture in the texture source (or in a
    fixed ``texture_bank``), -1 for the other samples.
    """

    images: torch.Tensor
    masks: torch.Tensor
    kinds: torch.Tensor
    deltas: torch.Tensor
    noise_images: torch.Tensor
    perlin_masks: torch.Tensor
    foreground_masks: torch.Tensor
    texture_ids: torch.Tensor | None = None


class TorchAnomalySynthesizer:
    """MemSeg's anomaly simulation for a whole batch on one device (CPU, CUDA, MPS).

    The same recipe as :class:`AnomalySynthesizer`, vectorised: Perlin masks from
    :func:`~memseg_lite.simulation.perlin.perlin_mask_torch`, foreground masks from
    :func:`~memseg_lite.simulation.foreground.foreground_mask_torch`, structure anomalies by
    flips / quarter turns / small rotations / colour jitter and a grid shuffle, then the same blend.

    Texture anomalies, as on the loader path, get a texture drawn afresh for every sample and their
    own ``texture_ops`` (3) augmentations out of the 10, with the numpy path's parameter
    distributions (:func:`~memseg_lite.simulation.textures.augment_textures_torch`; with equal
    parameters the ops give the same pixels, rotation and hue within 1 grey level). The raw
    textures come from a :class:`~memseg_lite.simulation.textures.TexturePool` on the device:

    - sources of at most ``pool_size`` textures (the procedural bank, 40) sit in the pool whole
      and never change: each sample's texture is a uniform draw from the source, as on the loader path;
    - larger sources (DTD, 5640 images) are streamed through the pool in shuffled passes: at each
      ``refresh_every``-th batch the pool catches up to ``refresh_rate`` loads per texture anomaly
      expected (``refresh_rate * (1 - p_normal) * p_texture`` loads per image), each replacing the
      oldest slot.

    Defaults, chosen by measurement: ``pool_size=64`` (12.6 MB at 256 x 256), ``refresh_rate=1``
    (one raw texture read per texture anomaly, like the loader path, but no augmentation on the
    host), ``refresh_every=4`` (a slice of the pool per 4 batches, read by ``load_threads=4``
    threads). Measured by streaming a 5640-texture source (DTD's size) through the pool for the
    reference run (batch 8, 5000 steps, about 2 texture anomalies a batch), against the loader
    path's independent draws:

    ==============  ===========================  ==========================  ==================
    refresh_rate    reads per batch of 8         distinct textures, run      per 1000 steps
    ==============  ===========================  ==========================  ==================
    0.5             1                            92 % of the loader's        52 %
    1 (default)     2                            98 % (4553 vs 4658)         75 %
    2               4                            99.5 %                      90 %
    ==============  ===========================  ==========================  ==================

    ``refresh_every`` (1 or 8) does not change these numbers; it only groups the reads. The marginal
    distribution is the loader path's at any rate (each sample's texture is uniform over the
    source); the pool only repeats a texture more often within a few hundred steps, each time with
    fresh augmentations. Keep ``refresh_every * batch * (1 - p_normal) * p_texture * refresh_rate``
    at most ``pool_size``: a larger slice replaces the whole pool and the extra reads are skipped.
    ``tests/test_synthesis.py`` compares both paths (kind shares, mask coverage, deltas, texture
    statistics, variety); ``benchmarks/bench_synthesis.py`` measures the refresh cost. The old
    behaviour (64 textures augmented once per run, only mirrored at each use) fails that comparison.

    Arguments: those of :class:`AnomalySynthesizer`, plus

    - ``texture_bank``: a fixed set of raw textures instead of a source, uint8 ``[N, H, W, 3]``
      (numpy, e.g. ``texture_bank(source, rng, n, size, n_ops=0)``) or ``[N, 3, H, W]`` (tensor);
    - ``texture_source`` (with ``image_size``, the textures' ``(height, width)``): stream textures
      from this source through a pool of ``pool_size`` on the device, seeded by ``pool_seed``,
      refreshed as above (``refresh_rate``, ``refresh_every``, ``load_threads``; ``prefetch_textures``:
      the next refresh's textures are read by a background thread while the batch trains);
    - ``texture_ops``: augmentations per texture use (0: the textures as they are);
    - ``device``: where the simulation runs (``None``: where each batch is).

    One of ``texture_bank`` / ``texture_source`` is required when ``p_texture > 0``. Randomness:
    the ``generator`` of each call, plus the pool's ``pool_seed``; a CPU run repeats exactly. The
    pool state follows the batches simulated; after a resume call :meth:`seek` with the batches
    already done, so that the pool is where an uninterrupted run would have it.
    """

    def __init__(
        self,
        foreground: ForegroundSettings | str | None = None,
        texture_bank: np.ndarray | torch.Tensor | None = None,
        p_normal: float = 0.5,
        p_texture: float = 0.5,
        delta_range: tuple[float, float] = (0.15, 1.0),
        perlin_scale_range: tuple[int, int] = (0, 5),
        perlin_threshold: float = 0.5,
        structure_grid: tuple[int, int] = (4, 8),
        max_tries: int = 10,
        device: str | torch.device | None = None,
        *,
        texture_source: TextureSource | None = None,
        image_size: int | tuple[int, int] | None = None,
        pool_size: int = 64,
        refresh_rate: float = 1.0,
        refresh_every: int = 4,
        pool_seed: int = 0,
        texture_ops: int = 3,
        load_threads: int = 4,
        prefetch_textures: bool = True,
    ):
        self.foreground, self._foreground_label = resolve_foreground(foreground)
        config = _check_config(
            p_normal, p_texture, delta_range, perlin_scale_range, perlin_threshold, structure_grid, max_tries
        )
        # p_normal, p_texture, delta_range, perlin_scale_range, perlin_threshold, structure_grid, max_tries
        for name, value in config.items():
            setattr(self, name, value)
        self.device = resolve_device(device) if device is not None else None
        if (
            isinstance(texture_ops, bool)
            or not isinstance(texture_ops, (int, np.integer))
            or not 0 <= texture_ops <= 10
        ):
            raise ValueError(
                f"texture_ops must be an int in 0..10 (augmentations per texture use), got {texture_ops!r}"
            )
        self.texture_ops = int(texture_ops)
        if (
            isinstance(refresh_rate, bool) or not isinstance(refresh_rate, (int, float, np.floating))
            or not 0.0 <= refresh_rate <= 16.0
        ):
            raise ValueError(
                f"refresh_rate must be a number in [0, 16] (textures loaded per texture anomaly), got {refresh_rate!r}"
            )
        if texture_bank is not None and texture_source is not None:
            raise ValueError("give texture_bank (fixed textures) or texture_source (a refreshing pool), not both")
        self.texture_pool: TexturePool | None = None
        self._fixed_bank = self._check_bank(texture_bank)
        if texture_source is not None:
            if not isinstance(texture_source, TextureSource):
                raise TypeError(f"texture_source must be a TextureSource, got {type(texture_source).__name__}")
            if image_size is None:
                raise ValueError("texture_source needs image_size, the (height, width) of the training images")
            if self.p_texture > 0:  # structure-only runs never read a texture
                self.texture_pool = TexturePool(
                    texture_source, image_size, pool_size,
                    loads_per_image=float(refresh_rate) * (1.0 - self.p_normal) * self.p_texture,
                    refresh_every=refresh_every, seed=pool_seed, device=self.device, load_threads=load_threads,
                    prefetch=prefetch_textures,
                )
        if self._fixed_bank is None and texture_source is None and self.p_texture > 0:
            raise ValueError(
                "texture_bank or texture_source is required when p_texture > 0: use "
                "TorchAnomalySynthesizer.from_texture_source(TextureSource(...), rng, image_size=...), or pass "
                "texture_bank=memseg_lite.simulation.textures.texture_bank(source, rng, count, size, n_ops=0)"
            )

    def _check_bank(self, bank: np.ndarray | torch.Tensor | None) -> torch.Tensor | None:
        if bank is None:
            return None
        if isinstance(bank, np.ndarray):
            if bank.dtype != np.uint8 or bank.ndim != 4 or bank.shape[3] != 3:
                raise ValueError(f"a numpy texture_bank must be uint8 [N, H, W, 3], got {bank.dtype} {bank.shape}")
            bank = torch.from_numpy(np.ascontiguousarray(bank)).permute(0, 3, 1, 2).contiguous()
        if not isinstance(bank, torch.Tensor) or bank.dtype != torch.uint8 or bank.ndim != 4 or bank.shape[1] != 3:
            raise ValueError("texture_bank must be uint8 [N, H, W, 3] (numpy) or [N, 3, H, W] (tensor)")
        if len(bank) == 0:
            raise ValueError("texture_bank is empty")
        return bank.to(self.device) if self.device is not None else bank

    @property
    def texture_bank(self) -> torch.Tensor | None:
        """The raw textures available now: uint8 ``[N, 3, H, W]`` (the pool's current content, or the fixed bank)."""
        return self.texture_pool.textures if self.texture_pool is not None else self._fixed_bank

    @classmethod
    def from_texture_source(
        cls,
        source: TextureSource,
        rng: np.random.Generator,
        bank_size: int = 64,
        image_size: int | tuple[int, int] = 256,
        **kwargs,
    ) -> TorchAnomalySynthesizer:
        """A synthesizer whose texture anomalies stream from ``source`` through a pool of
        ``bank_size`` raw textures at ``image_size`` (the pool is seeded from ``rng``)."""
        check_rng(rng)
        pool_seed = int(rng.integers(2**63))
        return cls(texture_source=source, image_size=image_size, pool_size=bank_size, pool_seed=pool_seed, **kwargs)

    def seek(self, batches_done: int, batch_size: int) -> None:
        """Set the texture pool to its state after ``batches_done`` batches of ``batch_size`` images
        (e.g. after resuming a run at that step); nothing to do without a refreshing pool."""
        if self.texture_pool is not None:
            self.texture_pool.seek(batches_done, batch_size)

    def _textures(
        self, count: int, size: tuple[int, int], generator: torch.Generator | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` freshly drawn and augmented textures, float32 ``[count, 3, H, W]`` in 0..255, and
        their texture indices (int64 ``[count]``)."""
        if self.texture_pool is not None:
            chosen, ids = self.texture_pool.draw(count, generator)
        else:
            bank = self._fixed_bank
            if bank is None:
                raise ValueError(
                    "texture anomalies were asked for, but this synthesizer has no textures (it was built with "
                    "p_texture=0 and no texture_bank / texture_source); pass one of them"
                )
            slots = (_rand(generator, count) * len(bank)).long().clamp(max=len(bank) - 1)
            chosen, ids = bank[slots.to(bank.device)], slots.cpu()
        chosen = augment_textures_torch(chosen.to(device), generator, self.texture_ops).float()
        if tuple(chosen.shape[-2:]) != tuple(size):
            chosen = F.interpolate(chosen, size=size, mode="bilinear", align_corners=False, antialias=True)
        return chosen, ids.to(device)

    def _anomaly_masks(
        self, foreground: torch.Tensor, anomalous: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M, M_P)`` for the batch: rows where ``anomalous`` get non-empty masks, others stay empty."""
        batch, height, width = foreground.shape
        noise_masks = torch.zeros_like(foreground)
        todo = anomalous.clone()
        for _ in range(self.max_tries):
            count = int(todo.sum())
            if count == 0:
                break
            drawn = perlin_mask_torch(
                count, (height, width), generator, foreground.device, self.perlin_scale_range, self.perlin_threshold
            )
            noise_masks[todo] = drawn
            todo = todo & ~(noise_masks & foreground).flatten(1).any(1)
        if bool(todo.any()):
            coverage = foreground[todo].float().mean().item()
            raise SimulationError(
                f"no non-empty anomaly mask in max_tries={self.max_tries} Perlin draws for {int(todo.sum())} "
                f"image(s): their foreground ({self._foreground_label}) covers {coverage:.1%} of the image, "
                f"perlin_threshold={self.perlin_threshold}, perlin_scale_range={self.perlin_scale_range}. "
                "Check the foreground settings, lower perlin_threshold, or raise max_tries."
            )
        return noise_masks & foreground & anomalous.view(-1, 1, 1), noise_masks

    def sample(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        kinds: Sequence[str] | str | None = None,
        deltas: torch.Tensor | float | None = None,
        foreground_masks: torch.Tensor | None = None,
    ) -> SynthesisBatch:
        """Simulate a batch from ``images`` (uint8, or float in [0, 1], ``[B, C, H, W]``, C = 1 or 3).

        ``kinds``: force one kind for all, or one per image; ``deltas``: force the blend factors;
        ``foreground_masks``: bool ``[B, H, W]`` to use instead of computing them (e.g. cached per
        training image). Randomness comes from ``generator`` only.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be a [B, C, H, W] tensor with C = 1 or 3, got {getattr(images, 'shape', type(images))}"
            )
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise TypeError(f"images must be uint8, or float in [0, 1]; got {images.dtype}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        device = self.device if self.device is not None else images.device
        images = images.to(device)
        batch, channels, height, width = images.shape
        full_scale = 255.0 if images.dtype == torch.uint8 else 1.0
        pixels = images.float()

        draws = _rand(generator, batch, 3).to(device)
        if kinds is None:
            kind_index = torch.where(draws[:, 0] < self.p_normal, 0, torch.where(draws[:, 1] < self.p_texture, 1, 2))
        else:
            names = [kinds] * batch if isinstance(kinds, str) else list(kinds)
            if len(names) != batch or any(name not in ANOMALY_KINDS for name in names):
                raise ValueError(f"kinds must be one of {ANOMALY_KINDS} or a list of {batch} of them, got {kinds!r}")
            kind_index = torch.tensor([ANOMALY_KINDS.index(name) for name in names], device=device)
        low, high = self.delta_range
        if deltas is None:
            delta_values = low + (high - low) * draws[:, 2]
        else:
            delta_values = torch.as_tensor(deltas, dtype=torch.float32, device=device).expand(batch).clone()
            if bool(((delta_values < 0) | (delta_values > 1)).any()):
                raise ValueError("deltas must lie in [0, 1]")
        anomalous = kind_index > 0
        delta_values = torch.where(anomalous, delta_values, torch.zeros_like(delta_values))

        if foreground_masks is None:
            foreground = (
                foreground_mask_torch(images[anomalous], self.foreground)
                if bool(anomalous.any()) else torch.ones(0, height, width, dtype=torch.bool, device=device)
            )
            foreground_masks = torch.ones(batch, height, width, dtype=torch.bool, device=device)
            foreground_masks[anomalous] = foreground
        else:
            foreground_masks = foreground_masks.to(device=device, dtype=torch.bool)
            if tuple(foreground_masks.shape) != (batch, height, width):
                raise ValueError(
                    f"foreground_masks must be bool [B, H, W] = {[batch, height, width]}, got "
                    f"{list(foreground_masks.shape)}"
                )
        masks, perlin_masks = self._anomaly_masks(foreground_masks, anomalous, generator)
        if self.texture_pool is not None:
            self.texture_pool.begin_batch(batch)  # refresh the pool when one is due

        rgb = pixels if channels == 3 else pixels.expand(-1, 3, -1, -1)
        noise = torch.zeros(batch, 3, height, width, device=device)
        texture_ids = torch.full((batch,), -1, dtype=torch.long, device=device)
        texture, structure = kind_index == 1, kind_index == 2
        if bool(texture.any()):
            textures, texture_ids[texture] = self._textures(int(texture.sum()), (height, width), generator, device)
            noise[texture] = textures * (full_scale / 255.0)
        if bool(structure.any()):
            noise[structure] = structure_noise_torch(rgb[structure], generator, self.structure_grid, full_scale)
        if channels == 1:
            noise = (noise * torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)).sum(1, keepdim=True)

        blended = blend_torch(pixels, noise, masks.float(), delta_values)
        out = blended.round().clamp(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else blended.to(images.dtype)
        return SynthesisBatch(
            out,
            masks.float(),
            kind_index.long(),
            delta_values.float(),
            noise,
            perlin_masks,
            foreground_masks,
            texture_ids,
        )

    def foreground_masks(self, images: torch.Tensor, chunk: int = 32) -> torch.Tensor:
        """The foreground masks :meth:`sample` would compute for ``images`` (bool ``[B, H, W]``, on the
        images' device), in chunks: computed once per training image, they are passed to
        :meth:`sample` (``foreground_masks=``) instead of being recomputed for every batch."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be a [B, C, H, W] tensor with C = 1 or 3, got {getattr(images, 'shape', type(images))}"
            )
        return torch.cat([foreground_mask_torch(images[start : start + chunk], self.foreground)
                          for start in range(0, len(images), chunk)])

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, masks)``: simulated ``[B, C, H, W]`` (input dtype) and float32 ``[B, H, W]`` masks."""
        result = self.sample(images, generator)
        return result.images, result.masks
