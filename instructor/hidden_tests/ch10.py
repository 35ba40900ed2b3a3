"""Hidden tests for notebook 10: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch10

DATA_ROOT = "../data/demo"
TITLES = {1: 'normalised scores', 2: 'F1-optimal threshold', 3: 'map back to the photo'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(my_normalised):
    """normalised scores."""
    ch10.exercise_1(my_normalised)


def exercise_2(best_f1_threshold):
    """F1-optimal threshold."""
    ch10.exercise_2(best_f1_threshold)


def exercise_3(map_back):
    """map back to the photo."""
    ch10.exercise_3(map_back)
