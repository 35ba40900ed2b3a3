"""Load a trained model once, then predict numpy images or image files: verdict, scores, map, mask.

>>> inferencer = Inferencer("runs/button/best.pt")            # device="auto", backend="fast"
>>> result = inferencer.predict("photo.jpg")                   # or a uint8 array, or a list of either
>>> result.verdict, result.score, result.normalised_score, result.mask.shape

What happens to an image (the same steps as in training and evaluation):

1. :func:`preprocess`: grey to RGB, fitted to the checkpoint's input size the way it was trained
   (``train_config["resize"]``: ``"letterbox"`` keeps the aspect ratio with black borders,
   ``"stretch"`` resizes; checkpoints from before that option were stretched), optional center
   crop, ImageNet normalisation -> float ``[B, 3, H, W]``.
2. The backend turns the batch into anomaly maps ``[B, H, W]`` (probability of "defect" per pixel)
   and image scores ``[B]`` (mean of the ``top_k`` largest map values). ``backend="eager"`` is the
   eager model; the others (:data:`memseg_lite.deployment.fast.BACKENDS`; more register with
   :func:`~memseg_lite.deployment.fast.register_backend`) receive the same preprocessed tensor.
3. The map goes back to the original image's pixels (:func:`memseg_lite.core.transforms.unfit_map`);
   the verdict is ``score >= image threshold``, the mask ``map >= pixel threshold``, and the
   normalised score puts the image threshold at 0.5
   (:func:`memseg_lite.evaluation.thresholds.normalise_scores`).

Thresholds: the ``thresholds`` argument, else those stored in the checkpoint, else a
``thresholds.json`` next to it; a checkpoint without any gives scores and maps but no verdict
(``verdict`` is ``None``; run ``memseg-lite calibrate`` or retrain).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memseg_lite.core.checkpoint import input_size, resize_mode
from memseg_lite.core.io import read_image
from memseg_lite.core.runtime import resolve_device
from memseg_lite.core.sizes import parse_size
from memseg_lite.core.transforms import ensure_rgb, image_to_tensor, resize_image, unfit_map
from memseg_lite.deployment.fast import BACKENDS
from memseg_lite.evaluation.thresholds import (
    THRESHOLDS_NAME,
    Thresholds,
    load_thresholds,
    normalise_scores,
    thresholds_of,
)
from memseg_lite.network.model import load_model


@dataclass
class InferenceResult:
    """One image's prediction; maps and masks at the original image's size."""

    score: float
    normalised_score: float | None  # threshold at 0.5; None without thresholds
    verdict: str | None  # "normal" / "defective"; None without thresholds
    anomaly_map: np.ndarray  # float32 [h, w], defect probability per original pixel
    mask: np.ndarray | None  # uint8 [h, w], 255 where map >= pixel threshold; None without thresholds
    image: np.ndarray  # uint8 [h, w, 3], the input as RGB
    path: Path | None = None

    def to_record(self) -> dict:
        return {
            "path": str(self.path) if self.path is not None else None,
            "verdict": self.verdict,
            "score": round(self.score, 6),
            "normalised_score": None if self.normalised_score is None else round(self.normalised_score, 6),
            "defect_fraction": None if self.mask is None else round(float((self.mask > 0).mean()), 6),
            "height": int(self.image.shape[0]),
            "width": int(self.image.shape[1]),
        }


def preprocess(images, size, resize: str = "letterbox", center_crop: int | None = None) -> torch.Tensor:
    """uint8 images (one ``h x w [x 3]`` array, a ``[N, h, w, 3]`` array or a list of arrays of any sizes)
    -> normalised float ``[N, 3, H, W]`` at ``size`` (``S`` or ``(H, W)``), fitted by ``resize``.

    The one preprocessing function of every backend (torch, ONNX, ...).
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    elif isinstance(images, np.ndarray):
        images = [images]
    if not images:
        raise ValueError("preprocess: no images given")
    tensors = []
    for number, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise TypeError(f"preprocess: image {number} has pixels of type {image.dtype}; give uint8 (0-255)")
        tensors.append(image_to_tensor(resize_image(ensure_rgb(image), size, center_crop, mode=resize)))
    return torch.stack(tensors)


# Backends (preprocessed batch -> anomaly maps [B, H, W], image scores [B]): the one registry of
# memseg_lite.deployment.fast ("fast", the default: the fastest exact backend installed).
Backend = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Inferencer:
    """A trained model, loaded once, that predicts numpy images or image files (see the module docstring)."""

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        device: str = "auto",
        backend: str = "fast",
        thresholds: Thresholds | str | os.PathLike | None = None,
        batch_size: int = 8,
        threads: int | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; available: {sorted(BACKENDS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.checkpoint = Path(checkpoint)
        self.device = resolve_device(device)
        self.model, self.payload = load_model(self.checkpoint, self.device)
        self.size, self.center_crop = input_size(self.payload)
        self.resize = resize_mode(self.payload)
        self.backend_name = backend
        # threads: torch's (and ONNX Runtime's / OpenVINO's) threads; 1 for one image per call on a shared CPU.
        self.backend = BACKENDS[backend](
            self.model, self.payload, self.device, checkpoint=self.checkpoint, threads=threads
        )
        self.batch_size = batch_size
        self.thresholds = self._find_thresholds(thresholds)

    def provenance(self) -> dict:
        """What made these predictions: checkpoint (name and SHA-256), step, thresholds, backend, time (UTC)."""
        import datetime
        import hashlib

        digest = hashlib.sha256(self.checkpoint.read_bytes()).hexdigest() if self.checkpoint.is_file() else None
        return {
            "checkpoint": self.checkpoint.name, "checkpoint_sha256": digest, "step": self.payload.get("step"),
            "thresholds": None if self.thresholds is None else {
                "image": self.thresholds.image, "pixel": self.thresholds.pixel, "source": self.thresholds.source,
                # which rule chose the image threshold (F1-optimal, a target recall, a false-alarm rate, ...)
                "image_rule": self.thresholds.details.get("image_rule"), "rule": self.thresholds.rule,
                **{key: self.thresholds.details[key] for key in ("target_recall", "max_false_alarm_rate")
                   if key in self.thresholds.details}},
            "backend": self.backend_name, "backend_ran": getattr(self.backend, "name", type(self.backend).__name__),
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }

    def _find_thresholds(self, given) -> Thresholds | None:
        if isinstance(given, Thresholds):
            return given
        if given is not None:
            return load_thresholds(given)
        stored = thresholds_of(self.payload)
        if stored is not None:
            return stored
        beside = self.checkpoint.parent / THRESHOLDS_NAME
        return load_thresholds(beside) if beside.is_file() else None

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the network input."""
        return (self.center_crop, self.center_crop) if self.center_crop else parse_size(self.size)

    def preprocess(self, images) -> torch.Tensor:
        """:func:`preprocess` with this checkpoint's size, resize mode and center crop."""
        return preprocess(images, self.size, self.resize, self.center_crop)

    def _to_original(self, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        if self.center_crop:  # the crop's map sits in the middle of the resized frame; zeros outside
            height, width = parse_size(self.size)
            frame = np.zeros((height, width), dtype=np.float32)
            top, left = (height - self.center_crop) // 2, (width - self.center_crop) // 2
            frame[top : top + self.center_crop, left : left + self.center_crop] = values
            values = frame
        return unfit_map(values, shape, self.resize)

    def predict_arrays(
        self, images: Sequence[np.ndarray], paths: Sequence[Path | None] | None = None
    ) -> list[InferenceResult]:
        """Predict uint8 images (``h x w`` or ``h x w x 3``, any sizes), in batches of ``batch_size``."""
        images = [ensure_rgb(np.asarray(image)) for image in images]
        paths = list(paths) if paths is not None else [None] * len(images)
        results = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            maps, scores = self.backend(self.preprocess(chunk))
            for offset, (image, values, score) in enumerate(zip(chunk, maps.numpy(), scores.numpy(), strict=True)):
                results.append(self._result(image, values, float(score), paths[start + offset]))
        return results

    def _result(self, image: np.ndarray, values: np.ndarray, score: float, path: Path | None) -> InferenceResult:
        anomaly_map = self._to_original(values.astype(np.float32), image.shape[:2])
        verdict = normalised = mask = None
        if self.thresholds is not None:
            verdict = self.thresholds.verdict(score)
            normalised = float(normalise_scores(score, self.thresholds.image))
            mask = np.where(anomaly_map >= self.thresholds.pixel, 255, 0).astype(np.uint8)
        return InferenceResult(score, normalised, verdict, anomaly_map, mask, image, path)

    def predict(self, inputs):
        """One input (a path or a uint8 array) -> one :class:`InferenceResult`; a list -> a list.

        A file that is missing or cannot be decoded raises ``FileNotFoundError`` / ``ValueError``
        naming it (``memseg_lite.deployment.predict`` reports such files and goes on).
        """
        single = isinstance(inputs, (str, os.PathLike, np.ndarray))
        items = [inputs] if single else list(inputs)
        images, paths = [], []
        for item in items:
            if isinstance(item, np.ndarray):
                images.append(item)
                paths.append(None)
            else:
                images.append(read_image(item))
                paths.append(Path(item))
        results = self.predict_arrays(images, paths)
        return results[0] if single else results
