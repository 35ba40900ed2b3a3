"""Anomaly-map overlays and mask outlines: the pictures evaluation, prediction and the notebooks share."""

from __future__ import annotations

import cv2
import matplotlib
import numpy as np

from memseg_lite.core.transforms import ensure_rgb


def heatmap_overlay(
    image: np.ndarray, anomaly_map: np.ndarray, alpha: float = 0.5, vmax: float | None = 1.0
) -> np.ndarray:
    """Blend a jet-coloured anomaly map over an image: uint8 ``H x W x 3``.

    ``anomaly_map`` is float ``H x W`` (resized to the image if needed); values are scaled by
    ``vmax`` (``None``: by the map's own maximum).
    """
    image = ensure_rgb(np.asarray(image))
    height, width = image.shape[:2]
    anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
    if anomaly_map.shape != (height, width):
        anomaly_map = cv2.resize(anomaly_map, (width, height), interpolation=cv2.INTER_LINEAR)
    scale = vmax if vmax is not None else max(float(anomaly_map.max()), 1e-8)
    colours = matplotlib.colormaps["jet"](np.clip(anomaly_map / scale, 0, 1))[..., :3]
    blended = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * colours
    return (np.clip(blended, 0, 1) * 255).round().astype(np.uint8)


def draw_mask_outline(
    image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (0, 255, 0), thickness: int = 1
) -> np.ndarray:
    """Copy of ``image`` with the outline of a binary ``mask`` drawn on it."""
    image = ensure_rgb(np.asarray(image)).copy()
    mask = (np.asarray(mask) > 0).astype(np.uint8)
    if mask.shape != image.shape[:2]:
        mask = cv2.resize(mask, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(image, contours, -1, colour, thickness)
    return image
