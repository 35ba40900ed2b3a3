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
