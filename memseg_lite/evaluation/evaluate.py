"""Evaluate a checkpoint on a category's test split: metrics, per-image scores and figures.

``evaluate_checkpoint`` writes to its output folder:

- ``metrics.json``   image AUROC, pixel AUROC, AU-PRO (FPR <= 0.3), counts, timing; and, when the
  checkpoint has decision thresholds, precision, recall and F1 at them (image level, and pixel
  level where there are masks), with where the thresholds came from
- ``scores.csv``     one row per test image: file, defect type, label, image score (and verdict)

The test images are ``data_root/category/test`` (MVTec AD layout), or the plain folders given as
``folders={"test_good_dir": ..., "test_defect_dir": ..., "mask_dir": ...}``, or, when neither is
given, the test folders the run was trained with (``TrainConfig.test_good_dir`` ...). Defective
images without masks count for the image-level numbers only.
- ``roc.png``        image-level and pixel-level ROC curves
- ``pro.png``        the per-region-overlap curve, shaded up to the FPR limit
- ``anomaly_maps.png`` one example per defect type: image, ground truth, anomaly map
- ``best_worst.png`` the best and the worst detected defective images (by pixel AUROC)
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from memseg_lite.core.checkpoint import load_checkpoint
from memseg_lite.core.io import atomic_output, write_text_atomic
from memseg_lite.core.runtime import autocast_settings, resolve_device
from memseg_lite.core.sizes import parse_size
from memseg_lite.datasets.mvtec import EvaluationSet, scan_category


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

    @property
    def images_per_second(self) -> float:
        return len(self.labels) / max(self.seconds, 1e-9)


def load_model(checkpoint: str | Path | dict, device: str | torch.device = "auto"):
    """(model in eval mode on ``device``, checkpoint payload) from a checkpoint path or payload."""
    from memseg_lite.network.model import memseg_from_state

    payload = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    model = memseg_from_state(payload["model_config"], payload["model"])
    model = model.to(resolve_device(device)).eval()
    return model, payload


def input_size(payload: dict) -> tuple[int | tuple[int, int], int | None]:
    """(size images are fitted to: ``S`` or ``(H, W)``, center crop or None) the checkpoint's model was trained with."""
    train_config = payload.get("train_config", {})
    height, width = parse_size(train_config.get("image_size", 256))
    return (height if height == width else (height, width)), train_config.get("center_crop")


def resize_mode(payload: dict) -> str:
    """How the checkpoint's model saw other shapes: ``"letterbox"`` or ``"stretch"`` (older checkpoints)."""
    return payload.get("train_config", {}).get("resize", "stretch")


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
        pixel = precision_recall_f1(predictions.maps.ravel(), predictions.masks.ravel(), thresholds.pixel)
        result.update(pixel_precision=pixel.precision, pixel_recall=pixel.recall, pixel_f1=pixel.f1)
    return result


def autocast_for(payload: dict, device: torch.device):
    """Autocast as in training (the checkpoint's ``amp`` setting), on this device."""
    dtype, _ = autocast_settings(device, payload.get("train_config", {}).get("amp", "auto"))
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def predict_dataset(
    model, dataset, batch_size: int = 16, num_workers: int = 0, progress: bool = True, autocast=None
) -> Predictions:
    """Run ``model`` over an :class:`EvaluationSet`; maps and scores in float32 on the CPU.

    ``autocast``: a context-manager factory for the forward pass (default: none).
    """
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda")
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="evaluating", unit="batch", leave=False)
    maps, masks, labels, defects, paths = [], [], [], [], []
    started = time.perf_counter()
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        with autocast() if autocast is not None else contextlib.nullcontext():
            logits = model(images)
        maps.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
        masks.append(batch["mask"])
        labels.append(batch["label"])
        defects += list(batch["defect"])
        paths += list(batch["path"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    maps_tensor = torch.cat(maps)
    return Predictions(
        maps=maps_tensor.numpy(),
        scores=model.image_score(maps_tensor).numpy().astype(np.float32),
        labels=torch.cat(labels).numpy().astype(np.int64),
        masks=torch.cat(masks).numpy().astype(np.uint8),
        defects=defects,
        paths=paths,
        seconds=seconds,
    )


def compute_metrics(predictions: Predictions, fpr_limit: float = 0.3) -> dict:
    from memseg_lite.evaluation.metrics import compute_all, image_auroc

    # One sort of all test pixels serves both pixel AUROC and AU-PRO.
    result = {
        name: float(value)
        for name, value in compute_all(
            predictions.scores, predictions.labels, predictions.maps, predictions.masks, fpr_limit=fpr_limit
        ).items()
    }
    result["aupro_fpr_limit"] = fpr_limit
    # Image AUROC of each defect type against the good images: which defects are hard.
    good = [i for i, d in enumerate(predictions.defects) if d == "good"]
    per_defect = {}
    for defect in sorted(set(predictions.defects) - {"good"}):
        chosen = good + [i for i, d in enumerate(predictions.defects) if d == defect]
        per_defect[defect] = float(image_auroc(predictions.scores[chosen], predictions.labels[chosen]))
    result["image_auroc_per_defect"] = per_defect
    return result


def predict_test_files(model, payload: dict, files, batch_size: int = 16, progress: bool = True):
    """(:class:`Predictions`, the :class:`EvaluationSet`) of ``model`` on ``files.test``."""
    image_size, center_crop = input_size(payload)
    dataset = EvaluationSet(files, image_size, center_crop, resize=resize_mode(payload))
    model_device = next(model.parameters()).device
    predictions = predict_dataset(
        model, dataset, batch_size=batch_size, progress=progress, autocast=lambda: autocast_for(payload, model_device)
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
) -> dict:
    """Evaluate ``checkpoint`` on labelled test images (see the module docstring); returns (and writes) the metrics."""
    from memseg_lite.evaluation.metrics import image_auroc
    from memseg_lite.evaluation.thresholds import thresholds_of

    model, payload = load_model(checkpoint, device)
    image_size, center_crop = input_size(payload)
    files = labelled_files(payload, data_root, category, folders)
    category = files.category
    predictions, dataset = predict_test_files(model, payload, files, batch_size, progress)
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
        "n_images": int(len(predictions.labels)),
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
        for p, d, l, s in zip(predictions.paths, predictions.defects, predictions.labels, predictions.scores):
            verdict = [thresholds.verdict(float(s))] if thresholds is not None else []
            writer.writerow([p, d, int(l), f"{float(s):.6f}", *verdict])


def calibrate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path | None = None,
    category: str | None = None,
    device: str = "auto",
    batch_size: int = 16,
    progress: bool = True,
    folders: dict | None = None,
    write: bool = True,
):
    """F1-optimal thresholds on labelled images (``memseg-lite calibrate``); returns the :class:`Thresholds`.

    The images are chosen as for :func:`evaluate_checkpoint`. With ``write``, the thresholds replace
    those in ``checkpoint`` (and in ``checkpoint.pt`` beside it) and in ``thresholds.json`` in its
    folder. Numbers evaluated afterwards on the same images are optimistic: calibrate on images you
    do not report on.
    """
    from memseg_lite.core.checkpoint import save_checkpoint
    from memseg_lite.evaluation.thresholds import THRESHOLDS_NAME, calibrated_thresholds, save_thresholds, thresholds_of

    checkpoint = Path(checkpoint)
    model, payload = load_model(checkpoint, device)
    files = labelled_files(payload, data_root, category, folders)
    predictions, _ = predict_test_files(model, payload, files, batch_size, progress)
    previous = thresholds_of(payload)
    with_pixels = _has_all_masks(files)
    fallback = previous.pixel if previous is not None else float(predictions.maps.max() * 0.5)
    data = sorted({str(Path(item.image).parent) for item in files.test})
    thresholds = calibrated_thresholds(
        predictions.scores, predictions.labels,
        predictions.maps if with_pixels else None, predictions.masks if with_pixels else None,
        fallback_pixel=fallback, data=", ".join(data),
    )
    if write:
        stored = load_checkpoint(checkpoint)
        save_checkpoint({**stored, "thresholds": thresholds.to_dict()}, checkpoint)
        sibling = checkpoint.parent / "checkpoint.pt"
        if sibling.is_file() and sibling.resolve() != checkpoint.resolve():
            latest = load_checkpoint(sibling)
            save_checkpoint({**latest, "thresholds": thresholds.to_dict()}, sibling)
        save_thresholds(checkpoint.parent / THRESHOLDS_NAME, thresholds)
    return thresholds
