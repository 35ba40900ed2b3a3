"""Foreground masks on synthetic images with a known answer; Otsu against brute force; torch parity."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch

from memseg_lite.datasets.mvtec import MVTEC_CATEGORIES
from memseg_lite.simulation.foreground import (
    FOREGROUND_SETTINGS,
    ForegroundSettings,
    fill_holes,
    fill_holes_torch,
    foreground_mask,
    foreground_mask_torch,
    otsu_threshold,
    otsu_threshold_torch,
    to_grey,
    to_grey_torch,
)

SIZE = 64


def disk(radius: float = 18, centre: tuple[float, float] = (30, 34), size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def picture(mask: np.ndarray, inside: int, outside: int, noise: float = 6.0, seed: int = 0) -> np.ndarray:
    """RGB uint8 image: ``inside`` grey on the mask, ``outside`` elsewhere, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    grey = np.where(mask, inside, outside) + rng.normal(0, noise, mask.shape)
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return np.stack([grey] * 3, axis=-1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def brute_force_otsu(grey: np.ndarray) -> int:
    """Otsu by definition: the t maximising the between-class variance of {<= t} and {> t}."""
    values = grey.ravel().astype(np.float64)
    best, best_t = -1.0, 0
    for t in range(256):
        low, high = values[values <= t], values[values > t]
        if len(low) == 0 or len(high) == 0:
            continue
        w0, w1 = len(low) / len(values), len(high) / len(values)
        between = w0 * w1 * (low.mean() - high.mean()) ** 2
        if between > best + 1e-9:
            best, best_t = between, t
    return best_t


# ---------------------------------------------------------------- the three modes
def test_threshold_bright_disk_on_dark():
    truth = disk()
    mask = foreground_mask(picture(truth, 190, 30), ForegroundSettings(mode="threshold", threshold=100))
    assert mask.dtype == bool and mask.shape == truth.shape
    assert iou(mask, truth) > 0.95


def test_threshold_dark_disk_on_light_with_invert():
    truth = disk()
    image = picture(truth, 40, 210)
    assert iou(foreground_mask(image, ForegroundSettings(mode="threshold", threshold=120, invert=True)), truth) > 0.95
    # without invert the background is taken as the object (and the disk, enclosed by it, filled in)
    wrong = foreground_mask(image, ForegroundSettings(mode="threshold", threshold=120, fill_holes=False))
    assert wrong[~truth].all() and not wrong[disk(radius=15)].any()


def test_otsu_finds_the_object_and_matches_brute_force():
    truth = disk(radius=14)
    image = picture(truth, 170, 60, noise=10)
    grey = to_grey(image)
    threshold = otsu_threshold(grey)
    assert 60 < threshold < 170
    assert abs(threshold - brute_force_otsu(grey)) <= 1
    assert iou(foreground_mask(image, ForegroundSettings(mode="otsu")), truth) > 0.95


@pytest.mark.parametrize("inside,outside", [(200, 40), (40, 200)])
def test_automatic_polarity_takes_the_border_as_background(inside, outside):
    truth = disk()
    mask = foreground_mask(picture(truth, inside, outside), ForegroundSettings(mode="otsu", invert=None))
    assert iou(mask, truth) > 0.95


def test_clean_up_removes_specks_and_fills_holes():
    ring = disk(20) & ~disk(6)
    image = picture(ring, 200, 30, noise=0)
    image[5, 5] = 255  # an isolated bright speck on the background
    mask = foreground_mask(image, ForegroundSettings(mode="threshold", threshold=100))
    assert not mask[5, 5]
    assert mask[disk(6)].all()  # the hole is filled
    no_fill = foreground_mask(image, ForegroundSettings(mode="threshold", threshold=100, fill_holes=False))
    assert not no_fill[disk(4)].any()


def test_fill_holes_against_connected_components():
    rng = np.random.default_rng(0)
    for _ in range(10):
        mask = cv2.GaussianBlur(rng.random((40, 40)).astype(np.float32), (0, 0), 2) > 0.5
        # Independent answer: background components (4-connected) that touch no border are holes.
        count, labels = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
        border = set(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).tolist())
        holes = np.isin(labels, [k for k in range(1, count) if k not in border])
        np.testing.assert_array_equal(fill_holes(mask), mask | holes)


def test_none_mode_and_textures_give_all_ones():
    image = picture(disk(), 200, 30)
    for settings in ("none", None, "carpet", "wood", ForegroundSettings(mode="none")):
        mask = foreground_mask(image, settings)
        assert mask.all() and mask.shape == (SIZE, SIZE)


def test_blank_image_falls_back_to_ones_with_a_warning():
    blank = np.full((SIZE, SIZE, 3), 20, dtype=np.uint8)
    with pytest.warns(UserWarning, match=r"hazelnut.*min_fraction.*whole image"):
        mask = foreground_mask(blank, "hazelnut")
    assert mask.all()


def test_grey_inputs_match_rgb():
    image = picture(disk(), 200, 30)
    settings = ForegroundSettings(mode="otsu")
    expected = foreground_mask(image, settings)
    np.testing.assert_array_equal(foreground_mask(image[..., 0], settings), expected)
    np.testing.assert_array_equal(foreground_mask(image[..., :1], settings), expected)
    np.testing.assert_array_equal(foreground_mask(image / 255.0, settings), expected)


# ---------------------------------------------------------------- settings
def test_every_mvtec_category_has_settings():
    assert len(MVTEC_CATEGORIES) == 15
    for name in MVTEC_CATEGORIES:
        assert isinstance(FOREGROUND_SETTINGS[name], ForegroundSettings)
    for name in ("carpet", "grid", "leather", "tile", "wood", "cable"):
        assert FOREGROUND_SETTINGS[name].mode == "none"
    for name in ("button", "mesh"):
        assert name in FOREGROUND_SETTINGS


def test_unknown_category_defaults_to_otsu():
    truth = disk()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask = foreground_mask(picture(truth, 30, 200), "my_new_part")
    assert iou(mask, truth) > 0.95


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "kmeans"},
        {"threshold": 300},
        {"threshold": 1.5},
        {"invert": "yes"},
        {"min_fraction": 1.0},
        {"kernel_size": 4},
        {"kernel_size": -1},
    ],
)
def test_bad_settings_raise(kwargs):
    with pytest.raises(ValueError):
        ForegroundSettings(**kwargs)


@pytest.mark.parametrize(
    "image,settings,error",
    [
        (np.zeros((4, 4, 2), np.uint8), "otsu", ValueError),
        (np.zeros((4, 4), np.int32), "otsu", TypeError),
        (np.zeros((8, 8), np.uint8), 3.5, TypeError),
    ],
)
def test_bad_input_raises(image, settings, error):
    with pytest.raises(error):
        foreground_mask(image, settings)


# ---------------------------------------------------------------- torch parity
def batch_of_pictures() -> np.ndarray:
    images = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        truth = disk(rng.uniform(8, 22), tuple(rng.uniform(24, 40, 2))) & ~disk(rng.uniform(2, 5), (32, 32))
        inside, outside = (190, 40) if seed % 2 else (50, 200)
        rgb = picture(truth, inside, outside, noise=14, seed=seed)
        rgb[..., 0] = np.clip(rgb[..., 0].astype(int) + 25, 0, 255)  # channels differ
        images.append(rgb)
    return np.stack(images)


def test_torch_grey_and_otsu_match_opencv():
    images = batch_of_pictures()
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2)
    grey = to_grey_torch(tensor)
    for index, image in enumerate(images):
        np.testing.assert_array_equal(grey[index].numpy(), cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        assert otsu_threshold_torch(grey[index : index + 1]).item() == otsu_threshold(grey[index].numpy())


@pytest.mark.parametrize(
    "settings",
    [
        ForegroundSettings(mode="otsu", invert=None),
        ForegroundSettings(mode="threshold", threshold=110, invert=True, min_fraction=0.0),
        ForegroundSettings(mode="otsu", kernel_size=3, fill_holes=False, min_fraction=0.0),
        ForegroundSettings(mode="none"),
    ],
)
def test_torch_foreground_equals_numpy(settings):
    images = batch_of_pictures()
    expected = np.stack([foreground_mask(image, settings) for image in images])
    for backend in ("torch", "opencv"):
        got = foreground_mask_torch(torch.from_numpy(images).permute(0, 3, 1, 2), settings, backend=backend)
        assert got.dtype == torch.bool
        np.testing.assert_array_equal(got.numpy(), expected)


def test_torch_fill_holes_equals_numpy():
    rng = np.random.default_rng(1)
    masks = np.stack([cv2.GaussianBlur(rng.random((33, 41)).astype(np.float32), (0, 0), 1.5) > 0.5 for _ in range(5)])
    got = fill_holes_torch(torch.from_numpy(masks))
    for index, mask in enumerate(masks):
        np.testing.assert_array_equal(got[index].numpy(), fill_holes(mask))


def test_torch_fallback_warns_and_gives_ones():
    blank = torch.full((2, 3, 32, 32), 20, dtype=torch.uint8)
    for backend in ("torch", "opencv"):
        with pytest.warns(UserWarning, match="min_fraction.*some images"):
            mask = foreground_mask_torch(blank, "pill", backend=backend)
        assert mask.all()
    with pytest.raises(ValueError, match="backend"):
        foreground_mask_torch(blank, "pill", backend="gpu")


def test_metal_nut_keeps_its_central_hole():
    ring = disk(radius=24, centre=(32, 32)) & ~disk(radius=9, centre=(32, 32))
    mask = foreground_mask(picture(ring, 170, 10), "metal_nut")
    assert not mask[28:37, 28:37].any()  # the hole is background
    assert iou(mask, ring) > 0.9
    filled = foreground_mask(picture(ring, 170, 10), ForegroundSettings(mode="threshold", threshold=40))
    assert filled[28:37, 28:37].all()  # what fill_holes did before


def test_a_screw_of_3_percent_keeps_its_mask():
    size = 128
    screw = np.zeros((size, size), bool)
    screw[60:66, 20:100] = True  # 6 x 80 pixels: 2.9 % of the frame, dark on light
    assert 0.02 < screw.mean() < 0.04
    image = picture(screw, 40, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fall-back warning either
        mask = foreground_mask(image, "screw")
    assert not mask.all() and iou(mask, screw) > 0.8
    thinner = np.zeros((size, size), bool)
    thinner[62:67, 30:70] = True  # 1.2 %: below the general 0.02, above the screw's 0.005
    assert iou(foreground_mask(picture(thinner, 40, 200), "screw"), thinner) > 0.6


def test_a_too_small_foreground_warns_once_per_category():
    blank = np.full((SIZE, SIZE, 3), 20, dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # what a plain Python run does
        for _ in range(5):
            foreground_mask(blank, "hazelnut")
        for _ in range(3):
            foreground_mask(blank, "pill")
        for _ in range(3):
            foreground_mask_torch(torch.from_numpy(blank).permute(2, 0, 1)[None].repeat(2, 1, 1, 1), "pill",
                                  backend="torch")
    messages = [str(w.message) for w in caught]
    assert sum("'hazelnut'" in m for m in messages) == 1
    assert sum("'pill'" in m for m in messages) == 2  # one per calling place: per image and per batch


def test_otsu_between_class_variance_is_the_class_by_class_criterion_and_peaks_at_cv2s_threshold():
    from memseg_lite.simulation.foreground import otsu_between_class_variance, otsu_threshold

    rng = np.random.default_rng(5)
    grey = np.clip(np.r_[rng.normal(70, 15, 700), rng.normal(180, 10, 300)], 0, 255).astype(np.uint8).reshape(25, 40)
    curve = otsu_between_class_variance(grey)
    values = grey.ravel().astype(np.float64)
    for t in (0, 50, 120, 200, 255):
        low, high = values[values <= t], values[values > t]
        expected = (
            len(low) * len(high) / values.size**2 * (low.mean() - high.mean()) ** 2 if len(low) and len(high) else 0
        )
        assert curve[t] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert curve.shape == (256,) and int(np.argmax(curve)) == otsu_threshold(grey)
    with pytest.raises(ValueError, match="uint8"):
        otsu_between_class_variance(grey.astype(np.float32))
