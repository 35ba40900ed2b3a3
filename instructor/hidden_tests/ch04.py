"""Hidden tests for notebook 04: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch04

DATA_ROOT = "../data/demo"
TITLES = {1: 'pool size', 2: 'leave one out', 3: 'which level decides'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(closest_distance):
    """pool size."""
    ch04.exercise_1(closest_distance)


def exercise_2(leave_one_out):
    """leave one out."""
    ch04.exercise_2(leave_one_out)


def exercise_3(level_shares):
    """which level decides."""
    ch04.exercise_3(level_shares)
