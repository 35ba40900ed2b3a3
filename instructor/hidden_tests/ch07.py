"""Hidden tests for notebook 07: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch07

DATA_ROOT = "../data/demo"
TITLES = {1: 'alpha-balanced focal loss', 2: 'how much focus is enough', 3: 'top-k image score'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(alpha_focal_loss):
    """alpha-balanced focal loss."""
    ch07.exercise_1(alpha_focal_loss)


def exercise_2(gamma_for_share):
    """how much focus is enough."""
    ch07.exercise_2(gamma_for_share)


def exercise_3(top_k_score):
    """top-k image score."""
    ch07.exercise_3(top_k_score)
