"""Texture source (procedural bank, DTD-style folders), the 10 texture augmentations (numpy and
batched torch) and the texture pool of the device path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memseg_lite.core.io import write_image
from memseg_lite.simulation.textures import (
    AUGMENTATIONS,
    PROCEDURAL_FAMILIES,
    TexturePool,
    TextureSource,
    apply_augmentation,
    apply_augmentation_torch,
    augment_texture,
    augment_textures_torch,
    draw_augmentation_params,
    draw_augmentation_params_torch,
    is_default_texture_root,
    procedural_texture,
    random_colour_map,
    resize_to,
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
    channels = stretched.reshape(-1, 3)
    assert (channels.min(0) <= 1).all() and (channels.max(0) >= 254).all()  # torchvision truncates
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


# ---------------------------------------------------------------- batched torch augmentations
def as_batch(*images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def as_image(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_torch_augmentation_matches_numpy_with_the_same_parameters(name):
    """Same parameters, same pixels (hue round trip and rotation interpolation: within 1 grey level)."""
    images = [colourful(36, seed) for seed in range(6)]
    images[0] = np.ascontiguousarray(np.concatenate([images[0][:, :20], images[0][:, :16]], axis=1))  # not square
    for seed, image in enumerate(images):
        params = draw_augmentation_params(name, np.random.default_rng(seed))
        expected = apply_augmentation(image, name, np.random.default_rng(0), params)
        got = as_image(apply_augmentation_torch(as_batch(image), name, params)[0])
        difference = np.abs(expected.astype(int) - got)
        assert difference.max() <= (1 if name in ("hue_saturation", "affine_rotation") else 0), name
        assert difference.mean() < 0.02, name


def test_torch_augmentation_uses_one_parameter_per_image():
    images = [colourful(24, seed) for seed in range(4)]
    params = [draw_augmentation_params("brightness", np.random.default_rng(seed)) for seed in range(4)]
    batched = apply_augmentation_torch(
        as_batch(*images), "brightness",
        {"gain": torch.tensor([p["gain"] for p in params]), "offset": torch.tensor([p["offset"] for p in params])},
    )
    for k in range(4):
        np.testing.assert_array_equal(
            as_image(batched[k]), apply_augmentation(images[k], "brightness", np.random.default_rng(0), params[k])
        )


@pytest.mark.parametrize("name", [n for n in AUGMENTATIONS if n not in ("invert", "autocontrast", "equalize")])
def test_torch_parameter_draws_follow_the_numpy_distributions(name):
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(1)
    numpy_draws = [draw_augmentation_params(name, rng) for _ in range(1500)]
    torch_draws = draw_augmentation_params_torch(name, 1500, torch.Generator().manual_seed(1))
    for key, values in torch_draws.items():
        values = values.double().numpy()
        reference = np.array([d[key] for d in numpy_draws], dtype=np.float64)
        assert values.shape == reference.shape, key
        if np.all(reference == np.rint(reference)):  # integer parameters: the same set of values
            assert set(values.tolist()) == set(reference.tolist()), (name, key)
        for column in range(values.reshape(1500, -1).shape[1]):
            test = ks_2samp(values.reshape(1500, -1)[:, column], reference.reshape(1500, -1)[:, column])
            assert test.pvalue > 1e-3, (name, key)


def test_augment_textures_torch_is_seeded_per_sample_and_keeps_the_input():
    texture = colourful(32)
    batch = as_batch(*[texture] * 12)
    original = batch.clone()
    a = augment_textures_torch(batch, torch.Generator().manual_seed(3))
    b = augment_textures_torch(batch, torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and a.shape == batch.shape and torch.equal(a, b)
    assert torch.equal(batch, original)  # the input is not modified
    assert len({bytes(x.numpy().tobytes()) for x in a}) == 12  # each copy got its own augmentations
    assert torch.equal(augment_textures_torch(batch, torch.Generator().manual_seed(3), n_ops=0), batch)
    assert not torch.equal(augment_textures_torch(batch, torch.Generator().manual_seed(4)), a)
    # The mechanics, replayed with the same generator: a random order of the 10 ops, then each
    # op's parameters from the next uniform numbers.
    for seed in range(5):
        single = augment_textures_torch(batch[:1], torch.Generator().manual_seed(seed), n_ops=1)
        generator = torch.Generator().manual_seed(seed)
        name = AUGMENTATIONS[torch.rand((1, 10), generator=generator).argsort(1)[0, 0].item()]
        expected = apply_augmentation_torch(batch[:1], name, draw_augmentation_params_torch(name, 1, generator))
        assert torch.equal(single, expected), name


def test_torch_augmentation_errors():
    with pytest.raises(ValueError, match="uint8"):
        augment_textures_torch(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="uint8"):
        apply_augmentation_torch(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "invert", {})
    with pytest.raises(ValueError, match="unknown augmentation"):
        apply_augmentation_torch(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "blur", {})
    with pytest.raises(ValueError, match="n_ops"):
        augment_textures_torch(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), n_ops=11)


# ---------------------------------------------------------------- the texture pool
def test_texture_pool_streams_a_large_source_in_shuffled_passes():
    source = TextureSource(None, seed=2, n_procedural=10, procedural_size=16)
    pool = TexturePool(source, (12, 12), pool_size=4, loads_per_image=1.0, seed=5)
    assert pool.refreshing and len(pool) == 4 and pool.textures.shape == (4, 3, 12, 12)
    loaded = list(pool.ids.tolist())
    for _ in range(4):
        before = pool.ids.clone()
        pool.begin_batch(2)
        loaded += [int(i) for i, j in zip(pool.ids.tolist(), before.tolist(), strict=True) if i != j]
    # 4 + 6 loads (2 per batch from the second batch on): one full pass over the 10 textures
    assert pool.textures_loaded == 10 and sorted(loaded) == list(range(10))
    for slot, index in enumerate(pool.ids.tolist()):
        np.testing.assert_array_equal(
            pool.textures[slot].permute(1, 2, 0).numpy(), resize_to(source.image(index), (12, 12))
        )
    textures, ids = pool.draw(500, torch.Generator().manual_seed(0))
    assert textures.shape == (500, 3, 12, 12) and set(ids.tolist()) == set(pool.ids.tolist())
    counts = np.bincount([pool.ids.tolist().index(i) for i in ids.tolist()], minlength=4)
    assert counts.min() > 90  # uniform over the slots (expected 125 each)


def test_texture_pool_of_a_small_source_and_errors():
    source = TextureSource(None, seed=2, n_procedural=3, procedural_size=16)
    pool = TexturePool(source, 8, pool_size=64)
    assert not pool.refreshing and pool.ids.tolist() == [0, 1, 2]
    pool.begin_batch(100)
    assert pool.textures_loaded == 3
    with pytest.raises(TypeError, match="TextureSource"):
        TexturePool("data/dtd", 8)
    with pytest.raises(ValueError, match="pool_size"):
        TexturePool(source, 8, pool_size=0)
    with pytest.raises(ValueError, match="refresh_every"):
        TexturePool(source, 8, refresh_every=0)
    with pytest.raises(ValueError, match="loads_per_image"):
        TexturePool(source, 8, loads_per_image=-0.5)
    with pytest.raises(ValueError, match="load_threads"):
        TexturePool(source, 8, load_threads=0)


@pytest.mark.parametrize("refresh_every", [1, 3])
def test_texture_pool_prefetch_reads_off_the_training_thread_and_changes_nothing(refresh_every):
    """Prefetched refreshes give the pool of on-the-spot reads, also when a batch size change or a
    seek makes the guess wrong; with steady batches the training thread reads nothing after the fill."""
    import threading

    def pool_and_reader_threads(prefetch: bool):
        source = TextureSource(None, seed=2, n_procedural=40, procedural_size=16)
        threads = []
        original = source.image

        def image(index):
            threads.append(threading.current_thread())
            return original(index)

        source.image = image
        pool = TexturePool(source, (12, 12), pool_size=6, loads_per_image=0.5, refresh_every=refresh_every, seed=3,
                           load_threads=1, prefetch=prefetch)
        return pool, threads

    plain, _ = pool_and_reader_threads(False)
    fetched, threads = pool_and_reader_threads(True)
    assert fetched.prefetch and not plain.prefetch
    main = threading.current_thread()
    schedule = [4] * 12 + [6] * 5 + [4] * 6  # a batch size change: the prefetched guess is wrong once
    for batch, size in enumerate(schedule):
        for pool in (plain, fetched):
            pool.begin_batch(size)
        assert fetched.ids.tolist() == plain.ids.tolist(), f"batch {batch}"
        torch.testing.assert_close(fetched.textures, plain.textures, rtol=0, atol=0)
        if batch == 8:
            steady = list(threads)
            assert len(steady) > 6 and all(t is main for t in steady[:6])  # the first fill: 6 textures
            assert all(t is not main for t in steady[6:]), "refreshes read on the training thread"
    assert fetched.loads_done == plain.loads_done > 10
    for pool in (plain, fetched):
        pool.seek(5, 4)
        pool.begin_batch(4)
    assert fetched.ids.tolist() == plain.ids.tolist()
    torch.testing.assert_close(fetched.textures, plain.textures, rtol=0, atol=0)
