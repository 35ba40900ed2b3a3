"""Hidden tests for notebook 05: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch05

DATA_ROOT = "../data/demo"
TITLES = {1: 'bilinear upsampling', 2: 'max over channels', 3: 'a coarse level vetoes the finer ones'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(upsample2x):
    """bilinear upsampling."""
    ch05.exercise_1(upsample2x)


def exercise_2(attention_with_max):
    """max over channels."""
    ch05.exercise_2(attention_with_max)


def exercise_3(maps_with_top_half_vetoed):
    """a coarse level vetoes the finer ones."""
    ch05.exercise_3(maps_with_top_half_vetoed)
