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


# The assignment track: the core piece the student writes (assignments/02_foreground_masks_assignment.ipynb).
CORE_TITLES = {1: "Otsu's between-class variance"}
CORE_POINTS = {1: 2}


def _between_class_by_definition(grey):
    """sigma_B^2(t) = w0 w1 (mu0 - mu1)^2 for every t, class by class (0 where a class is empty)."""
    import numpy as np

    values = grey.ravel().astype(np.float64)
    curve = np.zeros(256)
    for t in range(256):
        low, high = values[values <= t], values[values > t]
        if len(low) and len(high):
            curve[t] = len(low) * len(high) / len(values) ** 2 * (low.mean() - high.mean()) ** 2
    return curve


def core_1(my_otsu):
    """my_otsu(grey) -> (threshold, curve) on two-class, three-class and skewed images."""
    import numpy as np

    rng = np.random.default_rng(21)
    images = [rng.integers(0, 256, (40, 50)).astype(np.uint8)]
    two = rng.normal(60, 12, (48, 48))
    two[:, 36:] = rng.normal(190, 8, (48, 12))  # a small bright class: the mean threshold is wrong here
    images.append(np.clip(two, 0, 255).astype(np.uint8))
    three = np.concatenate([np.full(300, 10), np.full(150, 120), np.full(150, 240)])
    images.append(three.reshape(20, 30).astype(np.uint8))
    for index, grey in enumerate(images):
        threshold, curve = my_otsu(grey)
        expected = _between_class_by_definition(grey)
        curve = np.asarray(curve, dtype=np.float64)
        assert curve.shape == (256,), f"image {index}: the curve has shape {curve.shape}, expected (256,)"
        assert np.allclose(curve, expected, rtol=1e-6, atol=1e-9), f"image {index}: sigma_B^2(t) is wrong"
        assert int(threshold) == int(np.argmax(expected)), f"image {index}: threshold {threshold} is not the argmax"
