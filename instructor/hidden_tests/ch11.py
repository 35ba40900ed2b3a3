"""Hidden tests for notebook 11: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch11

DATA_ROOT = "../data/demo"
TITLES = {1: "Welch's t over seeds", 2: 'pair the seeds'}
POINTS = {1: 1, 2: 1}


def exercise_1(welch_t):
    """Welch's t over seeds."""
    ch11.exercise_1(welch_t)


def exercise_2(paired_difference):
    """pair the seeds."""
    ch11.exercise_2(paired_difference)
