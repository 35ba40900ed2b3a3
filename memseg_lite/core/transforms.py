"""Turning uint8 images into normalised network input and back.

Anomaly simulation works on uint8 pixels; the network sees float tensors normalised with the
ImageNet statistics its encoder was trained with.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

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


def resize_image(image: np.ndarray, size: int, center_crop: int | None = None) -> np.ndarray:
    """Resize to ``size x size`` (area interpolation when shrinking), then optionally center-crop."""
    height, width = image.shape[:2]
    if (height, width) != (size, size):
        interpolation = cv2.INTER_AREA if size < min(height, width) else cv2.INTER_LINEAR
        image = cv2.resize(image, (size, size), interpolation=interpolation)
    if center_crop is not None:
        image = _center_crop(image, center_crop)
    return image


def resize_mask(mask: np.ndarray, size: int, center_crop: int | None = None) -> np.ndarray:
    """Resize a binary mask with nearest-neighbour, so it is neither eroded nor blurred."""
    mask = np.asarray(mask)
    if mask.shape[:2] != (size, size):
        mask = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
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
