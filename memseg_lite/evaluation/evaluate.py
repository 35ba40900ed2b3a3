"""Evaluate a checkpoint on a category's test split: metrics, per-image scores and figures.

``evaluate_checkpoint`` writes to its output folder:

- ``metrics.json``   image AUROC, pixel AUROC, AU-PRO (FPR <= 0.3), counts, timing; and, when the
  checkpoint has decision thresholds, precision, recall and F1 at them (image level, and pixel
  level where there are masks), with where the thresholds came from
- ``scores.csv``     one row per test image: file, defect type, label, image score (and verdict)
- ``roc.png``        image-level and pixel-level ROC curves
- ``pro.png``        the per-region-overlap curve, shaded up to the FPR limit
- ``anomaly_maps.png`` one example per defect type: image, ground truth, anomaly map
- ``best_worst.png`` the best and the worst detected defective images (by pixel AUROC)

The test images are ``data_root/category/test`` (MVTec AD layout), or the plain folders given as
``folders={"test_good_dir": ..., "test_defect_dir": ..., "mask_dir": ...}``, or, when neither is
given, the test folders the run was trained with (``TrainConfig.test_good_dir`` ...). Defective
images without masks count for the image-level numbers only.

**Backend.** ``backend=None`` runs the eager model (autocast as in training). Otherwise
``backend`` is a factory with the Inferencer's seam, ``backend(model, payload, device,
checkpoint=path)``, returning a callable ``batch [B, 3, H, W] -> (maps [B, H, W], scores [B])``
(float, CPU), e.g. the fast backends of :mod:`memseg_lite.deployment.fast` (this layer never
imports them; the CLI passes one in). ``metrics.json`` says which one ran (``"backend"``).

**Letterboxed images.** With ``train_config["resize"] == "letterbox"``, an image whose aspect ratio
differs from the input's gets black borders. Those padding pixels are not the product (mask 0,
map near 0) and would count as easy normal pixels, inflating pixel AUROC, AU-PRO and the pixel
precision / recall / F1. The pixel numbers are therefore computed over each image's own pixels
only, with a valid-region mask per image (:func:`memseg_lite.datasets.mvtec.valid_region`).
Why a mask rather than mapping the maps back to the original pixels
(:func:`memseg_lite.core.transforms.unfit_map`): the evaluation stays at network resolution with
nearest-resized masks, exactly as for square and stretched images, so the numbers of the two
modes are comparable and images that fill the input give bit-for-bit the numbers of before;
mapping back would resample the maps bilinearly and evaluate full-resolution masks (16x the
pixels for 1024 x 1024 MVTec AD images), a different metric.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from memseg_lite.core.checkpoint import input_size, load_checkpoint, resize_mode
from memseg_lite.core.io import atomic_output, write_text_atomic
from memseg_lite.core.runtime import autocast_for
from memseg_lite.datasets.mvtec import EvaluationSet, scan_category
from memseg_lite.network.model import load_model


@dataclass
class Predictions:
    """Everything the metrics and the figures need, for N test images of side S."""

    maps: np.ndarray  # float32 [N, S, S], anomaly probability per pixel
    scores: np.ndarray  # float32 [N], image scores
    labels: np.ndarray  # int [N], 1 = defective
    masks: np.ndarray  # uint8 [N, S, S], ground truth
    defects: list[str]
    paths: list[str]
    seconds: float
    valid: np.ndarray | None = None  # uint8 [N, S, S], 1 = the image's own pixel (0: letterbox padding)
    backend: str = "eager"  # what computed the maps (see the module docstring)

    @property
    def images_per_second(self) -> float:
        return len(self.labels) / max(self.seconds, 1e-9)

    def pixel_valid(self) -> np.ndarray | None:
        """The valid-pixel masks for the pixel metrics, or ``None`` when every pixel counts."""
        if self.valid is None or self.valid.all():
            return None
        return self.valid

    def pixel_values(self) -> tuple[np.ndarray, np.ndarray]:
        """(map values, mask values), flat, of the pixels the pixel metrics count."""
        valid = self.pixel_valid()
        if valid is None:
            return self.maps.ravel(), self.masks.ravel()
        inside = valid.astype(bool)
        return self.maps[inside], self.masks[inside]


def labelled_files(payload: dict, data_root=None, category: str | None = None, folders: dict | None = None):
    """The labelled test images to evaluate or calibrate on (see the module docstring)."""
    from memseg_lite.datasets.folder import files_for_config, scan_folders

    train_config = payload.get("train_config", {})
    name = category or train_config.get("category", "product")
    if folders and any(folders.values()):
        if not (folders.get("test_good_dir") and folders.get("test_defect_dir")):
            raise ValueError("give both --test-good DIR and --test-defect DIR (and optionally --masks DIR)")
        good = train_config.get("good_dir")  # a run trained on the MVTec AD layout has none: the list is unused here
        files = scan_folders(good or folders["test_good_dir"], folders["test_good_dir"], folders["test_defect_dir"],
                             folders.get("mask_dir"), name=name, check_overlap=bool(good))
    elif data_root is not None or category is not None:
        files = scan_category(data_root if data_root is not None else train_config.get("data_root", "data/demo"),
                              name, require_test=True)
    else:
        files = files_for_config(train_config, require_test=True)
    labels = {item.label for item in files.test}
    if labels != {0, 1}:
        if files.root / files.category == Path(files.train_good[0]).parent.parent.parent:  # MVTec AD layout
            where = files.root / files.category / "test"
            missing = "test/good" if 0 not in labels else "a test/<defect> folder (with ground_truth masks)"
        else:
            where = f"the test folders of {files.category}"
            missing = "--test-good" if 0 not in labels else "--test-defect"
        raise ValueError(f"{where} needs both good and defective images for the metrics; {missing} is missing")
    return files


def _has_all_masks(files) -> bool:
    return all(item.mask is not None for item in files.test if item.label == 1)


def threshold_metrics(predictions: Predictions, thresholds, with_pixels: bool = True) -> dict:
    """Precision, recall and F1 at the stored thresholds: image level, and pixel level when ``with_pixels``."""
    from memseg_lite.evaluation.thresholds import precision_recall_f1

    image = precision_recall_f1(predictions.scores, predictions.labels, thresholds.image)
    result = {
        "image_threshold": thresholds.image, "pixel_threshold": thresholds.pixel,
        "threshold_source": thresholds.source, "threshold_rule": thresholds.rule,
        "image_precision": image.precision, "image_recall": image.recall, "image_f1": image.f1,
    }
    if with_pixels:
        pixel = precision_recall_f1(*predictions.pixel_values(), thresholds.pixel)
        result.update(pixel_precision=pixel.precision, pixel_recall=pixel.recall, pixel_f1=pixel.f1)
    return result


def _checked_output(output, images: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A backend's ``(maps [B, H, W], scores [B])`` as float32 CPU tensors; a clear error otherwise."""
    if not (isinstance(output, (tuple, list)) and len(output) == 2):
        raise TypeError(f"backend {name} must return (anomaly maps [B, H, W], scores [B]), got {type(output).__name__}")
    maps, scores = (torch.as_tensor(value).detach().float().cpu() for value in output)
    batch, _, height, width = images.shape
    if tuple(maps.shape) != (batch, height, width) or tuple(scores.shape) != (batch,):
        raise ValueError(f"backend {name} returned maps {tuple(maps.shape)} and scores {tuple(scores.shape)} for a "
                         f"batch {tuple(images.shape)}; expected ({batch}, {height}, {width}) and ({batch},)")
    return maps, scores


def backend_name(factory, runner) -> str:
    """What ran: ``"eager"`` without a backend; else the runner's ``name`` attribute, its class name
    (a factory such as ``fast_backend`` may return one of several classes), or the factory's name."""
    if factory is None:
        return "eager"
    named = getattr(runner, "name", None)
    if isinstance(named, str) and named:
        return named
    if not callable(runner) or hasattr(runner, "__code__") or isinstance(runner, functools.partial):
        return getattr(factory, "__name__", type(factory).__name__)  # a plain function: its factory says more
    return type(runner).__name__


@torch.no_grad()
def predict_dataset(
    model, dataset, batch_size: int = 16, num_workers: int = 0, progress: bool = True, autocast=None,
    runner=None, runner_name: str = "eager",
) -> Predictions:
    """Run ``model`` over an :class:`EvaluationSet`; maps and scores in float32 on the CPU.

    ``autocast``: a context-manager factory for the forward pass (default: none).
    ``runner``: a built backend, ``runner(batch) -> (maps [B, H, W], scores [B])`` (see the module
    docstring), used instead of ``model``; ``runner_name`` is recorded as ``Predictions.backend``.
    """
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda")
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="evaluating", unit="batch", leave=False)
    maps, scores, masks, valid, labels, defects, paths = [], [], [], [], [], [], []
    started = time.perf_counter()
    for batch in loader:
        if runner is None:
            images = batch["image"].to(device, non_blocking=True)
            with autocast() if autocast is not None else contextlib.nullcontext():
                logits = model(images)
            maps.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
        else:
            batch_maps, batch_scores = _checked_output(runner(batch["image"]), batch["image"], runner_name)
            maps.append(batch_maps)
            scores.append(batch_scores)
        masks.append(batch["mask"])
        if "valid" in batch:
            valid.append(batch["valid"])
        labels.append(batch["label"])
        defects += list(batch["defect"])
        paths += list(batch["path"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    maps_tensor = torch.cat(maps)
    # The eager model's scores are computed once for all maps, as before; a backend brings its own.
    image_scores = model.image_score(maps_tensor) if runner is None else torch.cat(scores)
    return Predictions(
        maps=maps_tensor.numpy(),
        scores=image_scores.numpy().astype(np.float32),
        labels=torch.cat(labels).numpy().astype(np.int64),
        masks=torch.cat(masks).numpy().astype(np.uint8),
        defects=defects,
        paths=paths,
        seconds=seconds,
        valid=torch.cat(valid).numpy().astype(np.uint8) if valid else None,
        backend=runner_name,
    )


def compute_metrics(predictions: Predictions, fpr_limit: float = 0.3) -> dict:
    from memseg_lite.evaluation.metrics import compute_all, image_auroc

    # One sort of all test pixels serves both pixel AUROC and AU-PRO.
    # Letterbox padding is left out of the pixel metrics (see the module docstring).
    valid = predictions.pixel_valid()
    result = {
        name: float(value)
        for name, value in compute_all(
            predictions.scores, predictions.labels, predictions.maps, predictions.masks, fpr_limit=fpr_limit,
            valid=valid,
        ).items()
    }
    result["aupro_fpr_limit"] = fpr_limit
    result["padding_pixels_left_out"] = 0 if valid is None else int((valid == 0).sum())
    # Image AUROC of each defect type against the good images: which defects are hard.
    good = [i for i, d in enumerate(predictions.defects) if d == "good"]
    per_defect = {}
    for defect in sorted(set(predictions.defects) - {"good"}):
        chosen = good + [i for i, d in enumerate(predictions.defects) if d == defect]
        per_defect[defect] = float(image_auroc(predictions.scores[chosen], predictions.labels[chosen]))
    result["image_auroc_per_defect"] = per_defect
    return result


def predict_test_files(model, payload: dict, files, batch_size: int = 16, progress: bool = True,
                       backend=None, checkpoint=None):
    """(:class:`Predictions`, the :class:`EvaluationSet`) of ``model`` on ``files.test``.

    ``backend``: ``None`` (the eager model) or a factory ``backend(model, payload, device,
    checkpoint=checkpoint)`` (see the module docstring); it is built once, before the timing starts.
    """
    image_size, center_crop = input_size(payload)
    dataset = EvaluationSet(files, image_size, center_crop, resize=resize_mode(payload))
    model_device = next(model.parameters()).device
    runner = None
    if backend is not None:
        if not callable(backend):
            raise TypeError(f"backend must be None or a factory backend(model, payload, device, checkpoint=...), "
                            f"got {backend!r}")
        runner = backend(model, payload, model_device, checkpoint=checkpoint)
        if not callable(runner):
            raise TypeError(
                f"backend factory {getattr(backend, '__name__', backend)!r} returned {type(runner).__name__}, "
                "not a callable batch -> (maps, scores)"
            )
    predictions = predict_dataset(
        model, dataset, batch_size=batch_size, progress=progress, autocast=lambda: autocast_for(payload, model_device),
        runner=runner, runner_name=backend_name(backend, runner),
    )
    return predictions, dataset


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path | None = None,
    category: str | None = None,
    out_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 16,
    figures: bool = True,
    progress: bool = True,
    folders: dict | None = None,
    backend=None,
) -> dict:
    """Evaluate ``checkpoint`` on labelled test images (see the module docstring); returns (and writes) the metrics.

    ``backend``: ``None`` (the eager model) or a backend factory (see the module docstring).
    """
    from memseg_lite.evaluation.metrics import image_auroc
    from memseg_lite.evaluation.thresholds import thresholds_of

    model, payload = load_model(checkpoint, device)
    image_size, center_crop = input_size(payload)
    files = labelled_files(payload, data_root, category, folders)
    category = files.category
    predictions, dataset = predict_test_files(model, payload, files, batch_size, progress, backend=backend,
                                              checkpoint=checkpoint)
    with_pixels = _has_all_masks(files)
    if with_pixels:
        quality = compute_metrics(predictions)
    else:
        quality = {"image_auroc": float(image_auroc(predictions.scores, predictions.labels)), "pixel_auroc": None,
                   "aupro": None, "note": "defective images without masks: image-level numbers only"}
    thresholds = thresholds_of(payload)
    at_threshold = threshold_metrics(predictions, thresholds, with_pixels) if thresholds is not None else {
        "threshold_source": None, "note_thresholds": "the checkpoint has no thresholds (trained before they existed); "
        "run memseg-lite calibrate"}

    metrics = {
        "category": category,
        "checkpoint": str(checkpoint),
        **quality,
        **at_threshold,
        "n_images": len(predictions.labels),
        "n_good": int((predictions.labels == 0).sum()),
        "n_defective": int(predictions.labels.sum()),
        "image_size": center_crop or (list(image_size) if isinstance(image_size, tuple) else int(image_size)),
        "training_steps": int(payload.get("step", 0)),
        "backbone": payload.get("backbone", payload.get("train_config", {}).get("backbone_weights", "unknown")),
        # "procedural" means DTD was missing and the built-in textures stood in (a fallback worth seeing in results)
        "textures": payload.get("textures", {}).get("kind", "unknown"),
        "seconds": round(predictions.seconds, 3),
        "images_per_second": round(predictions.images_per_second, 2),
        "device": str(next(model.parameters()).device),
        "backend": predictions.backend,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_scores_csv(out / "scores.csv", predictions, thresholds)
        if figures and with_pixels:
            from memseg_lite.evaluation import report

            report.save_all_figures(out, predictions, dataset, metrics)
    return metrics


def write_scores_csv(path: Path, predictions: Predictions, thresholds=None) -> None:
    """One row per test image; with ``thresholds`` also the verdict at the image threshold."""
    with atomic_output(path) as temporary, temporary.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "defect", "label", "score"] + (["verdict"] if thresholds is not None else []))
        rows = zip(predictions.paths, predictions.defects, predictions.labels, predictions.scores, strict=True)
        for path_name, defect, label, score in rows:
            verdict = [thresholds.verdict(float(score))] if thresholds is not None else []
            writer.writerow([path_name, defect, int(label), f"{float(score):.6f}", *verdict])


def calibrate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path | None = None,
    category: str | None = None,
    device: str = "auto",
    batch_size: int = 16,
    progress: bool = True,
    folders: dict | None = None,
    write: bool = True,
    backend=None,
    *,
    target_recall: float | None = None,
    max_false_alarm_rate: float | None = None,
):
    """F1-optimal thresholds on labelled images (``memseg-lite calibrate``); returns the :class:`Thresholds`.

    ``target_recall`` / ``max_false_alarm_rate``: choose the image threshold by that operating point
    instead (:func:`~memseg_lite.evaluation.thresholds.calibrated_thresholds`). A threshold that
    flags every good calibration image or misses every defective one raises a
    :class:`~memseg_lite.evaluation.thresholds.DegenerateThresholdWarning` naming the checkpoint
    (the messages are also in ``details["warnings"]``).

    The images are chosen as for :func:`evaluate_checkpoint`. With ``write``, the thresholds replace
    those in ``checkpoint`` only, and in the ``thresholds.json`` beside it when that file describes
    this model (:func:`calibration_targets`): another checkpoint of the run keeps its own. Numbers
    evaluated afterwards on the same images are optimistic: calibrate on images you do not report on.
    ``backend``: as for :func:`evaluate_checkpoint`. Letterbox padding pixels are left out of the pixel
    threshold's F1 (see the module docstring).
    """
    from memseg_lite.core.checkpoint import save_checkpoint
    from memseg_lite.evaluation.thresholds import (
        THRESHOLDS_NAME,
        DegenerateThresholdWarning,
        calibrated_thresholds,
        save_thresholds,
        thresholds_of,
    )

    checkpoint = Path(checkpoint)
    model, payload = load_model(checkpoint, device)
    files = labelled_files(payload, data_root, category, folders)
    predictions, _ = predict_test_files(model, payload, files, batch_size, progress, backend=backend,
                                        checkpoint=checkpoint)
    previous = thresholds_of(payload)
    with_pixels = _has_all_masks(files)
    fallback = previous.pixel if previous is not None else float(predictions.maps.max() * 0.5)
    data = sorted({str(Path(item.image).parent) for item in files.test})
    pixel_maps, pixel_masks = predictions.pixel_values() if with_pixels else (None, None)  # without padding
    thresholds = calibrated_thresholds(
        predictions.scores, predictions.labels, pixel_maps, pixel_masks, fallback_pixel=fallback, data=", ".join(data),
        target_recall=target_recall, max_false_alarm_rate=max_false_alarm_rate,
    )
    for message in thresholds.details["warnings"]:
        warnings.warn(f"calibrate {checkpoint}: {message}", DegenerateThresholdWarning, stacklevel=2)
    if write:
        stored = load_checkpoint(checkpoint)
        save_checkpoint({**stored, "thresholds": thresholds.to_dict()}, checkpoint)
        if checkpoint.parent / THRESHOLDS_NAME in calibration_targets(checkpoint):
            save_thresholds(checkpoint.parent / THRESHOLDS_NAME, thresholds)
    return thresholds


def calibration_targets(checkpoint: str | Path) -> list[Path]:
    """The files :func:`calibrate_checkpoint` writes for ``checkpoint``: the checkpoint itself, and
    the ``thresholds.json`` beside it unless that file belongs to another model of the run.

    In a run folder ``thresholds.json`` holds the thresholds of ``best.pt`` (the model ``predict``
    deploys), so calibrating the last model (``checkpoint.pt``) of a run that has a ``best.pt``
    changes only ``checkpoint.pt``.
    """
    from memseg_lite.evaluation.thresholds import THRESHOLDS_NAME

    checkpoint = Path(checkpoint)
    best = checkpoint.parent / "best.pt"
    belongs_to_another = best.is_file() and best.resolve() != checkpoint.resolve()
    return [checkpoint] if belongs_to_another else [checkpoint, checkpoint.parent / THRESHOLDS_NAME]
