"""Self-checks for notebook 02 (foreground masks): Otsu by definition, the largest component, a fixed threshold.

Worked solutions: ``solutions/02_foreground_masks_solutions.ipynb``.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np

from memseg_lite.simulation import foreground
from memseg_lite.simulation.perlin import perlin_mask
from memseg_lite.teaching.checks.support import robust
from memseg_lite.teaching.exercises import call_candidate

# The largest between-class variance w0 w1 (mu0 - mu1)^2 over t = 0..254 of each test image of
# exercise 1 (_otsu_images), from the worked solution's threshold (solutions/02_foreground_masks_solutions.ipynb).
EXPECTED_BETWEEN = {"two modes": 2300.62, "three modes": 4461.51, "uniform": 4084.80}


def _otsu_images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    two = np.concatenate([rng.normal(60, 8, 3000), rng.normal(170, 12, 1000)])
    three = np.concatenate([rng.normal(40, 10, 1500), rng.normal(120, 10, 1000), rng.normal(210, 15, 1500)])
    uniform = rng.integers(0, 256, 4000)
    return {name: np.clip(np.rint(values), 0, 255).astype(np.uint8).reshape(40, 100)
            for name, values in (("two modes", two), ("three modes", three), ("uniform", uniform))}


def _between(grey: np.ndarray, t: int) -> float:
    """w0 w1 (mu0 - mu1)^2 of the split {g <= t}, {g > t} (0 when a class is empty)."""
    values = grey.ravel().astype(np.float64)
    low, high = values[values <= t], values[values > t]
    if low.size == 0 or high.size == 0:
        return 0.0
    return low.size * high.size / values.size**2 * (low.mean() - high.mean()) ** 2


@robust
def exercise_1(candidate) -> None:
    """``candidate(grey)``: Otsu's threshold, by the definition; any maximiser of sigma_B^2 passes."""
    for name, grey in _otsu_images().items():
        t = call_candidate(candidate, grey)
        if not isinstance(t, int | np.integer) or not 0 <= int(t) <= 254:
            raise AssertionError(f"{name}: return an int threshold in 0..254, got {t!r}")
        between = _between(grey, int(t))
        if between < EXPECTED_BETWEEN[name] * (1 - 1e-5):
            raise AssertionError(
                f"{name}: t = {int(t)} gives w0 w1 (mu0 - mu1)^2 = {between:.1f}, and another t gives more"
            )


def component_at(mask: np.ndarray, y: int, x: int) -> np.ndarray:
    """The 8-connected component of the bool ``mask`` that holds pixel (y, x), by flood fill."""
    canvas = mask.astype(np.uint8)
    cv2.floodFill(canvas, None, (int(x), int(y)), 2, flags=8)
    return canvas == 2


@robust
def exercise_2(candidate) -> None:
    """``candidate(mask)``: the largest 8-connected component of a bool mask."""
    canvas = np.zeros((40, 60), bool)
    canvas[2:12, 2:14] = True  # a 10 x 12 block: 120 pixels
    canvas[20:28, 30:38] = canvas[28:36, 38:46] = True  # two 8 x 8 squares touching at a corner: 128 pixels
    canvas[30:34, 5:9] = True  # a speck: 16 pixels
    expected = np.zeros_like(canvas)
    expected[20:28, 30:38] = expected[28:36, 38:46] = True
    out = np.asarray(call_candidate(candidate, canvas))
    if out.shape != canvas.shape or out.dtype != bool:
        raise AssertionError("return a bool mask of the input's shape")
    if not np.array_equal(out, expected):
        raise AssertionError("on a test mask the result is not the largest 8-connected component "
                             "(pixels touching at a corner belong together)")
    if np.asarray(call_candidate(candidate, np.zeros((8, 8), bool))).any():
        raise AssertionError("an empty mask must stay empty")
    blobs = perlin_mask((64, 64), np.random.default_rng(5), scale_range=(3, 4), threshold=0.3)
    out = np.asarray(call_candidate(candidate, blobs))
    if not out.any() or (out & ~blobs).any():
        raise AssertionError("the result must be a non-empty part of the input")
    if not np.array_equal(out, component_at(blobs, *np.argwhere(out)[0])):
        raise AssertionError("the result must be one whole 8-connected component")
    for y, x in np.argwhere(blobs & ~out):
        if component_at(blobs, y, x).sum() > out.sum():
            raise AssertionError(f"the component at pixel ({y}, {x}) is larger")


@robust
def exercise_3(candidate, stack: np.ndarray) -> None:
    """``candidate(stack)``: ForegroundSettings(mode="threshold") matching Otsu (IoU >= 0.95) on ``stack``,
    and on darker and brighter copies of it. ``stack``: uint8 N x H x W x 3 images of an object category."""
    originals = np.asarray(stack).astype(np.float32)
    stacks = {
        "as loaded": np.asarray(stack),
        "darker (x 0.6)": np.rint(0.6 * originals).astype(np.uint8),
        "brighter (x 0.6 + 100)": np.rint(0.6 * originals + 100).astype(np.uint8),
    }
    for name, images in stacks.items():
        settings = call_candidate(candidate, images)
        if not isinstance(settings, foreground.ForegroundSettings) or settings.mode != "threshold":
            raise AssertionError("return foreground.ForegroundSettings(mode='threshold', threshold=...)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a poor threshold triggers the fallback warning
            for image in images:
                reference = foreground.foreground_mask(image, foreground.ForegroundSettings(mode="otsu", invert=None))
                mask = foreground.foreground_mask(image, settings)
                iou = (mask & reference).sum() / max((mask | reference).sum(), 1)
                if iou < 0.95:
                    raise AssertionError(
                        f"{name}: threshold {settings.threshold} gives IoU {iou:.3f} with the Otsu mask on one image"
                    )
