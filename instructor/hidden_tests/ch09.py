"""Hidden tests for notebook 09: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch09

DATA_ROOT = "../data/demo"
TITLES = {1: 'mid-ranks and the rank-sum AUROC', 2: 'pixels or regions', 3: 'the threshold for 1 % false positives'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(mid_ranks):
    """mid-ranks and the rank-sum AUROC."""
    ch09.exercise_1(mid_ranks)


def exercise_2(partial_pixel_auroc):
    """pixels or regions."""
    ch09.exercise_2(partial_pixel_auroc)


def exercise_3(threshold_at_fpr):
    """the threshold for 1 % false positives."""
    ch09.exercise_3(threshold_at_fpr)


# The assignment track: the core piece the student writes (assignments/09_evaluation_assignment.ipynb).
CORE_TITLES = {1: "the PRO curve"}
CORE_POINTS = {1: 2}


def core_1(pro_curve_by_definition):
    """(fpr, pro, thresholds) against a per-threshold computation with 8-connected regions (cv2)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(91)
    masks = np.zeros((2, 12, 12), np.uint8)
    masks[0, 1:4, 1:5] = 1
    masks[0, 6, 6] = masks[0, 7, 7] = 1  # diagonal neighbours: one 8-connected region
    masks[1, 8:11, 2:10] = 1
    maps = np.round(rng.random((2, 12, 12)), 2)  # ties on purpose
    maps[masks == 1] += 0.3
    regions = []
    for index in range(2):
        count, labels = cv2.connectedComponents(masks[index], connectivity=8)
        regions += [(index, labels == label) for label in range(1, count)]
    thresholds = np.unique(maps)[::-1]
    fpr = [0.0] + [float((maps >= t)[masks == 0].mean()) for t in thresholds] + [1.0]
    pro = [0.0] + [float(np.mean([(maps[i] >= t)[r].mean() for i, r in regions])) for t in thresholds] + [1.0]
    got_fpr, got_pro, got_thresholds = (np.asarray(a, dtype=np.float64) for a in pro_curve_by_definition(maps, masks))
    assert got_fpr.shape == (len(fpr),), f"{got_fpr.size} points, expected {len(fpr)} (one per distinct score + ends)"
    assert np.allclose(got_fpr, fpr), "the FPR values are wrong"
    assert np.allclose(got_pro, pro), "the PRO values are wrong (mean over 8-connected regions of the share flagged)"
    assert got_thresholds[0] == np.inf and got_thresholds[-1] == -np.inf, "the thresholds run from +inf to -inf"
    assert np.allclose(got_thresholds[1:-1], thresholds), "the thresholds are the distinct scores, highest first"
