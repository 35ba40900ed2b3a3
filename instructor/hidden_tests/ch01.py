"""Hidden tests for notebook 01: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch01

DATA_ROOT = "../data/demo"
TITLES = {1: 'fade derivatives', 2: 'fractal noise', 3: 'threshold for a target coverage'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(fade_derivatives):
    """fade derivatives."""
    ch01.exercise_1(fade_derivatives)


def exercise_2(fractal_noise):
    """fractal noise."""
    ch01.exercise_2(fractal_noise)


def exercise_3(threshold_for_coverage):
    """threshold for a target coverage."""
    ch01.exercise_3(threshold_for_coverage)
