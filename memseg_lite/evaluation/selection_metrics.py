"""Checkpoint selection: pixel average precision and the validation scores a run is selected by.

The AUROCs saturate early on synthetic validation anomalies: nearly every normal pixel is far
from every anomalous one after a few hundred steps, so the area under the ROC curve sits at
0.99x while the maps still improve. Two measures keep moving:

- **pixel average precision** (AP): the area under the precision-recall curve of all pixels,
  as a step sum over the distinct scores :math:`t_1 > t_2 > \\dots` (highest first):

  .. math:: \\mathrm{AP} = \\sum_n (R_n - R_{n-1})\\, P_n, \\qquad R_0 = 0,

  with precision :math:`P_n` and recall :math:`R_n` of the pixels scoring :math:`\\ge t_n`
  (scikit-learn's ``average_precision_score``, no interpolation). Anomalous pixels are a few per
  cent, so every false positive lowers the precision: AP rewards maps that are clean outside the
  defects, which AUROC (dominated by the many easy normal pixels) barely sees.
- **AU-PRO** up to FPR 0.3 (:func:`memseg_lite.evaluation.metrics.aupro`): every defect region
  counts equally, so small regions matter as much as large ones.

:data:`SELECTION_METRICS` names the scores a run can be selected by (``TrainConfig.selection_metric``).
The default, ``"ap_aupro_mean"`` (the mean of the two), follows a measurement on demo ``mesh``
(64 px, 300 steps, random encoder; numbers in docs/own-product.md): on the old validation set the image
AUROC was exactly 0.915 at steps 160, 260, 280 and 300 (a four-way tie for best) while pixel AP,
AU-PRO and the test AU-PRO (0.50 -> 0.63) kept rising; the mean of pixel AP and AU-PRO ranked the checkpoints
like their test AU-PRO (Spearman 0.94 on either validation set).
"""

from __future__ import annotations

import numpy as np

#: Selection score name -> the validation metrics it averages.
SELECTION_METRICS: dict[str, tuple[str, ...]] = {
    "pixel_ap": ("pixel_ap",),
    "aupro": ("aupro",),
    "ap_aupro_mean": ("pixel_ap", "aupro"),
    "auroc_mean": ("image_auroc", "pixel_auroc"),  # what runs were selected by before (it saturates)
}


def pixel_average_precision(anomaly_maps, masks, valid=None) -> float:
    """Average precision over all pixels of all maps (see the module docstring).

    Args:
        anomaly_maps: float scores ``[N, H, W]`` (numpy or torch, any shape matching ``masks``).
        masks: ground truth of the same shape, 0/1 or bool.
        valid: optional 0/1 of the same shape, the pixels that count (letterbox padding 0).

    Returns:
        The same number as ``sklearn.metrics.average_precision_score(masks.ravel(), maps.ravel())``
        (on the valid pixels only, when ``valid`` is given).

    Raises:
        ValueError: shapes differ, masks not 0/1, or no anomalous pixel (AP is undefined).
    """
    scores = _as_numpy(anomaly_maps).astype(np.float32, copy=False).ravel()
    truth = _as_numpy(masks)
    if truth.shape != _as_numpy(anomaly_maps).shape:
        raise ValueError(
            f"pixel AP: anomaly maps {_as_numpy(anomaly_maps).shape} and masks {truth.shape} differ in shape"
        )
    if not np.isin(truth, (0, 1)).all():
        raise ValueError("pixel AP: masks must hold only 0 and 1 (or bool)")
    if not np.isfinite(scores).all():
        raise ValueError("pixel AP: the anomaly maps contain NaN or infinite values")
    labels = truth.ravel().astype(bool)
    if valid is not None:
        inside = _as_numpy(valid)
        if inside.shape != truth.shape:
            raise ValueError(f"pixel AP: valid {inside.shape} and masks {truth.shape} differ in shape")
        inside = inside.ravel() > 0
        scores, labels = scores[inside], labels[inside]
    positives = int(labels.sum())
    if positives == 0:
        raise ValueError("pixel AP is undefined: the masks have no anomalous pixel")
    order = np.argsort(scores)[::-1]  # highest first; ties are grouped below, so their order does not matter
    sorted_scores, sorted_labels = scores[order], labels[order]
    true_positives = np.cumsum(sorted_labels, dtype=np.int64)
    flagged = np.arange(1, scores.size + 1, dtype=np.int64)
    # A threshold flags all pixels of equal score at once: keep the last pixel of each run of ties.
    last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    true_positives, flagged = true_positives[last_of_run], flagged[last_of_run]
    precision = true_positives / flagged
    recall = true_positives / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def validation_metrics(scores, labels, maps, masks, fpr_limit: float = 0.3, valid=None) -> dict[str, float]:
    """Image AUROC, pixel AUROC, pixel AP and AU-PRO (up to ``fpr_limit``) of a validation pass.

    ``valid``: optional 0/1 ``[M, H, W]``; the pixel metrics count only its pixels (letterbox padding 0).
    """
    from memseg_lite.evaluation.metrics import compute_all

    # one sort for both pixel metrics
    quality = compute_all(scores, labels, maps, masks, fpr_limit=fpr_limit, valid=valid)
    return {
        "image_auroc": float(quality["image_auroc"]),
        "pixel_auroc": float(quality["pixel_auroc"]),
        "pixel_ap": pixel_average_precision(maps, masks, valid=valid),
        "aupro": float(quality["aupro"]),
    }


def selection_score(metrics: dict, name: str) -> float:
    """The score ``name`` (:data:`SELECTION_METRICS`) of a validation record: the mean of its parts."""
    if name not in SELECTION_METRICS:
        raise ValueError(f"unknown selection metric {name!r}; choose one of {', '.join(SELECTION_METRICS)}")
    parts = SELECTION_METRICS[name]
    missing = [part for part in parts if metrics.get(part) is None]
    if missing:
        raise ValueError(f"selection metric {name!r} needs {', '.join(missing)} in the validation record")
    return float(sum(float(metrics[part]) for part in parts) / len(parts))


def _as_numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().float().cpu().numpy()
    return np.asarray(values)
