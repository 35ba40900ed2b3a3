"""Decision thresholds against brute force; normalised scores; the validation and calibration rules; files."""

from __future__ import annotations

import numpy as np
import pytest

from memseg_lite.evaluation.thresholds import (
    VALIDATION_IMAGE_RULE,
    Thresholds,
    calibrated_thresholds,
    degenerate_threshold_warnings,
    f1_optimal_threshold,
    false_alarm_rate,
    load_thresholds,
    max_false_alarm_threshold,
    normalise_scores,
    precision_recall_f1,
    quantile_threshold,
    save_thresholds,
    target_recall_threshold,
    validation_thresholds,
)


def brute_force_best_f1(scores, labels):
    """Try every distinct score as the threshold of ``score >= t``; plain Python counting."""
    best = 0.0
    pairs = list(zip(scores, labels, strict=True))
    for t in sorted(set(scores.tolist())):
        tp = sum(1 for score, label in pairs if score >= t and label)
        fp = sum(1 for score, label in pairs if score >= t and not label)
        fn = sum(1 for score, label in pairs if score < t and label)
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        best = max(best, f1)
    return best


@pytest.mark.parametrize("seed", range(8))
def test_f1_optimal_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    labels = rng.integers(0, 2, n)
    labels[0] = 1
    scores = np.round(rng.normal(labels * rng.uniform(0, 2), 1.0), 1)  # rounded: many ties
    choice = f1_optimal_threshold(scores, labels)
    assert choice.f1 == pytest.approx(brute_force_best_f1(scores, labels))
    at = precision_recall_f1(scores, labels, choice.threshold)  # the returned threshold gives that F1
    assert at.f1 == pytest.approx(choice.f1)
    assert (at.precision, at.recall) == pytest.approx((choice.precision, choice.recall))


def test_f1_optimal_threshold_separable_sits_between_the_classes():
    choice = f1_optimal_threshold([0.1, 0.2, 0.3, 0.7, 0.9], [0, 0, 0, 1, 1])
    assert choice.threshold == pytest.approx(0.5) and choice.f1 == 1.0
    everything = f1_optimal_threshold([0.5, 0.5], [1, 1])
    assert everything.threshold == 0.5 and everything.f1 == 1.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one defective"):
        f1_optimal_threshold([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        f1_optimal_threshold([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        precision_recall_f1([0.1, np.nan], [0, 1], 0.5)
    with pytest.raises(ValueError, match="quantile"):
        quantile_threshold([0.1], 0)
    with pytest.raises(ValueError, match="both good and defective"):
        calibrated_thresholds([0.1, 0.2], [1, 1], fallback_pixel=0.5)


def test_precision_recall_f1_by_hand():
    result = precision_recall_f1([0.9, 0.8, 0.4, 0.3], [1, 0, 1, 0], 0.5)
    assert (result.precision, result.recall, result.f1) == (0.5, 0.5, 0.5)
    nothing = precision_recall_f1([0.1, 0.2], [1, 0], 0.9)
    assert (nothing.precision, nothing.recall, nothing.f1) == (0.0, 0.0, 0.0)


def test_normalised_scores_put_the_threshold_at_one_half():
    t = 0.3
    scores = np.array([0.0, 0.15, 0.3, 0.65, 1.0])
    np.testing.assert_allclose(normalise_scores(scores, t), [0.0, 0.25, 0.5, 0.75, 1.0])
    grid = np.linspace(0, 1, 101)
    normalised = normalise_scores(grid, t)
    assert np.all(np.diff(normalised) > 0)  # order (AUROC) unchanged
    assert np.array_equal(normalised >= 0.5, grid >= t)  # the verdict is the same
    with pytest.raises(ValueError, match="threshold must be in"):
        normalise_scores(grid, 1.0)


def brute_force_quantile(values, q):
    """Linear-interpolation quantile by hand: position q (n - 1) in the sorted values."""
    ordered = sorted(float(v) for v in values)
    position = q * (len(ordered) - 1)
    below = int(np.floor(position))
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def brute_force_f1_threshold(scores, labels, negative_weight=1.0):
    """The (negative-weighted) F1-optimal threshold as documented: the best cut (ties: the higher one),
    placed half-way to the next lower distinct score (at the lowest score when everything is called
    defective). Returns (threshold, F1)."""
    distinct = sorted({float(s) for s in scores}, reverse=True)
    best_f1, best_index = -1.0, 0
    pairs = list(zip(scores, labels, strict=True))
    for index, t in enumerate(distinct):
        tp = sum(1 for score, label in pairs if score >= t and label)
        fp = sum(1 for score, label in pairs if score >= t and not label)
        fn = sum(1 for score, label in pairs if score < t and label)
        f1 = 2 * tp / (2 * tp + negative_weight * fp + fn)
        if f1 > best_f1 + 1e-12:  # strictly better only: among ties the first (highest) cut stays
            best_f1, best_index = f1, index
    cut = distinct[best_index]
    return (0.5 * (cut + distinct[best_index + 1]) if best_index + 1 < len(distinct) else cut), best_f1


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weight", [1.0, 0.5, 3.0, 6.0])
def test_weighted_f1_optimal_threshold_matches_brute_force(seed, weight):
    rng = np.random.default_rng(50 + seed)
    n = int(rng.integers(6, 50))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(labels * rng.uniform(0, 2), 1.0), 1)  # rounded: ties, also across classes
    threshold, f1 = brute_force_f1_threshold(scores.tolist(), labels.tolist(), weight)
    choice = f1_optimal_threshold(scores, labels, negative_weight=weight)
    assert choice.threshold == pytest.approx(threshold, abs=1e-12)
    assert choice.f1 == pytest.approx(f1, abs=1e-12)
    called = scores >= choice.threshold
    tp, fp = int((called & (labels == 1)).sum()), int((called & (labels == 0)).sum())
    assert choice.precision == pytest.approx(tp / (tp + weight * fp))
    assert choice.recall == pytest.approx(tp / labels.sum())


def test_the_weight_moves_the_optimum_up_and_one_is_plain_f1():
    # Two negatives (0.1, 0.2), six positives. Plain F1: the cut at 0.15 (TP 6, FP 1: F1 12/13) beats
    # the one at 0.3 (TP 5, FP 0: 10/11). With each negative counted 3 times (balanced classes) the
    # false alarm costs more: 12/15 against 10/11, so the cut moves up to 0.3.
    scores = np.r_[0.1, 0.2, 0.15, 0.3, 0.4, 0.5, 0.6, 0.7]
    labels = np.r_[0, 0, 1, 1, 1, 1, 1, 1]
    plain = f1_optimal_threshold(scores, labels)
    assert plain.threshold == pytest.approx(0.125) and plain.f1 == pytest.approx(12 / 13)
    balanced = f1_optimal_threshold(scores, labels, negative_weight=3.0)
    assert balanced.threshold == pytest.approx(0.25) and balanced.f1 == pytest.approx(10 / 11)
    assert (balanced.precision, balanced.recall) == pytest.approx((1.0, 5 / 6))
    assert f1_optimal_threshold(scores, labels, negative_weight=1.0) == plain
    with pytest.raises(ValueError, match="negative_weight"):
        f1_optimal_threshold(scores, labels, negative_weight=0)


def validation_case(seed: int, n_good: int = 10, n_synthetic: int = 20, overlap: float = 0.0):
    """Rounded validation scores (many ties, across the classes too) and 8 x 8 maps / masks."""
    rng = np.random.default_rng(seed)
    good = np.round(rng.uniform(0.1, 0.4, n_good), 2)
    synthetic = np.round(rng.uniform(0.4 - overlap, 0.9, n_synthetic), 2)
    scores, labels = np.r_[good, synthetic], np.r_[np.zeros(n_good), np.ones(n_synthetic)]
    masks = np.zeros((n_good + n_synthetic, 8, 8))
    masks[n_good:, 2:5, 2:5] = 1
    maps = np.where(masks > 0, 0.8, 0.2) + rng.uniform(-0.05, 0.05, masks.shape)
    return scores, labels, maps, masks


@pytest.mark.parametrize("seed", range(12))
def test_validation_image_threshold_is_the_lower_of_the_two_candidates(seed):
    overlap = (0.0, 0.15, 0.3)[seed % 3]  # separated, touching and overlapping classes
    scores, labels, maps, masks = validation_case(seed, n_synthetic=(20, 60)[seed % 2], overlap=overlap)
    good = scores[labels == 0]
    quantile = brute_force_quantile(good, 0.99)
    weight = (labels == 1).sum() / (labels == 0).sum()  # both classes weigh the same
    synthetic_f1, _ = brute_force_f1_threshold(scores.tolist(), labels.tolist(), weight)
    thresholds = validation_thresholds(scores, labels, maps, masks)
    assert thresholds.image == pytest.approx(min(quantile, synthetic_f1), abs=1e-12)
    details = thresholds.details
    assert details["image_rule"] == VALIDATION_IMAGE_RULE == "min_good_quantile_balanced_synthetic_f1"
    assert details["good_weight"] == pytest.approx(weight)
    assert details["good_quantile_threshold"] == pytest.approx(quantile, abs=1e-12)
    assert details["synthetic_f1_threshold"] == pytest.approx(synthetic_f1, abs=1e-12)
    assert details["image_rule_chosen"] == ("good_quantile" if quantile <= synthetic_f1 else "synthetic_f1")
    at = precision_recall_f1(scores, labels, thresholds.image)
    assert (details["synthetic_image_precision"], details["synthetic_image_f1"]) == (at.precision, at.f1)
    assert "lower of" in thresholds.rule and "class-balanced" in thresholds.rule and thresholds.source == "validation"


def test_each_candidate_wins_somewhere():
    """Separated classes: the F1 cut sits mid-gap, above the good scores, so the quantile is lower;
    overlapping classes: the F1 cut accepts some good images, below their largest score (one
    synthetic anomaly per good image here, so the class weight is 1)."""
    separated = validation_thresholds(np.r_[0.1, 0.2, 0.3, 0.7, 0.9], np.r_[0, 0, 0, 1, 1], np.zeros((5, 2, 2)),
                                      np.r_[np.zeros((4, 2, 2)), np.ones((1, 2, 2))], quantile=1.0)
    assert separated.image == pytest.approx(0.3) and separated.details["image_rule_chosen"] == "good_quantile"
    assert separated.details["synthetic_f1_threshold"] == pytest.approx(0.5)
    # Good 0.1, 0.2, 0.6; synthetic 0.5, 0.5, 0.7 (a tie at 0.5): the F1 cut is at 0.5 (F1 6/7), placed at 0.35.
    overlapping = validation_thresholds(np.r_[0.1, 0.2, 0.6, 0.5, 0.5, 0.7], np.r_[0, 0, 0, 1, 1, 1],
                                        np.zeros((6, 2, 2)), np.r_[np.zeros((5, 2, 2)), np.ones((1, 2, 2))],
                                        quantile=1.0)
    assert overlapping.image == pytest.approx(0.35) and overlapping.details["image_rule_chosen"] == "synthetic_f1"
    assert overlapping.details["good_quantile_threshold"] == pytest.approx(0.6)


def test_validation_pixel_threshold_and_quantile_option():
    scores, labels, maps, masks = validation_case(0)
    thresholds = validation_thresholds(scores, labels, maps, masks)
    assert 0.25 < thresholds.pixel < 0.75  # the F1-optimal pixel cut separates the two levels
    assert thresholds.details["pixel_f1"] == 1.0
    good = scores[labels == 0]
    median_rule = validation_thresholds(scores, labels, maps, masks, quantile=0.5)
    assert median_rule.details["good_quantile_threshold"] == pytest.approx(np.median(good))
    assert median_rule.image == pytest.approx(min(np.median(good), median_rule.details["synthetic_f1_threshold"]))


def test_validation_pixel_threshold_ignores_invalid_pixels():
    scores, labels, maps, masks = validation_case(1)
    valid = np.ones(maps.shape, dtype=np.uint8)
    valid[:, :, :2] = 0  # two padding columns ...
    padded = maps.copy()
    padded[:, :, :2] = 0.95  # ... scoring higher than any defect pixel
    cut = validation_thresholds(scores, labels, padded, masks, valid=valid)
    assert cut.pixel == pytest.approx(validation_thresholds(scores, labels, maps[:, :, 2:], masks[:, :, 2:]).pixel)
    assert cut.details["pixel_f1"] == 1.0
    assert validation_thresholds(scores, labels, padded, masks).details["pixel_f1"] < 1.0  # the padding would count
    with pytest.raises(ValueError, match="valid"):
        validation_thresholds(scores, labels, maps, masks, valid=valid[:, :4])


def test_validation_thresholds_need_both_kinds_of_images():
    scores, labels, maps, masks = validation_case(2)
    with pytest.raises(ValueError, match="at least one good"):
        validation_thresholds(scores[labels == 1], labels[labels == 1], maps[labels == 1], masks[labels == 1])
    with pytest.raises(ValueError, match="at least one synthetic anomaly"):
        validation_thresholds(scores[labels == 0], labels[labels == 0], maps[labels == 0], masks[labels == 0])


def test_thresholds_file_round_trip(tmp_path):
    thresholds = Thresholds(image=0.4, pixel=0.6, source="calibration", rule="test", details={"n_good": 3})
    path = save_thresholds(tmp_path / "thresholds.json", thresholds)
    assert load_thresholds(path) == thresholds
    assert thresholds.verdict(0.4) == "defective" and thresholds.verdict(0.39) == "normal"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_thresholds(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="calibrate"):
        load_thresholds(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------------
# Operating points (issue 21): a target recall or a maximum false-alarm rate, against brute force
# --------------------------------------------------------------------------------------------
def brute_force_candidates(scores):
    """Every threshold worth trying: half-way between consecutive distinct scores, the lowest score, and above
    the top."""
    distinct = np.unique(scores)
    return np.r_[distinct[0], 0.5 * (distinct[1:] + distinct[:-1]), distinct[-1] + 1.0]


def random_scores(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 50))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = np.clip(np.round(rng.normal(0.4 + 0.2 * labels, 0.15), 2), 0.01, 0.99)  # rounded: ties
    return scores, labels


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("target", [0.3, 0.5, 0.9, 1.0])
def test_target_recall_threshold_is_the_highest_that_reaches_the_recall(seed, target):
    scores, labels = random_scores(seed)
    recalls = [np.mean(scores[labels == 1] >= t) for t in brute_force_candidates(scores)]
    expected = max(t for t, recall in zip(brute_force_candidates(scores), recalls, strict=True)
                   if recall >= target - 1e-12)
    choice = target_recall_threshold(scores, labels, target)
    assert choice.threshold == pytest.approx(expected)
    assert choice.recall >= target - 1e-12
    assert choice.recall == pytest.approx(np.mean(scores[labels == 1] >= choice.threshold))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.29, 0.5])
def test_max_false_alarm_threshold_is_the_lowest_within_the_rate(seed, rate):
    scores, labels = random_scores(seed)
    candidates = brute_force_candidates(scores)
    alarms = [np.mean(scores[labels == 0] >= t) for t in candidates]
    expected = min(t for t, alarm in zip(candidates, alarms, strict=True) if alarm <= rate + 1e-12)
    choice = max_false_alarm_threshold(scores, labels, rate)
    assert choice.threshold == pytest.approx(expected)
    assert false_alarm_rate(scores, labels, choice.threshold) <= rate + 1e-12


def test_operating_points_by_hand():
    scores, labels = [0.1, 0.2, 0.3, 0.4, 0.6, 0.8], [0, 0, 1, 0, 1, 1]
    assert target_recall_threshold(scores, labels, 1.0).threshold == pytest.approx(0.25)  # catches the 0.3 defect
    assert target_recall_threshold(scores, labels, 2 / 3).threshold == pytest.approx(0.5)
    assert max_false_alarm_threshold(scores, labels, 0.0).threshold == pytest.approx(0.5)  # above the good 0.4
    assert max_false_alarm_threshold(scores, labels, 1 / 3).threshold == pytest.approx(0.25)  # 0.4 good, 0.3 defect
    # Even the top score is a good image's and no false alarm is allowed: nothing is flagged.
    assert max_false_alarm_threshold([0.2, 0.9], [1, 0], 0.0).threshold > 0.9


def test_operating_points_refuse_bad_values():
    for bad in (0.0, -0.1, 1.5, np.nan):
        with pytest.raises(ValueError, match=r"target_recall must be in \(0, 1\]"):
            target_recall_threshold([0.1, 0.9], [0, 1], bad)
    for bad in (1.0, -0.1, 2.0, np.nan):
        with pytest.raises(ValueError, match=r"max_false_alarm_rate must be in \[0, 1\)"):
            max_false_alarm_threshold([0.1, 0.9], [0, 1], bad)
    with pytest.raises(ValueError, match="not both"):
        calibrated_thresholds([0.1, 0.9], [0, 1], fallback_pixel=0.5, target_recall=0.9, max_false_alarm_rate=0.1)


def test_calibration_stores_the_rule_that_chose_the_image_threshold():
    scores, labels = [0.1, 0.2, 0.3, 0.4, 0.6, 0.8], [0, 0, 1, 0, 1, 1]
    default = calibrated_thresholds(scores, labels, fallback_pixel=0.5)
    assert default.details["image_rule"] == "f1_optimal"
    assert default.image == pytest.approx(f1_optimal_threshold(scores, labels).threshold)
    by_recall = calibrated_thresholds(scores, labels, fallback_pixel=0.5, target_recall=1.0)
    assert by_recall.details["image_rule"] == "target_recall" and by_recall.details["target_recall"] == 1.0
    assert by_recall.image == pytest.approx(0.25) and by_recall.details["image_recall"] == 1.0
    assert by_recall.details["image_false_alarm_rate"] == pytest.approx(1 / 3)
    by_alarms = calibrated_thresholds(scores, labels, fallback_pixel=0.5, max_false_alarm_rate=0.0)
    assert by_alarms.details["image_rule"] == "max_false_alarm_rate" and by_alarms.image == pytest.approx(0.5)
    assert by_alarms.details["image_false_alarm_rate"] == 0.0
    assert by_alarms.details["image_recall"] == pytest.approx(2 / 3)
    assert "recall >= 1" in by_recall.rule and "false-alarm rate <= 0" in by_alarms.rule
    saved = Thresholds.from_dict(by_alarms.to_dict())
    assert saved.details["image_rule"] == "max_false_alarm_rate"


# --------------------------------------------------------------------------------------------
# Warnings when a calibrated threshold decides nothing (issue 21)
# --------------------------------------------------------------------------------------------
def test_a_threshold_that_flags_every_good_image_is_warned_about():
    # The good images score highest: F1 is best when everything is called defective.
    scores, labels = [0.9, 0.8, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], [0, 0, 1, 1, 1, 1, 1, 1, 1]
    thresholds = calibrated_thresholds(scores, labels, fallback_pixel=0.5)
    assert thresholds.image <= 0.1  # it does flag both good images
    (message,) = thresholds.details["warnings"]
    assert "flags all 2 good calibration images" in message and "--max-false-alarm-rate" in message
    assert "\n" not in message
    # A clean separation gives no warning.
    assert calibrated_thresholds([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], fallback_pixel=0.5).details["warnings"] == []


def test_a_threshold_that_misses_every_defect_is_warned_about():
    scores, labels = [0.2, 0.3, 0.9], [1, 1, 0]  # the top score is good; no false alarm allowed
    thresholds = calibrated_thresholds(scores, labels, fallback_pixel=0.5, max_false_alarm_rate=0.0)
    assert thresholds.details["image_recall"] == 0.0
    (message,) = thresholds.details["warnings"]
    assert "misses all 2 defective calibration images" in message and "--target-recall" in message


def test_pixel_thresholds_that_mark_everything_or_no_defect_are_warned_about():
    scores, labels = [0.1, 0.9], [0, 1]
    maps = np.array([[[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]])  # flat maps: F1 marks every pixel
    masks = np.zeros_like(maps)
    masks[1, 0, 0] = 1
    everything = calibrated_thresholds(scores, labels, maps, masks)
    assert any("marks every pixel" in message for message in everything.details["warnings"])
    fine = calibrated_thresholds(scores, labels, np.where(masks > 0, 0.9, 0.1), masks)
    assert fine.details["warnings"] == []
    thresholds = Thresholds(image=0.5, pixel=0.95, source="calibration", rule="")
    pixels = (np.where(masks > 0, 0.9, 0.1).ravel(), masks.ravel() > 0)
    (missed,) = degenerate_threshold_warnings(thresholds, scores, labels, pixels)
    assert "marks no defect pixel" in missed
