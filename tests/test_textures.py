"""Texture source (procedural bank, DTD-style folders) and the 10 texture augmentations."""

from __future__ import annotations

import numpy as np
import pytest

from memseg_lite.core.io import write_image
from memseg_lite.simulation.textures import (
    AUGMENTATIONS,
    PROCEDURAL_FAMILIES,
    TextureSource,
    apply_augmentation,
    augment_texture,
    is_default_texture_root,
    procedural_texture,
    random_colour_map,
    texture_bank,
)


def colourful(size: int = 40, seed: int = 0) -> np.ndarray:
    """A smooth, colourful, mid-contrast test image (values within 40..200)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    channels = [np.sin(2 * np.pi * (a * yy + b * xx) + c) for a, b, c in rng.uniform(0.5, 2.0, (3, 3))]
    image = 120 + 80 * np.stack(channels, axis=-1) + rng.normal(0, 3, (size, size, 3))
    return np.clip(np.rint(image), 40, 200).astype(np.uint8)


# ---------------------------------------------------------------- the procedural bank
def test_missing_default_folder_means_procedural_and_a_missing_explicit_one_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"no DTD textures at data/dtd.*procedural.*memseg-lite download dtd"):
        source = TextureSource("data/dtd", seed=1, n_procedural=6, procedural_size=32)
    assert source.kind == "procedural" and len(source) == 6
    with pytest.raises(FileNotFoundError, match=r"texture root .*no_dtd_here does not exist.*download dtd"):
        TextureSource(tmp_path / "no_dtd_here")
    assert is_default_texture_root(tmp_path / "data" / "dtd") and not is_default_texture_root(tmp_path / "dtd")
    texture = source.sample(np.random.default_rng(0), (24, 40))
    assert texture.dtype == np.uint8 and texture.shape == (24, 40, 3)
    assert TextureSource(None, n_procedural=3, procedural_size=32).kind == "procedural"


def test_procedural_bank_is_varied_and_seeded():
    source = TextureSource(None, seed=3, n_procedural=6, procedural_size=32)
    textures = [source.image(i) for i in range(6)]
    for texture in textures:
        assert texture.shape == (32, 32, 3) and texture.dtype == np.uint8
        assert texture.std() > 3  # not flat
    assert all(not np.array_equal(a, b) for i, a in enumerate(textures) for b in textures[i + 1 :])
    again = TextureSource(None, seed=3, n_procedural=6, procedural_size=32)
    np.testing.assert_array_equal(again.image(4), textures[4])  # texture i does not depend on the others
    other = TextureSource(None, seed=4, n_procedural=6, procedural_size=32)
    assert not np.array_equal(other.image(4), textures[4])


@pytest.mark.parametrize("family", PROCEDURAL_FAMILIES)
def test_each_family_makes_a_textured_colour_image(family):
    texture = procedural_texture(np.random.default_rng(5), 32, family)
    assert texture.shape == (32, 32, 3) and texture.dtype == np.uint8
    assert len(np.unique(texture.reshape(-1, 3), axis=0)) > 4


def test_colour_map_passes_through_its_colours():
    lut = random_colour_map(np.random.default_rng(2), n_colours=2)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    # two colours: a straight line between the end points
    expected = np.rint(lut[0] + (lut[-1].astype(float) - lut[0]) * np.linspace(0, 1, 256)[:, None])
    np.testing.assert_allclose(lut, expected, atol=1)


# ---------------------------------------------------------------- image folders
def test_dtd_layout_folder(tmp_path):
    for klass, colour in (("banded", 50), ("dotted", 150)):
        for index in range(2):
            write_image(tmp_path / "images" / klass / f"{klass}_{index}.jpg", colourful(48, seed=colour + index))
    source = TextureSource(tmp_path)
    assert source.kind == "dtd" and len(source) == 4
    texture = source.sample(np.random.default_rng(0), 20)
    assert texture.shape == (20, 20, 3) and texture.dtype == np.uint8
    assert source.image(0).shape == (48, 48, 3)


def test_flat_folder_of_images(tmp_path):
    write_image(tmp_path / "a.png", colourful(30, 1))
    write_image(tmp_path / "b.png", colourful(30, 2))
    source = TextureSource(tmp_path)
    assert source.kind == "dtd" and len(source) == 2
    drawn = {source.sample(np.random.default_rng(seed), 30).tobytes() for seed in range(20)}
    assert len(drawn) == 2  # both images are used, unchanged at their own size


def test_empty_folder_raises(tmp_path):
    (tmp_path / "images" / "empty_class").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no images"):
        TextureSource(tmp_path)


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError):
        TextureSource(None, n_procedural=0)
    with pytest.raises(ValueError):
        TextureSource(None).sample(np.random.default_rng(), 0)
    with pytest.raises(TypeError):
        TextureSource(None).sample(7, 16)
    with pytest.raises(ValueError):
        procedural_texture(np.random.default_rng(), 32, "plaid")


# ---------------------------------------------------------------- augmentations
def test_there_are_ten_augmentations():
    assert len(AUGMENTATIONS) == 10 and len(set(AUGMENTATIONS)) == 10


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_augmentation_keeps_dtype_and_shape_and_changes_the_image(name):
    image = colourful(36)
    for seed in range(3):
        out = apply_augmentation(image, name, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert np.abs(out.astype(int) - image).mean() > 1.0, f"{name} left the image (almost) unchanged"
    np.testing.assert_array_equal(image, colourful(36))  # the input is not modified


def test_augmentation_values():
    image = colourful(36)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(apply_augmentation(image, "invert", rng), 255 - image)
    stretched = apply_augmentation(image, "autocontrast", rng)
    assert (stretched.reshape(-1, 3).min(0) <= 1).all() and (stretched.reshape(-1, 3).max(0) >= 254).all()  # torchvision truncates
    posterized = apply_augmentation(image, "posterize", rng)  # at most 5 bits kept
    assert (posterized % 8 == 0).all()
    solarized = apply_augmentation(image, "solarize", rng)  # pixels at or above the threshold are inverted
    changed = solarized != image
    np.testing.assert_array_equal(solarized[changed], 255 - image[changed])
    equalized = apply_augmentation(image, "equalize", rng)  # a flatter histogram: wider spread
    assert equalized.std() > image.std()


def test_augment_texture_is_seeded_and_composes_distinct_ops():
    image = colourful(32)
    a = augment_texture(image, np.random.default_rng(9))
    b = augment_texture(image, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(augment_texture(image, np.random.default_rng(9), n_ops=0), image)
    # The ops are drawn as a permutation (so distinct), then applied in that order with the same rng.
    rng = np.random.default_rng(4)
    first, second = (AUGMENTATIONS[i] for i in rng.permutation(len(AUGMENTATIONS))[:2])
    expected = apply_augmentation(apply_augmentation(image, first, rng), second, rng)
    np.testing.assert_array_equal(augment_texture(image, np.random.default_rng(4), n_ops=2), expected)


@pytest.mark.parametrize(
    "call,error",
    [
        (lambda: apply_augmentation(colourful(), "blur", np.random.default_rng()), ValueError),
        (lambda: apply_augmentation(colourful().astype(np.float32), "invert", np.random.default_rng()), TypeError),
        (lambda: apply_augmentation(colourful()[..., 0], "invert", np.random.default_rng()), ValueError),
        (lambda: augment_texture(colourful(), np.random.default_rng(), n_ops=11), ValueError),
        (lambda: augment_texture(colourful(), None), TypeError),
    ],
)
def test_bad_augmentation_input_raises(call, error):
    with pytest.raises(error):
        call()


def test_texture_bank_shape_and_determinism():
    source = TextureSource(None, n_procedural=4, procedural_size=32)
    bank = texture_bank(source, np.random.default_rng(0), 5, (16, 24))
    assert bank.shape == (5, 16, 24, 3) and bank.dtype == np.uint8
    np.testing.assert_array_equal(bank, texture_bank(source, np.random.default_rng(0), 5, (16, 24)))
