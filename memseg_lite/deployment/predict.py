"""Anomaly maps and scores for arbitrary images (``memseg-lite predict``)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memseg_lite.core.io import atomic_output, read_image, write_image
from memseg_lite.core.overlays import heatmap_overlay
from memseg_lite.core.transforms import ensure_rgb, image_to_tensor, resize_image
from memseg_lite.evaluation.evaluate import autocast_for, input_size, load_model


@dataclass
class Prediction:
    path: Path
    score: float
    anomaly_map: np.ndarray  # float32 [S, S]
    image: np.ndarray  # uint8 [S, S, 3], the network's view of the input
    overlay_path: Path | None = None


@torch.no_grad()
def predict_images(
    paths: list[str | os.PathLike],
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = 8,
) -> list[Prediction]:
    """Score each image with the checkpoint's model; with ``out_dir``, write overlays and scores.csv.

    Each overlay PNG shows the input, the anomaly map and their blend side by side.
    """
    if not paths:
        raise ValueError("no images given; pass one or more image files")
    model, payload = load_model(checkpoint, device)
    size, crop = input_size(payload)
    device = next(model.parameters()).device
    pixels = [resize_image(ensure_rgb(read_image(path)), size, crop) for path in paths]
    predictions = []
    for start in range(0, len(pixels), batch_size):
        chunk = pixels[start : start + batch_size]
        batch = torch.stack([image_to_tensor(p) for p in chunk]).to(device)
        with autocast_for(payload, device):
            logits = model(batch)
        maps = torch.softmax(logits.float(), dim=1)[:, 1].cpu()
        scores = model.image_score(maps)
        for offset, (image, anomaly_map, score) in enumerate(zip(chunk, maps, scores)):
            path = Path(paths[start + offset])
            predictions.append(Prediction(path, float(score), anomaly_map.numpy(), image))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        for prediction in predictions:
            name, copy = f"{prediction.path.stem}_anomaly.png", 1
            while name in used:  # the same file name in different folders
                copy += 1
                name = f"{prediction.path.stem}_anomaly_{copy}.png"
            used.add(name)
            jet = heatmap_overlay(np.zeros_like(prediction.image), prediction.anomaly_map, alpha=1.0)
            panel = np.concatenate([prediction.image, jet, heatmap_overlay(prediction.image, prediction.anomaly_map)], axis=1)
            prediction.overlay_path = write_image(out / name, panel)
        with atomic_output(out / "scores.csv") as temporary, temporary.open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["path", "score", "overlay"])
            for prediction in predictions:
                writer.writerow([str(prediction.path), f"{prediction.score:.6f}", str(prediction.overlay_path)])
    return predictions
