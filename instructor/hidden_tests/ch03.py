"""Hidden tests for notebook 03: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch03

DATA_ROOT = "../data/demo"
TITLES = {1: 'undo a shuffle', 2: 'read delta back', 3: 'delta for a target change'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(recover_permutation):
    """undo a shuffle."""
    ch03.exercise_1(recover_permutation)


def exercise_2(estimate_delta):
    """read delta back."""
    ch03.exercise_2(estimate_delta)


def exercise_3(delta_for_change):
    """delta for a target change."""
    ch03.exercise_3(delta_for_change)
