"""Decision thresholds against brute force; normalised scores; the validation and calibration rules; files."""

from __future__ import annotations

import numpy as np
import pytest

from memseg_lite.evaluation.thresholds import (
    Thresholds,
    calibrated_thresholds,
    f1_optimal_threshold,
    load_thresholds,
    normalise_scores,
    precision_recall_f1,
    quantile_threshold,
    save_thresholds,
    validation_thresholds,
)


def brute_force_best_f1(scores, labels):
    """Try every distinct score as the threshold of ``score >= t``; plain Python counting."""
    best = 0.0
    for t in sorted(set(scores.tolist())):
        tp = sum(1 for s, l in zip(scores, labels) if s >= t and l)
        fp = sum(1 for s, l in zip(scores, labels) if s >= t and not l)
        fn = sum(1 for s, l in zip(scores, labels) if s < t and l)
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


def test_validation_thresholds_rule():
    rng = np.random.default_rng(0)
    good = rng.uniform(0.1, 0.3, 10)
    synthetic = rng.uniform(0.5, 0.9, 20)
    scores, labels = np.r_[good, synthetic], np.r_[np.zeros(10), np.ones(20)]
    masks = np.zeros((30, 8, 8))
    masks[10:, 2:5, 2:5] = 1
    maps = np.where(masks > 0, 0.8, 0.2) + rng.uniform(-0.05, 0.05, masks.shape)
    thresholds = validation_thresholds(scores, labels, maps, masks)
    assert thresholds.image == pytest.approx(np.quantile(good, 0.99))
    assert 0.25 < thresholds.pixel < 0.75  # the F1-optimal pixel cut separates the two levels
    assert thresholds.details["pixel_f1"] == 1.0 and thresholds.source == "validation"
    assert validation_thresholds(scores, labels, maps, masks, quantile=0.5).image == pytest.approx(np.median(good))


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
