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

- $t = \min(q, f_w)$ (rule ``"min_good_quantile_balanced_synthetic_f1"``), the lower of two
  candidates from the same validation predictions:

  * $q$ = the ``quantile`` (default 0.99) of the held-out **good** images' scores, times a
    ``margin`` (default 1.0): the highest cut worth taking. Above the top good scores there is
    no good image left to reject, so a higher threshold only loses recall.
  * $f_w$ = the **class-balanced** F1-optimal threshold, good images against the **synthetic**
    anomalies, each good image counted $w = n_{syn} / n_{good}$ times
    (:func:`f1_optimal_threshold` with ``negative_weight``): $F_1 = 2\,TP / (2\,TP + w\,FP + FN)$.
    It knows about defects. The weight matters because F1 ignores true negatives: with several
    synthetic anomalies per good image (6 : 1 in the trainer's validation set), "everything is
    defective" already has $F_1 = 2 \cdot 6 / (7 + 6) = 0.92$, so the plain optimum drifts to the lowest
    scores and flags nearly every good image (19 of 20 on the ``wood`` test split below). The
    number of anomalies synthesised per image is a setting, not the defect rate of the line;
    the weight takes it out.

  Synthetic anomalies are blunter than real ones (at demo size many score at the maximum). When
  they separate from the good scores, $f_w$ lands in the middle of the gap, and real defects,
  which score lower, fall into it: $q$, the bottom of the gap, catches them. When they overlap,
  $f_w < q$ trades a few false alarms for recall.

  Measured on the test split of the demo data (20 good, 40 defective images per category; each
  run's ``best.pt``; ImageNet weights unavailable offline, so a randomly initialised encoder;
  procedural textures; batch 8; ``TrainConfig`` defaults otherwise), image precision / recall /
  F1 of each rule. Calling every image defective scores F1 0.80 on these splits; "false alarms"
  counts the flagged good test images (of 20). Rules: (a) $q$ alone (the rule of before);
  (b) the plain F1 optimum on synthetic anomalies; (c) the midpoint of (a) and (b); (b_w) $f_w$
  alone; (d) $\min$(a, b), equal to (b) in all four runs; (e) $\min(q, f_w)$, chosen:

  ======== === ===== =================== =================== =================== =================== ==================
  category px  steps (a) good quantile   (b) F1 on synthetic (c) midpoint a, b   (e) min(a, b_w)     F1-optimal on test
  ======== === ===== =================== =================== =================== =================== ==================
  mesh     128 300   1.00/0.88/0.93 (0)  0.89/1.00/0.94 (5)  0.95/0.90/0.92 (2)  1.00/0.88/0.93 (0)  0.91/1.00/0.95 (4)
  button   128 300   0.79/0.38/0.51 (4)  0.74/0.88/0.80 (12) 0.73/0.55/0.63 (8)  0.74/0.78/0.76 (11) 0.74/0.93/0.82 (13)
  wood     128 300   0.85/0.88/0.86 (6)  0.68/1.00/0.81 (19) 0.83/1.00/0.91 (8)  0.86/0.90/0.88 (6)  0.83/1.00/0.91 (8)
  mesh     64  120   1.00/0.42/0.60 (0)  0.69/0.95/0.80 (17) 0.84/0.68/0.75 (5)  0.86/0.75/0.80 (5)  0.87/0.82/0.85 (5)
  ======== === ===== =================== =================== =================== =================== ==================

  Cells: precision / recall / F1 (false alarms). Test image AUROC of the four runs: 0.979,
  0.680, 0.924, 0.814; validation: 10 good images + 60 synthetic anomalies (the trainer's
  validation set, ``val_recipe="hard"``). (b_w), the balanced candidate alone, equals (e) in the
  last three rows and (a) in the first. Mean F1 over the four runs: (a) 0.73, (b) 0.84,
  (c) 0.80, (e) 0.84, ceiling 0.88; false alarms in all: (a) 10, (b) 53, (c) 23, (e) 22 of 80
  good images. (e) and (b) tie on F1 - on these splits F1 pays for flagging everything - but
  (b) flagged almost every good ``wood`` and 64 px ``mesh`` image; (e) never collapses that
  way and never sits above the top good scores, where (a) found under half the defects twice. With the
  trainer's earlier validation set (20 synthetic anomalies, ``mesh`` 128 px, the same model)
  (b) gave 0.87 and (e) 0.93.

  One run per category is thin evidence, and the encoder is random;
  with a few labelled defects, ``memseg-lite calibrate`` (below) is the way to a good threshold.
- $t_p$ = the F1-optimal pixel threshold on the validation set's synthetic anomaly masks: this is
  about the *shape* of the mask (where does the defect stop), which the synthetic masks do
  describe, and the pixel F1 is not swamped by the many good pixels the way a quantile is.

**With labelled defects** (``memseg-lite calibrate``: ``--test-good`` / ``--test-defect`` folders or
an MVTec AD test split), both thresholds are F1-optimal on those images (:func:`f1_optimal_threshold`,
as anomalib's adaptive threshold): of all cuts between consecutive distinct scores, the one with
the largest $F_1 = 2PR / (P + R)$, placed half-way between the two scores. Numbers reported on
the images a threshold was tuned on are optimistic: calibrate on one part, report on another.

A line often has a requirement instead of "best F1": find at least a fraction $R$ of the defects
(``calibrate --target-recall R``: the highest threshold with recall $\ge R$,
:func:`target_recall_threshold`), or flag at most a fraction $F$ of the good parts
(``calibrate --max-false-alarm-rate F``: the lowest threshold with false-alarm rate $\le F$,
:func:`max_false_alarm_threshold`). Only the image threshold follows that rule; the pixel threshold
stays F1-optimal. ``details["image_rule"]`` records which rule chose it, and ``details["warnings"]``
when a threshold flags every good image or misses every defect on the calibration images
(:func:`degenerate_threshold_warnings`): then the images do not separate at this operating point.

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


def f1_optimal_threshold(scores, labels, negative_weight: float = 1.0) -> ThresholdChoice:
    r"""The threshold with the largest F1 for the rule ``score >= threshold``.

    Every cut between two consecutive distinct scores is tried (one sort, cumulative counts); the
    threshold is placed half-way between the lowest score called defective and the next lower
    score (at the lowest score when every sample is called defective). Ties in F1: the higher
    threshold. ``labels`` need at least one positive.

    ``negative_weight`` $w$: each negative sample counts $w$ times, i.e.
    $F_1 = 2\,TP / (2\,TP + w\,FP + FN)$ and precision $TP / (TP + w\,FP)$ (as returned).
    $w = n_{pos} / n_{neg}$ weighs both classes equally, so the optimum no longer depends on how
    many positives there are per negative (:func:`validation_thresholds`). ``1`` is plain F1.
    """
    scores, labels = _check(scores, labels, "f1_optimal_threshold")
    if not (np.isfinite(negative_weight) and negative_weight > 0):
        raise ValueError(f"negative_weight must be a positive number, got {negative_weight}")
    n_positive = int(labels.sum())
    if n_positive == 0:
        raise ValueError("f1_optimal_threshold needs at least one defective (positive) sample")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # Cut after index k (the top k+1 called defective), only where the next score is lower.
    last_of_run = np.r_[sorted_scores[1:] < sorted_scores[:-1], True]
    true_positives = np.cumsum(sorted_labels)[last_of_run]
    n_predicted = np.flatnonzero(last_of_run) + 1
    # Weighted count of what is called defective (= n_predicted when the weight is 1).
    called = n_predicted if negative_weight == 1 else true_positives + negative_weight * (n_predicted - true_positives)
    f1 = 2 * true_positives / (called + n_positive)
    best = int(np.argmax(f1))  # first maximum: the highest threshold among ties
    cut = n_predicted[best] - 1
    lowest_called = sorted_scores[cut]
    threshold = 0.5 * (lowest_called + sorted_scores[cut + 1]) if cut + 1 < scores.size else lowest_called
    precision = true_positives[best] / called[best]
    recall = true_positives[best] / n_positive
    return ThresholdChoice(float(threshold), float(precision), float(recall), float(f1[best]))


def _cuts(scores: np.ndarray, labels: np.ndarray):
    """Every cut between consecutive distinct scores, highest first: (sorted scores, index of the lowest
    score called defective, defective called, good called) per cut."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_run = np.r_[sorted_scores[1:] < sorted_scores[:-1], True]
    cut_index = np.flatnonzero(last_of_run)
    defective_called = np.cumsum(sorted_labels)[last_of_run]
    good_called = cut_index + 1 - defective_called
    return sorted_scores, cut_index, defective_called, good_called


def _threshold_at(sorted_scores: np.ndarray, cut: int | None) -> float:
    """Half-way between the lowest score called defective and the next lower one (as
    :func:`f1_optimal_threshold`); ``cut=None``: above every score (nothing called)."""
    if cut is None:
        top = sorted_scores[0]
        return float(0.5 * (top + 1.0)) if top < 1.0 else float(np.nextafter(top, np.inf))
    if cut + 1 < sorted_scores.size:
        return float(0.5 * (sorted_scores[cut] + sorted_scores[cut + 1]))
    return float(sorted_scores[cut])


def target_recall_threshold(scores, labels, target_recall: float) -> ThresholdChoice:
    r"""The highest threshold whose recall on the defective samples is at least ``target_recall``.

    ``target_recall`` $R \in (0, 1]$. Of all cuts between consecutive distinct scores, the one that calls
    the fewest samples defective while catching $\ge R$ of the defective ones; the threshold is placed
    half-way to the next lower score, as in :func:`f1_optimal_threshold` (the same images are called).
    """
    scores, labels = _check(scores, labels, "target_recall_threshold")
    if not (np.isfinite(target_recall) and 0 < target_recall <= 1):
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    n_defective = int(labels.sum())
    if n_defective == 0:
        raise ValueError("target_recall_threshold needs at least one defective (positive) sample")
    sorted_scores, cut_index, defective_called, _ = _cuts(scores, labels)
    # A tiny tolerance: R = 0.3 of 10 defects must accept 3 (3 / 10 < 0.3 in floating point).
    reached = np.flatnonzero(defective_called / n_defective >= target_recall - 1e-12)
    threshold = _threshold_at(sorted_scores, int(cut_index[reached[0]]))  # highest cut that reaches R
    return precision_recall_f1(scores, labels, threshold)


def max_false_alarm_threshold(scores, labels, max_false_alarm_rate: float) -> ThresholdChoice:
    r"""The lowest threshold whose false-alarm rate (good samples called defective) is at most ``max_false_alarm_rate``.

    ``max_false_alarm_rate`` $F \in [0, 1)$. Of all cuts between consecutive distinct scores, the one that
    calls the most samples defective while flagging $\le F$ of the good ones (above every score when even
    the top score is a good sample's and $F$ allows none); placed as in :func:`target_recall_threshold`.
    """
    scores, labels = _check(scores, labels, "max_false_alarm_threshold")
    if not (np.isfinite(max_false_alarm_rate) and 0 <= max_false_alarm_rate < 1):
        raise ValueError(f"max_false_alarm_rate must be in [0, 1), got {max_false_alarm_rate}")
    n_good = int((~labels).sum())
    if n_good == 0:
        raise ValueError("max_false_alarm_threshold needs at least one good (negative) sample")
    sorted_scores, cut_index, _, good_called = _cuts(scores, labels)
    allowed = np.flatnonzero(good_called / n_good <= max_false_alarm_rate + 1e-12)
    threshold = _threshold_at(sorted_scores, int(cut_index[allowed[-1]]) if allowed.size else None)
    return precision_recall_f1(scores, labels, threshold)


def false_alarm_rate(scores, labels, threshold: float) -> float:
    """The fraction of the good samples (label 0) with ``score >= threshold``."""
    scores, labels = _check(scores, labels, "false_alarm_rate")
    good = scores[~labels]
    return float(np.mean(good >= threshold)) if good.size else 0.0


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
#: The name of :func:`validation_thresholds`' image rule, stored in ``details["image_rule"]``.
VALIDATION_IMAGE_RULE = "min_good_quantile_balanced_synthetic_f1"


def validation_thresholds(
    scores, labels, maps, masks, quantile: float = DEFAULT_QUANTILE, margin: float = 1.0, *, valid=None
) -> Thresholds:
    """Thresholds from the validation set (good images + synthetic anomalies); no real defects needed.

    ``scores``/``labels``: ``[M]`` image scores and 0/1 labels (1 = synthetic anomaly);
    ``maps``/``masks``: ``[M, H, W]`` anomaly maps and synthetic masks; ``valid``: optional
    ``[M, H, W]`` 0/1, the pixels that are the images' own (letterbox padding 0), the only ones the
    pixel threshold is fitted on. Rule (image: the lower of the good images' ``quantile`` x
    ``margin`` and the class-balanced F1-optimal threshold on the synthetic anomalies; pixel:
    F1-optimal on the synthetic masks): see the module docstring. Both candidates, the rule's
    name and which candidate was lower are kept in ``details``.
    """
    scores, labels = _check(scores, labels, "validation_thresholds")
    if not (~labels).any():
        raise ValueError("validation_thresholds needs at least one good validation image")
    if not labels.any():
        raise ValueError("validation_thresholds needs at least one synthetic anomaly (label 1) in the validation set")
    good_quantile = quantile_threshold(scores[~labels], quantile, margin)
    # Each good image counts n_synthetic / n_good times: both classes weigh the same, whatever the
    # number of anomalies synthesised per image (see the module docstring).
    good_weight = float(labels.sum() / (~labels).sum())
    synthetic_f1 = f1_optimal_threshold(scores, labels, negative_weight=good_weight)
    image = _open_interval(min(good_quantile, synthetic_f1.threshold))
    chosen = "good_quantile" if good_quantile <= synthetic_f1.threshold else "synthetic_f1"
    maps, masks = np.asarray(maps, dtype=np.float32), np.asarray(masks) > 0
    if maps.shape != masks.shape:
        raise ValueError(f"validation_thresholds: maps {maps.shape} and masks {masks.shape} differ in shape")
    if valid is None:
        pixel = f1_optimal_threshold(maps.ravel(), masks.ravel())
    else:
        inside = np.asarray(valid) > 0
        if inside.shape != maps.shape:
            raise ValueError(f"validation_thresholds: valid {inside.shape} and maps {maps.shape} differ in shape")
        pixel = f1_optimal_threshold(maps[inside], masks[inside])
    on_validation = precision_recall_f1(scores, labels, image)
    return Thresholds(
        image=image,
        pixel=_open_interval(pixel.threshold),
        source="validation",
        rule=(f"image: the lower of the {quantile} quantile x {margin} of the held-out good images' scores and "
              "the class-balanced F1-optimal threshold on the synthetic anomalies; "
              "pixel: F1-optimal on the synthetic anomaly masks"),
        details={
            "image_rule": VALIDATION_IMAGE_RULE, "image_rule_chosen": chosen,
            "good_quantile_threshold": float(good_quantile), "synthetic_f1_threshold": synthetic_f1.threshold,
            "good_weight": good_weight,
            "n_good": int((~labels).sum()), "n_synthetic": int(labels.sum()), "quantile": quantile, "margin": margin,
            "synthetic_image_precision": on_validation.precision, "synthetic_image_recall": on_validation.recall,
            "synthetic_image_f1": on_validation.f1, "pixel_f1": pixel.f1,
        },
    )


class DegenerateThresholdWarning(UserWarning):
    """A calibrated threshold flags every good image or misses every defect (:func:`degenerate_threshold_warnings`)."""


#: ``details["image_rule"]`` of :func:`calibrated_thresholds`: which rule chose the image threshold.
CALIBRATION_IMAGE_RULES = ("f1_optimal", "target_recall", "max_false_alarm_rate")


def calibrated_thresholds(scores, labels, maps=None, masks=None, fallback_pixel: float | None = None,
                          data: str = "", *, target_recall: float | None = None,
                          max_false_alarm_rate: float | None = None) -> Thresholds:
    """The image threshold (and the F1-optimal pixel threshold, when masks are given) on labelled images.

    The image threshold is F1-optimal, or, the operating point of a line, the highest one that
    finds ``target_recall`` of the defective images (:func:`target_recall_threshold`) or the lowest
    one that flags at most ``max_false_alarm_rate`` of the good ones (:func:`max_false_alarm_threshold`);
    at most one of the two. ``details["image_rule"]`` says which (:data:`CALIBRATION_IMAGE_RULES`).
    Without masks the pixel threshold is ``fallback_pixel`` (e.g. the run's validation one).
    ``data`` says which images were used; it is kept in ``details``. A threshold that flags every
    good image or misses every defect (or, with masks, marks every pixel or no defect pixel) is
    described in ``details["warnings"]`` (:func:`degenerate_threshold_warnings`).
    """
    scores, labels = _check(scores, labels, "calibrated_thresholds")
    if labels.all() or not labels.any():
        raise ValueError("calibration needs both good and defective images (labels 0 and 1)")
    if target_recall is not None and max_false_alarm_rate is not None:
        raise ValueError("give target_recall or max_false_alarm_rate, not both")
    if target_recall is not None:
        image = target_recall_threshold(scores, labels, target_recall)
        image_rule = "target_recall"
        rule_words = f"the highest threshold with recall >= {target_recall:g} on labelled images"
    elif max_false_alarm_rate is not None:
        image = max_false_alarm_threshold(scores, labels, max_false_alarm_rate)
        image_rule = "max_false_alarm_rate"
        rule_words = f"the lowest threshold with a false-alarm rate <= {max_false_alarm_rate:g} on labelled good images"
    else:
        image = f1_optimal_threshold(scores, labels)
        image_rule, rule_words = "f1_optimal", "F1-optimal on labelled images"
    image_threshold = _open_interval(image.threshold)
    image = precision_recall_f1(scores, labels, image_threshold)  # what the stored threshold does
    details = {"data": data, "n_good": int((~labels).sum()), "n_defective": int(labels.sum()),
               "image_rule": image_rule, "image_precision": image.precision, "image_recall": image.recall,
               "image_f1": image.f1, "image_false_alarm_rate": false_alarm_rate(scores, labels, image_threshold)}
    if target_recall is not None:
        details["target_recall"] = float(target_recall)
    if max_false_alarm_rate is not None:
        details["max_false_alarm_rate"] = float(max_false_alarm_rate)
    pixel_values = None
    if maps is not None and masks is not None:
        pixel_values = (np.asarray(maps, dtype=np.float32).ravel(), np.asarray(masks).ravel() > 0)
        pixel_choice = f1_optimal_threshold(*pixel_values)
        pixel, pixel_rule = pixel_choice.threshold, "F1-optimal on the defect masks"
        details["pixel_f1"] = pixel_choice.f1
    elif fallback_pixel is not None:
        pixel, pixel_rule = fallback_pixel, "kept from before (no masks given)"
    else:
        raise ValueError("without masks, calibrated_thresholds needs fallback_pixel")
    thresholds = Thresholds(
        image=image_threshold, pixel=_open_interval(pixel), source="calibration",
        rule=f"image: {rule_words}; pixel: {pixel_rule}", details=details,
    )
    details["warnings"] = degenerate_threshold_warnings(thresholds, scores, labels, pixel_values)
    return thresholds


def degenerate_threshold_warnings(thresholds: Thresholds, scores, labels, pixel_values=None) -> list[str]:
    """One-line warnings when the thresholds decide nothing on the images they were chosen on.

    An image threshold that flags every good image or misses every defective one; with
    ``pixel_values`` (maps and masks, flattened), a pixel threshold that marks every pixel or no
    defect pixel. Each says what to do (more or other calibration images, an operating point).
    """
    scores, labels = _check(scores, labels, "degenerate_threshold_warnings")
    found = []
    good, defective = scores[~labels], scores[labels]
    if good.size and np.all(good >= thresholds.image):
        found.append(
            f"the image threshold {thresholds.image:.4f} flags all {good.size} good calibration images as defective: "
            "the good and defective scores overlap; calibrate on more or other images, or choose an operating "
            "point with --max-false-alarm-rate F")
    if defective.size and np.all(defective < thresholds.image):
        found.append(
            f"the image threshold {thresholds.image:.4f} misses all {defective.size} defective calibration images: "
            "calibrate on more or other images, or choose an operating point with --target-recall R")
    if pixel_values is not None:
        maps, masks = pixel_values
        if maps.size and np.all(maps >= thresholds.pixel):
            found.append(
                f"the pixel threshold {thresholds.pixel:.4f} marks every pixel of the calibration images as defect: "
                "the masks say nothing at this size; calibrate on more or other images with masks")
        elif masks.any() and np.all(maps[masks] < thresholds.pixel):
            found.append(
                f"the pixel threshold {thresholds.pixel:.4f} marks no defect pixel of the calibration masks: "
                "calibrate on more or other images with masks")
    return found


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
        raise ValueError(
            f"cannot read thresholds file {path}: {error}; delete it and run memseg-lite calibrate"
        ) from None


def thresholds_of(payload: dict) -> Thresholds | None:
    """The thresholds stored in a checkpoint payload, or ``None`` (checkpoints from before thresholds)."""
    stored = payload.get("thresholds")
    return Thresholds.from_dict(stored) if stored else None
