"""Evaluate a checkpoint on a category's test split: metrics, per-image scores and figures.

``evaluate_checkpoint`` writes to its output folder:

- ``metrics.json``   image AUROC, pixel AUROC, AU-PRO (FPR <= 0.3), counts, timing
- ``scores.csv``     one row per test image: file, defect type, label, image score
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


def input_size(payload: dict) -> tuple[int, int | None]:
    """(resize side, center crop or None) the checkpoint's model was trained with."""
    train_config = payload.get("train_config", {})
    return int(train_config.get("image_size", 256)), train_config.get("center_crop")


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


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path,
    category: str,
    out_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 16,
    figures: bool = True,
    progress: bool = True,
) -> dict:
    """Evaluate ``checkpoint`` on ``data_root/category/test``; returns (and writes) the metrics."""
    model, payload = load_model(checkpoint, device)
    image_size, center_crop = input_size(payload)
    files = scan_category(data_root, category, require_test=True)
    labels = {item.label for item in files.test}
    if labels != {0, 1}:
        missing = "test/good" if 0 not in labels else "a test/<defect> folder (with ground_truth masks)"
        raise ValueError(
            f"{files.root / category / 'test'} needs both good and defective images for the metrics; {missing} is missing"
        )
    dataset = EvaluationSet(files, image_size, center_crop)
    model_device = next(model.parameters()).device
    predictions = predict_dataset(
        model, dataset, batch_size=batch_size, progress=progress, autocast=lambda: autocast_for(payload, model_device)
    )

    metrics = {
        "category": category,
        "checkpoint": str(checkpoint),
        **compute_metrics(predictions),
        "n_images": int(len(predictions.labels)),
        "n_good": int((predictions.labels == 0).sum()),
        "n_defective": int(predictions.labels.sum()),
        "image_size": int(center_crop or image_size),
        "training_steps": int(payload.get("step", 0)),
        "backbone": payload.get("backbone", payload.get("train_config", {}).get("backbone_weights", "unknown")),
        "seconds": round(predictions.seconds, 3),
        "images_per_second": round(predictions.images_per_second, 2),
        "device": str(next(model.parameters()).device),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_scores_csv(out / "scores.csv", predictions)
        if figures:
            from memseg_lite.evaluation import report

            report.save_all_figures(out, predictions, dataset, metrics)
    return metrics


def write_scores_csv(path: Path, predictions: Predictions) -> None:
    with atomic_output(path) as temporary, temporary.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "defect", "label", "score"])
        for p, d, l, s in zip(predictions.paths, predictions.defects, predictions.labels, predictions.scores):
            writer.writerow([p, d, int(l), f"{float(s):.6f}"])
