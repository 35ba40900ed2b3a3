"""Hidden tests for notebook 02: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from pathlib import Path

from memseg_lite.teaching.checks import ch02

DATA_ROOT = "../data/demo"
TITLES = {1: 'Otsu by definition', 2: 'keep the largest component', 3: 'fixed threshold'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(otsu_by_definition):
    """Otsu by definition."""
    ch02.exercise_1(otsu_by_definition)


def exercise_2(largest_component):
    """keep the largest component."""
    ch02.exercise_2(largest_component)


def exercise_3(fixed_threshold_settings):
    """fixed threshold."""
    ch02.exercise_3(fixed_threshold_settings, _button_stack())


def _button_stack():
    """The notebook's images["button"]: the first training images of the demo button, at the profile's size."""
    import os

    import numpy as np

    from memseg_lite.core.io import list_images, read_image
    from memseg_lite.core.transforms import resize_image

    profile = os.environ.get("MEMSEG_PROFILE", "demo")
    size, count = {"full": 256, "demo": 256, "smoke": 64}[profile], {"full": 12, "demo": 8, "smoke": 3}[profile]
    files = list_images(Path(DATA_ROOT) / "button" / "train" / "good")[:count]
    return np.stack([resize_image(read_image(path), size) for path in files])
