"""Figures of an evaluation: ROC curves, the PRO curve, anomaly-map examples.

The pixel curves count the same pixels as the pixel metrics: each image's own, not its letterbox
padding (``Predictions.pixel_valid``, :mod:`memseg_lite.evaluation.evaluate`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from memseg_lite.core.overlays import draw_mask_outline, heatmap_overlay
from memseg_lite.core.transforms import tensor_to_image


def roc_figure(predictions, metrics: dict):
    from memseg_lite.evaluation.metrics import roc_curve

    figure, axes = plt.subplots(1, 2, figsize=(9, 4))
    fpr, tpr, _ = roc_curve(predictions.scores, predictions.labels)
    axes[0].plot(fpr, tpr, lw=2)
    axes[0].set_title(f"image ROC (AUROC {metrics['image_auroc']:.3f})")
    pixel_fpr, pixel_tpr, _ = roc_curve(*predictions.pixel_values(), max_points=2000)
    axes[1].plot(pixel_fpr, pixel_tpr, lw=2, color="tab:orange")
    axes[1].set_title(f"pixel ROC (AUROC {metrics['pixel_auroc']:.3f})")
    for axis in axes:
        axis.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        axis.set_xlabel("false positive rate")
        axis.set_ylabel("true positive rate")
        axis.set_aspect("equal")
    figure.tight_layout()
    return figure


def pro_figure(predictions, metrics: dict):
    from memseg_lite.evaluation.metrics import pro_curve

    limit = metrics.get("aupro_fpr_limit", 0.3)
    fpr, pro, _ = pro_curve(predictions.maps, predictions.masks, max_points=2000, valid=predictions.pixel_valid())
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.plot(fpr, pro, lw=2)
    inside = fpr <= limit
    axis.fill_between(fpr[inside], pro[inside], alpha=0.3, label=f"area up to FPR {limit}")
    axis.axvline(limit, ls="--", color="grey", lw=1)
    axis.set_xlabel("false positive rate (normal pixels)")
    axis.set_ylabel("per-region overlap")
    axis.set_title(f"PRO curve (AU-PRO {metrics['aupro']:.3f})")
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def per_image_pixel_auroc(predictions) -> dict[int, float]:
    """Pixel AUROC of each defective image over its own pixels (ranks how well each defect was found)."""
    from memseg_lite.evaluation.metrics import pixel_auroc

    valid = predictions.pixel_valid()
    result = {}
    for index in np.flatnonzero(predictions.labels == 1):
        inside = np.ones(predictions.masks[index].shape, dtype=bool) if valid is None else valid[index] > 0
        mask = predictions.masks[index][inside]
        if 0 < mask.sum() < mask.size:
            where = None if valid is None else valid[index][None]
            result[int(index)] = float(
                pixel_auroc(predictions.maps[index][None], predictions.masks[index][None], valid=where)
            )
    return result


def examples_figure(predictions, images: dict[int, np.ndarray], indices: list[int], titles: list[str]):
    """Rows of (image with ground-truth outline, anomaly map, overlay) for the chosen test images."""
    figure, axes = plt.subplots(len(indices), 3, figsize=(7.5, 2.6 * len(indices)), squeeze=False)
    for row, (index, title) in enumerate(zip(indices, titles, strict=True)):
        image = images[index]
        anomaly_map = predictions.maps[index]
        axes[row, 0].imshow(draw_mask_outline(image, predictions.masks[index]))
        axes[row, 0].set_title(f"{title}\nscore {predictions.scores[index]:.3f}", fontsize=8)
        axes[row, 1].imshow(anomaly_map, cmap="jet", vmin=0, vmax=1)
        axes[row, 1].set_title("anomaly map", fontsize=8)
        axes[row, 2].imshow(draw_mask_outline(heatmap_overlay(image, anomaly_map), predictions.masks[index]))
        axes[row, 2].set_title("overlay (green: ground truth)", fontsize=8)
        for axis in axes[row]:
            axis.set_axis_off()
    figure.tight_layout()
    return figure


def save_all_figures(out: Path, predictions, dataset, metrics: dict) -> list[Path]:

    written = []

    def save(figure, name: str) -> None:
        path = out / name
        try:
            figure.savefig(path, dpi=110)
        finally:
            plt.close(figure)
        written.append(path)

    save(roc_figure(predictions, metrics), "roc.png")
    if predictions.masks.any() and (predictions.masks == 0).any():
        save(pro_figure(predictions, metrics), "pro.png")

    # One example per defect type (the median-scored one) plus one good image.
    chosen, titles = [], []
    for defect in sorted(set(predictions.defects)):
        members = [i for i, d in enumerate(predictions.defects) if d == defect]
        members.sort(key=lambda i: predictions.scores[i])
        chosen.append(members[len(members) // 2])
        titles.append(f"{defect}: {Path(predictions.paths[chosen[-1]]).name}")
    images = {i: display_image(dataset, i) for i in chosen}
    save(examples_figure(predictions, images, chosen, titles), "anomaly_maps.png")

    ranked = per_image_pixel_auroc(predictions)
    if len(ranked) >= 2:
        order = sorted(ranked, key=ranked.get)
        count = min(3, len(order) // 2)
        picks = order[::-1][:count] + order[:count]
        labels = [f"best {k + 1}" for k in range(count)] + [f"worst {k + 1}" for k in range(count)]
        picture = {i: display_image(dataset, i) for i in picks}
        titles = [
            f"{label}: {predictions.defects[i]} (pixel AUROC {ranked[i]:.3f})"
            for label, i in zip(labels, picks, strict=True)
        ]
        save(examples_figure(predictions, picture, picks, titles), "best_worst.png")
    return written


def display_image(dataset, index: int) -> np.ndarray:
    """The test image at ``index`` of an :class:`~memseg_lite.datasets.mvtec.EvaluationSet` as uint8 RGB at
    network resolution (for figures)."""
    return tensor_to_image(dataset[index]["image"])
