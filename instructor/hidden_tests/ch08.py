"""Hidden tests for notebook 08: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from pathlib import Path

from memseg_lite.teaching.checks import ch08

DATA_ROOT = "../data/demo"
TITLES = {1: 'the peak of the schedule', 2: 'who pays the focal loss', 3: 'resume exactly'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(schedule_peak):
    """the peak of the schedule."""
    ch08.exercise_1(schedule_peak)


def exercise_2(anomalous_focal_share):
    """who pays the focal loss."""
    ch08.exercise_2(anomalous_focal_share)


def exercise_3(resume_losses):
    """resume exactly."""
    ch08.exercise_3(resume_losses, DATA_ROOT, "mesh", str(Path(DATA_ROOT).parent / "dtd"))
