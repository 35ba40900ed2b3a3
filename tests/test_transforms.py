"""Sizes (S or HxW), letterbox / stretch fitting and its inverse, the mixed-size warning."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from memseg_lite.core.sizes import parse_size
from memseg_lite.core.transforms import (
    fit_image,
    letterbox_geometry,
    mixed_size_warning,
    resize_image,
    resize_mask,
    unfit_map,
)
from memseg_lite.training.config import TrainConfig


@pytest.mark.parametrize(
    ("value", "expected"),
    [(256, (256, 256)), ("256", (256, 256)), ("256x512", (256, 512)), (" 64 X 128 ", (64, 128)),
     ((96, 64), (96, 64)), ([32, 64], (32, 64)), (np.int64(64), (64, 64))],
)
def test_parse_size_accepts_square_and_rectangular_forms(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["256x", "x256", "2.5", "256x512x3", (1, 2, 3), 0, "0x64", True, 64.0, None])
def test_parse_size_rejects_everything_else(value):
    with pytest.raises(ValueError, match="image size"):
        parse_size(value)


def test_square_images_resize_exactly_as_before():
    image = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    for size in (64, 128):
        old = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if size < 100 else cv2.INTER_LINEAR)
        for mode in ("letterbox", "stretch"):
            np.testing.assert_array_equal(resize_image(image, size, mode=mode), old)
    cropped = resize_image(image, 96, center_crop=64)
    np.testing.assert_array_equal(cropped, cv2.resize(image, (96, 96), interpolation=cv2.INTER_AREA)[16:80, 16:80])


def test_letterbox_keeps_the_aspect_ratio_and_pads_black():
    image = np.full((50, 200, 3), 200, dtype=np.uint8)  # 1 : 4
    fitted = fit_image(image, (64, 128))  # content 32 x 128, centred: rows 16..47
    assert fitted.shape == (64, 128, 3)
    assert letterbox_geometry((50, 200), (64, 128)) == (16, 0, 32, 128)
    assert (fitted[:16] == 0).all() and (fitted[48:] == 0).all() and (fitted[16:48] == 200).all()
    # Same aspect ratio as the target: a plain resize, no border.
    same = np.random.default_rng(1).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        fit_image(same, (64, 128)), cv2.resize(same, (128, 64), interpolation=cv2.INTER_LINEAR)
    )
    stretched = fit_image(image, (64, 128), mode="stretch")
    assert stretched.shape == (64, 128, 3) and (stretched == 200).all()
    with pytest.raises(ValueError, match="resize mode"):
        fit_image(image, 64, mode="crop")


def test_unfit_map_undoes_the_letterbox():
    """A blob drawn in the original image lands at the same place after fit + unfit."""
    original = np.zeros((60, 180), dtype=np.float32)
    original[20:40, 90:150] = 1.0
    fitted = fit_image(original, (64, 128))
    back = unfit_map(fitted, original.shape)
    assert back.shape == (60, 180)
    assert np.abs(back - original).mean() < 0.03
    assert back[30, 120] > 0.9 and back[5, 10] < 0.1
    assert unfit_map(fit_image(original, (64, 128), mode="stretch"), original.shape, mode="stretch").shape == (60, 180)


def test_masks_are_fitted_with_nearest_neighbour():
    mask = np.zeros((30, 90), dtype=np.uint8)
    mask[10:20, 30:60] = 255
    fitted = resize_mask(mask, (64, 128), mode="letterbox")
    assert fitted.shape == (64, 128) and set(np.unique(fitted)) == {0, 255}


def test_mixed_size_warning():
    assert mixed_size_warning([(64, 128), (32, 64)], (64, 128), "stretch") is None
    assert "stretched" in mixed_size_warning([(64, 128), (100, 100)], (64, 128), "stretch")
    assert mixed_size_warning([(64, 128), (32, 64)], (64, 128), "letterbox") is None
    assert "mixed aspect ratios" in mixed_size_warning([(64, 128), (100, 100)], 64, "letterbox")


def test_train_config_sizes():
    assert TrainConfig(image_size="64").image_size == 64  # square stays an int: old configs unchanged
    config = TrainConfig(image_size="64x128")
    assert config.image_size == (64, 128) and config.image_shape == (64, 128)
    assert config.to_dict()["image_size"] == [64, 128]
    assert TrainConfig.from_dict(config.to_dict()).image_size == (64, 128)
    assert TrainConfig(image_size=[96, 96]).image_size == 96
    with pytest.raises(ValueError, match="multiple of 32"):
        TrainConfig(image_size="64x100")
    with pytest.raises(ValueError, match="center_crop needs a square"):
        TrainConfig(image_size="64x128", center_crop=64)
    with pytest.raises(ValueError, match="resize must be one of"):
        TrainConfig(resize="crop")
