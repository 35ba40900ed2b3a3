r"""Decision thresholds: when is an image defective, and which pixels are the defect.

MemSeg gives a probability map $A \in [0, 1]^{H \times W}$ per image and an image score $s$ (the
mean of the ``top_k`` largest map values). A verdict needs two numbers, stored with every run
(``thresholds.json`` in the run folder and a ``"thresholds"`` entry in ``best.pt`` and
``checkpoint.pt``):

- the **image threshold** $t$: the image is *defective* when $s \ge t$;
- the **pixel threshold** $t_p$: the defect mask is $\{(i, j) : A_{ij} \ge t_p\}$.

**Without defective images** (the usual start: a folder of good photos) the thresholds come from
the validation set the trainer already has: held-out good images (never trained on, not in the
memory bank) and the same images with synthetic anomalies (:func:`validation_thresholds`):

- $t$ = the ``quantile`` (default 0.99, i.e. about the largest) of the held-out **good** images'
  scores, times a ``margin`` (default 1.0). The false-alarm rate on good images is what this rule
  controls, and good images are the one thing whose distribution at deployment is the same as in
  validation; it does not depend on how realistic the synthetic anomalies are. It is
  conservative: with about 10 held-out images it sits near their largest score, so it favours
  precision over recall. The alternative, an F1-optimal threshold on the *synthetic* anomalies,
  depends on how the synthetic anomalies score; measured once (demo ``mesh``, 64 px, 120 steps,
  test split) it was the better of the two (F1 0.68 against 0.43 for this rule, whose precision
  was 1.0 and recall 0.28). One short run is weak evidence either way: with a few labelled
  defects, ``memseg-lite calibrate`` (below) is the way to a good threshold.
- $t_p$ = the F1-optimal pixel threshold on the validation set's synthetic anomaly masks: this is
  about the *shape* of the mask (where does the defect stop), which the synthetic masks do
  describe, and the pixel F1 is not swamped by the many good pixels the way a quantile is.

**With labelled defects** (``memseg-lite calibrate``: ``--test-good`` / ``--test-defect`` folders or
an MVTec AD test split), both thresholds are F1-optimal on those images (:func:`f1_optimal_threshold`,
as anomalib's adaptive threshold): of all cuts between consecutive distinct scores, the one with
the largest $F_1 = 2PR / (P + R)$, placed half-way between the two scores. Numbers reported on
the images a threshold was tuned on are optimistic: calibrate on one part, report on another.

**Normalised scores** (:func:`normalise_scores`) put the threshold at 0.5 with a piecewise-linear
map that keeps $[0, 1]$:

$$ \tilde s = \begin{cases} 0.5\, s / t & s < t \\ 0.5 + 0.5\, (s - t) / (1 - t) & s \ge t \end{cases} $$

so $\tilde s \ge 0.5$ exactly when the verdict is *defective*, and the ordering of scores (hence the
AUROC) is unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

THRESHOLDS_NAME = "thresholds.json"
DEFAULT_QUANTILE = 0.99


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and the precision, recall and F1 it gives on the data it was chosen on."""

    threshold: float
    precision: float
    recall: float
    f1: float


@dataclass
class Thresholds:
    """The image and pixel thresholds of a run, and where they came from."""

    image: float
    pixel: float
    source: str  # "validation" (good + synthetic) or "calibration" (labelled images)
    rule: str  # how they were chosen, in words
    details: dict = field(default_factory=dict)  # counts, the data used, F1 on it, ...

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Thresholds:
        missing = {"image", "pixel"} - set(data)
        if missing:
            raise ValueError(f"thresholds need the entries {sorted(missing)}; got {sorted(data)}")
        return cls(
            image=float(data["image"]), pixel=float(data["pixel"]), source=str(data.get("source", "unknown")),
            rule=str(data.get("rule", "")), details=dict(data.get("details", {})),
        )

    def verdict(self, score: float) -> str:
        return "defective" if score >= self.image else "normal"


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------
def _check(scores, labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{what}: {scores.size} scores but {labels.size} labels")
    if scores.size == 0:
        raise ValueError(f"{what}: no scores given")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{what}: the scores contain NaN or infinite values")
    return scores, labels.astype(bool)


def precision_recall_f1(scores, labels, threshold: float) -> ThresholdChoice:
    """Precision, recall and F1 of the rule ``score >= threshold`` (an empty class counts as 0)."""
    scores, labels = _check(scores, labels, "precision_recall_f1")
    predicted = scores >= threshold
    true_positives = int(np.sum(predicted & labels))
    n_predicted, n_positive = int(predicted.sum()), int(labels.sum())
    precision = true_positives / n_predicted if n_predicted else 0.0
    recall = true_positives / n_positive if n_positive else 0.0
    f1 = 2 * true_positives / (n_predicted + n_positive) if n_predicted + n_positive else 0.0
    return ThresholdChoice(float(threshold), float(precision), float(recall), float(f1))


def f1_optimal_threshold(scores, labels) -> ThresholdChoice:
    """The threshold with the largest F1 for the rule ``score >= threshold``.

    Every cut between two consecutive distinct scores is tried (one sort, cumulative counts); the
    threshold is placed half-way between the lowest score called defective and the next lower
    score (at the lowest score when every sample is called defective). Ties in F1: the higher
    threshold. ``labels`` need at least one positive.
    """
    scores, labels = _check(scores, labels, "f1_optimal_threshold")
    n_positive = int(labels.sum())
    if n_positive == 0:
        raise ValueError("f1_optimal_threshold needs at least one defective (positive) sample")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # Cut after index k (the top k+1 called defective), only where the next score is lower.
    last_of_run = np.r_[sorted_scores[1:] < sorted_scores[:-1], True]
    true_positives = np.cumsum(sorted_labels)[last_of_run]
    n_predicted = np.flatnonzero(last_of_run) + 1
    f1 = 2 * true_positives / (n_predicted + n_positive)
    best = int(np.argmax(f1))  # first maximum: the highest threshold among ties
    cut = n_predicted[best] - 1
    lowest_called = sorted_scores[cut]
    threshold = 0.5 * (lowest_called + sorted_scores[cut + 1]) if cut + 1 < scores.size else lowest_called
    precision = true_positives[best] / n_predicted[best]
    recall = true_positives[best] / n_positive
    return ThresholdChoice(float(threshold), float(precision), float(recall), float(f1[best]))


def quantile_threshold(good_scores, quantile: float = DEFAULT_QUANTILE, margin: float = 1.0) -> float:
    """``margin`` x the ``quantile`` of the good images' scores (linear interpolation)."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    good = np.asarray(good_scores, dtype=np.float64).ravel()
    if good.size == 0:
        raise ValueError("quantile_threshold needs the scores of at least one good image")
    return float(min(1.0, margin * np.quantile(good, quantile)))


def normalise_scores(scores, threshold: float) -> np.ndarray:
    """Map scores in [0, 1] so that ``threshold`` sits at 0.5 (see the module docstring); float64 array."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1) to normalise scores, got {threshold}")
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    return np.where(scores < threshold, 0.5 * scores / threshold, 0.5 + 0.5 * (scores - threshold) / (1 - threshold))


def _open_interval(value: float) -> float:
    """Keep a threshold strictly inside (0, 1), so normalisation is defined."""
    return float(np.clip(value, 1e-6, 1 - 1e-6))


# --------------------------------------------------------------------------------------------
# The two ways a run gets its thresholds
# --------------------------------------------------------------------------------------------
def validation_thresholds(
    scores, labels, maps, masks, quantile: float = DEFAULT_QUANTILE, margin: float = 1.0
) -> Thresholds:
    """Thresholds from the validation set (good images + synthetic anomalies); no real defects needed.

    ``scores``/``labels``: ``[M]`` image scores and 0/1 labels (1 = synthetic anomaly);
    ``maps``/``masks``: ``[M, H, W]`` anomaly maps and synthetic masks. Rule: see the module docstring.
    """
    scores, labels = _check(scores, labels, "validation_thresholds")
    if not (~labels).any():
        raise ValueError("validation_thresholds needs at least one good validation image")
    image = _open_interval(quantile_threshold(scores[~labels], quantile, margin))
    maps, masks = np.asarray(maps, dtype=np.float32), np.asarray(masks) > 0
    pixel = f1_optimal_threshold(maps.ravel(), masks.ravel())
    on_validation = precision_recall_f1(scores, labels, image)
    return Thresholds(
        image=image,
        pixel=_open_interval(pixel.threshold),
        source="validation",
        rule=(f"image: {quantile} quantile x {margin} of the held-out good images' scores; "
              "pixel: F1-optimal on the synthetic anomaly masks"),
        details={
            "n_good": int((~labels).sum()), "n_synthetic": int(labels.sum()), "quantile": quantile, "margin": margin,
            "synthetic_image_precision": on_validation.precision, "synthetic_image_recall": on_validation.recall,
            "synthetic_image_f1": on_validation.f1, "pixel_f1": pixel.f1,
        },
    )


def calibrated_thresholds(scores, labels, maps=None, masks=None, fallback_pixel: float | None = None,
                          data: str = "") -> Thresholds:
    """F1-optimal image threshold (and pixel threshold, when masks are given) on labelled images.

    Without masks the pixel threshold is ``fallback_pixel`` (e.g. the run's validation one).
    ``data`` says which images were used; it is kept in ``details``.
    """
    scores, labels = _check(scores, labels, "calibrated_thresholds")
    if labels.all() or not labels.any():
        raise ValueError("calibration needs both good and defective images (labels 0 and 1)")
    image = f1_optimal_threshold(scores, labels)
    details = {"data": data, "n_good": int((~labels).sum()), "n_defective": int(labels.sum()),
               "image_precision": image.precision, "image_recall": image.recall, "image_f1": image.f1}
    if maps is not None and masks is not None:
        pixel_choice = f1_optimal_threshold(np.asarray(maps, dtype=np.float32).ravel(), np.asarray(masks).ravel() > 0)
        pixel, pixel_rule = pixel_choice.threshold, "F1-optimal on the defect masks"
        details["pixel_f1"] = pixel_choice.f1
    elif fallback_pixel is not None:
        pixel, pixel_rule = fallback_pixel, "kept from before (no masks given)"
    else:
        raise ValueError("without masks, calibrated_thresholds needs fallback_pixel")
    return Thresholds(
        image=_open_interval(image.threshold), pixel=_open_interval(pixel), source="calibration",
        rule=f"image: F1-optimal on labelled images; pixel: {pixel_rule}", details=details,
    )


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def save_thresholds(path: str | os.PathLike, thresholds: Thresholds) -> Path:
    """Write ``thresholds.json`` atomically."""
    from memseg_lite.core.io import write_text_atomic

    return write_text_atomic(path, json.dumps(thresholds.to_dict(), indent=2) + "\n")


def load_thresholds(path: str | os.PathLike) -> Thresholds:
    """Read a ``thresholds.json``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no thresholds file at {path}; train the run to the end, or run memseg-lite calibrate")
    try:
        return Thresholds.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError, TypeError) as error:
        raise ValueError(f"cannot read thresholds file {path}: {error}; delete it and run memseg-lite calibrate") from None


def thresholds_of(payload: dict) -> Thresholds | None:
    """The thresholds stored in a checkpoint payload, or ``None`` (checkpoints from before thresholds)."""
    stored = payload.get("thresholds")
    return Thresholds.from_dict(stored) if stored else None
