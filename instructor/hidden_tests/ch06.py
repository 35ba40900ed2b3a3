"""Hidden tests for notebook 06: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch06

DATA_ROOT = "../data/demo"
TITLES = {1: 'squeeze-and-excitation gate', 2: 'top-down fusion', 3: 'energy inside the anomaly'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(se_gate):
    """squeeze-and-excitation gate."""
    ch06.exercise_1(se_gate)


def exercise_2(fuse):
    """top-down fusion."""
    ch06.exercise_2(fuse)


def exercise_3(energy_inside_mask):
    """energy inside the anomaly."""
    ch06.exercise_3(energy_inside_mask)
