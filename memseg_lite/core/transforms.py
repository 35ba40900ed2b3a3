"""Turning uint8 images into normalised network input and back, at square or rectangular sizes.

Anomaly simulation works on uint8 pixels; the network sees float tensors normalised with the
ImageNet statistics its encoder was trained with.

Sizes are ``S`` (square) or ``H x W`` (:func:`parse_size`: ``256``, ``"256x512"``, ``(256, 512)``),
multiples of 32 for the network. How an image of another shape is fitted (:func:`fit_image`):

- ``"letterbox"`` (the default): scale the image so it fits inside ``H x W`` with its aspect
  ratio kept, and pad the rest with black, centred. Nothing of the product is cut off (a defect at
  an edge stays visible) and nothing is distorted; :func:`unfit_map` maps an anomaly map back to
  the original pixels. An image whose aspect ratio already equals ``H / W`` is simply resized, so
  square images at a square size behave exactly as before.
- ``"stretch"``: resize to ``H x W`` regardless of the aspect ratio (what checkpoints written
  before this option did; they load with it).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import cv2
import numpy as np
import torch

from memseg_lite.core.sizes import RESIZE_MODES, parse_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def ensure_rgb(image: np.ndarray) -> np.ndarray:
    """Grey-level ``H x W`` (or ``H x W x 1``) becomes ``H x W x 3``; RGB passes through."""
    image = np.asarray(image)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an H x W or H x W x 3 image, got shape {image.shape}")


def _resize(image: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    if nearest:
        interpolation = cv2.INTER_NEAREST
    else:
        interpolation = cv2.INTER_AREA if height * width < image.shape[0] * image.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def letterbox_geometry(shape: tuple[int, int], size) -> tuple[int, int, int, int]:
    """``(top, left, content_height, content_width)`` where an image of ``shape`` lands in ``size``.

    The scale is ``min(H / h, W / w)``; the scaled image is centred, the rest is padding. An image
    with the aspect ratio of ``size`` fills it exactly (no padding).
    """
    height, width = parse_size(size)
    source_height, source_width = int(shape[0]), int(shape[1])
    if source_height * width == source_width * height:
        return 0, 0, height, width
    scale = min(height / source_height, width / source_width)
    content_height = min(height, max(1, round(source_height * scale)))
    content_width = min(width, max(1, round(source_width * scale)))
    return (height - content_height) // 2, (width - content_width) // 2, content_height, content_width


def fit_image(image: np.ndarray, size, mode: str = "letterbox", nearest: bool = False) -> np.ndarray:
    """Fit ``image`` (``h x w`` or ``h x w x C``) to ``size`` by ``mode`` (see the module docstring).

    ``nearest=True`` for masks (nearest-neighbour, so they are neither eroded nor blurred).
    """
    height, width = parse_size(size)
    if mode == "stretch":
        return _resize(image, height, width, nearest)
    if mode != "letterbox":
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    top, left, content_height, content_width = letterbox_geometry(image.shape[:2], (height, width))
    content = _resize(image, content_height, content_width, nearest)
    if (content_height, content_width) == (height, width):
        return content
    canvas = np.zeros((height, width, *image.shape[2:]), dtype=image.dtype)
    canvas[top : top + content_height, left : left + content_width] = content
    return canvas


def unfit_map(values: np.ndarray, original_shape: tuple[int, int], mode: str = "letterbox") -> np.ndarray:
    """Inverse of :func:`fit_image` for a float map ``H x W``: back to ``original_shape`` (bilinear).

    With ``"letterbox"`` the padding is cut away first, so the result lines up with the original pixels.
    """
    values = np.asarray(values, dtype=np.float32)
    if mode == "letterbox":
        top, left, content_height, content_width = letterbox_geometry(original_shape, values.shape)
        values = values[top : top + content_height, left : left + content_width]
    elif mode != "stretch":
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    height, width = int(original_shape[0]), int(original_shape[1])
    if values.shape == (height, width):
        return np.ascontiguousarray(values)
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)


def mixed_size_warning(
    shapes: Iterable[tuple[int, int]], size, mode: str = "letterbox", where: str = "the images"
) -> str | None:
    """A warning text when fitting images of these ``(height, width)`` shapes to ``size`` distorts or pads unevenly.

    ``"stretch"``: when any aspect ratio differs from the target's by more than 1 % (the product
    is distorted). ``"letterbox"``: when the images have different aspect ratios (they are padded
    differently, so the memory bank compares padding with product). ``None`` when all is well.
    """
    height, width = parse_size(size)
    ratios = sorted({round(w / h, 3) for h, w in shapes})
    if not ratios:
        return None
    target = width / height
    if mode == "stretch":
        off = [r for r in ratios if abs(r / target - 1) > 0.01]
        if off:
            return (
                f"{where} have aspect ratios (width / height) {_ratio_list(ratios)} but are stretched to "
                f"{height} x {width} (ratio {target:.3f}): the product is distorted. Use --resize letterbox, "
                "or an --image-size HxW with the images' own aspect ratio"
            )
        return None
    if ratios[-1] / ratios[0] > 1.01:
        return (
            f"{where} have mixed aspect ratios (width / height) {_ratio_list(ratios)}; letterboxed to "
            f"{height} x {width} they get different black borders. Crop them to one shape for best results"
        )
    return None


def _ratio_list(ratios: list[float]) -> str:
    shown = ", ".join(f"{r:.3f}" for r in ratios[:5])
    return shown + (f", ... ({len(ratios)} different)" if len(ratios) > 5 else "")


def warn_mixed_sizes(
    shapes: Iterable[tuple[int, int]], size, mode: str = "letterbox", where: str = "the images"
) -> None:
    """:func:`warnings.warn` the text of :func:`mixed_size_warning`, if any (a ``UserWarning``)."""
    message = mixed_size_warning(shapes, size, mode, where)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=2)


def resize_image(image: np.ndarray, size, center_crop: int | None = None, mode: str = "stretch") -> np.ndarray:
    """Fit to ``size`` (``S`` or ``(H, W)``; area interpolation when shrinking), then optionally center-crop.

    ``mode``: ``"stretch"`` (plain resize, the default here for backward compatibility) or
    ``"letterbox"`` (see :func:`fit_image`).
    """
    image = fit_image(image, size, mode)
    if center_crop is not None:
        image = _center_crop(image, center_crop)
    return image


def resize_mask(mask: np.ndarray, size, center_crop: int | None = None, mode: str = "stretch") -> np.ndarray:
    """Resize a binary mask with nearest-neighbour, so it is neither eroded nor blurred."""
    mask = np.asarray(mask)
    if mask.shape[:2] != parse_size(size):
        mask = fit_image(mask.astype(np.uint8), size, mode, nearest=True)
    if center_crop is not None:
        mask = _center_crop(mask, center_crop)
    return mask


def _center_crop(image: np.ndarray, crop: int) -> np.ndarray:
    height, width = image.shape[:2]
    if crop > min(height, width):
        raise ValueError(f"center_crop={crop} is larger than the resized image ({height} x {width})")
    top, left = (height - crop) // 2, (width - crop) // 2
    return image[top : top + crop, left : left + crop]


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``H x W x 3`` (or grey) -> float ``3 x H x W`` tensor normalised with ImageNet statistics."""
    image = ensure_rgb(image)
    if image.dtype != np.uint8:
        raise TypeError(f"image_to_tensor expects uint8 pixels, got {image.dtype}")
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`image_to_tensor`: normalised ``3 x H x W`` -> uint8 ``H x W x 3``."""
    tensor = tensor.detach().float().cpu()
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected a 3 x H x W tensor, got shape {tuple(tensor.shape)}")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = (tensor * std + mean).clamp(0, 1).mul(255).round().byte()
    return pixels.permute(1, 2, 0).numpy()


def normalise_batch(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (or 0-255 float) ``[B, 3, H, W]`` -> float normalised with ImageNet statistics, on its device.

    The batched counterpart of :func:`image_to_tensor`, for images simulated on the training device.
    """
    if pixels.ndim != 4 or pixels.shape[1] not in (1, 3):
        raise ValueError(f"expected pixels [B, 3, H, W] (or [B, 1, H, W]), got {tuple(pixels.shape)}")
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std
