"""Self-checks for notebook 00 (overview): defective pixels, object fraction, the blend by hand.

Worked solutions: ``solutions/00_overview_solutions.ipynb``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from memseg_lite.core.io import write_image
from memseg_lite.teaching.checks.support import robust
from memseg_lite.teaching.exercises import call_candidate


def _toy_category(root: Path) -> float:
    """Write a tiny MVTec-layout category ``toy`` under ``root``; return its defective-pixel fraction.

    Good images are 32 x 32, defective ones 16 x 20, so the pooled fraction (defective pixels over
    all test pixels) differs from the mean of the per-image fractions.
    """
    rng = np.random.default_rng(0)
    category = root / "toy"
    write_image(category / "train" / "good" / "000.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    for name in ("000", "001"):
        write_image(category / "test" / "good" / f"{name}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    defective = 0
    for defect, (top, left, height, width) in {"scratch": (2, 3, 3, 4), "dent": (9, 10, 1, 5)}.items():
        write_image(category / "test" / defect / "000.png", rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))
        mask = np.zeros((16, 20), np.uint8)
        mask[top : top + height, left : left + width] = 255
        write_image(category / "ground_truth" / defect / "000_mask.png", mask)
        defective += height * width
    return defective / (2 * 32 * 32 + 2 * 16 * 20)


@robust
def exercise_1(candidate, data_root=None, category: str = "button") -> None:
    """``candidate(data_root, category)``: the defective fraction of all test pixels of a category.

    Checked on a tiny category written here (known answer by construction) and, when
    ``data_root`` is given, for plausibility on the real ``category``.
    """
    with tempfile.TemporaryDirectory() as folder:
        expected = _toy_category(Path(folder))
        answer = float(call_candidate(candidate, Path(folder), "toy"))
    if abs(answer - expected) > 1e-9:
        raise AssertionError(
            f"on a small test category (2 good 32 x 32 images, 2 defective 16 x 20 ones) the answer is {answer:.5f}, "
            "which is not the fraction of defective pixels among ALL test pixels (good images included, "
            "pixels pooled over images of different sizes, mask pixels > 0 counted once)"
        )
    if data_root is not None:
        real = float(call_candidate(candidate, data_root, category))
        if not 0 < real < 0.05:
            raise AssertionError(
                f"{real} is not a small fraction for {category}: defects are a few percent of the pixels at most"
            )


def _disc_image(shape, centre, radius, inside, outside, rng) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2
    image = np.where(disc[..., None], np.array(inside), np.array(outside)).astype(np.int16)
    image += rng.integers(-8, 9, image.shape)  # the two classes stay well apart
    return np.clip(image, 0, 255).astype(np.uint8), disc


def _mixed_grey_image(shape, parts, rng) -> tuple[np.ndarray, float]:
    """A grey RGB image whose pixels (shuffled) come in classes ``parts``: (share, lowest, highest grey level).

    Returns the image and the share of its brightest class.
    """
    count = shape[0] * shape[1]
    values = np.concatenate([rng.integers(low, high + 1, round(share * count)) for share, low, high in parts])
    assert values.size == count, "the shares must add up to the pixel count"
    rng.shuffle(values)
    grey = values.reshape(shape).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), parts[-1][0]


@robust
def exercise_2(candidate) -> None:
    """``candidate(image)``: the fraction of an RGB image that Otsu's threshold puts in the bright class.

    Independent construction: images made of classes whose grey levels do not overlap, so the
    bright class is known exactly: a disc on a background (either way round), then two images on
    which a threshold at the mean grey level (or the median) splits a class: a small bright class
    beside a large one whose range holds the mean, and three classes, where Otsu's threshold falls
    in the gap below the brightest one (checked once with ``cv2``'s Otsu on these seeded images) while
    the mean falls in the lower gap.
    """
    rng = np.random.default_rng(0)
    cases = {
        "a dim disc on a dark background": _disc_image((64, 80), (30, 45), 18, (90, 100, 110), (30, 40, 50), rng),
        "a dark disc on a bright background": _disc_image(
            (60, 60), (28, 31), 22, (120, 120, 120), (200, 205, 195), rng
        ),
    }
    shares = {name: (disc if name.startswith("a dim") else ~disc).mean() for name, (image, disc) in cases.items()}
    images = {name: image for name, (image, _) in cases.items()}
    for name, parts in {
        "a small bright class (15 %) beside a large one": ((0.85, 100, 140), (0.15, 200, 210)),
        "three classes (50 %, 25 %, 25 %)": ((0.5, 10, 30), (0.25, 100, 110), (0.25, 230, 250)),
    }.items():
        images[name], shares[name] = _mixed_grey_image((50, 60), parts, rng)
    for name, image in images.items():
        answer = float(call_candidate(candidate, image.copy()))
        if abs(answer - shares[name]) > 1e-9:
            raise AssertionError(
                f"{name}: got {answer:.4f}; expected the share of pixels in the brighter of the two classes "
                "that Otsu's threshold makes (grey conversion, then Otsu's threshold chosen from the image itself: "
                "not a fixed one, nor the mean or median grey level)"
            )


@robust
def exercise_3(candidate) -> None:
    """``candidate()``: (inside, outside) values of the blend for I = 0.8, I_n = 0.2, delta = 0.25."""
    result = call_candidate(candidate)
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise AssertionError("return a tuple (inside, outside)")
    inside, outside = (float(value) for value in result)
    if abs(outside - 0.8) > 1e-9:
        raise AssertionError(f"outside = {outside}: where M = 0 only the first term (1 - M) I remains")
    if abs(inside - 0.65) > 1e-9:
        raise AssertionError(
            f"inside = {inside}: where M = 1 the first term vanishes; mind which of I and I_n delta weighs"
        )
