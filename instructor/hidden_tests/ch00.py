"""Hidden tests for notebook 00: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from pathlib import Path

from memseg_lite.teaching.checks import ch00

DATA_ROOT = "../data/demo"
TITLES = {1: 'defective pixels', 2: 'object fraction', 3: 'the blend'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(defective_pixel_fraction):
    """defective pixels."""
    ch00.exercise_1(defective_pixel_fraction, DATA_ROOT if Path(DATA_ROOT).is_dir() else None)


def exercise_2(object_fraction):
    """object fraction."""
    ch00.exercise_2(object_fraction)


def exercise_3(blended_values):
    """the blend."""
    ch00.exercise_3(blended_values)
