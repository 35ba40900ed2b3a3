"""The anomaly simulator: the blend formula, masks, kinds, dtypes, determinism, errors, torch parity,
and the device path against the loader path (kinds, masks, deltas, texture variety)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memseg_lite.simulation.foreground import ForegroundSettings, foreground_mask
from memseg_lite.simulation.synthesis import (
    ANOMALY_KINDS,
    AnomalySynthesizer,
    SynthesisResult,
    TorchAnomalySynthesizer,
    blend,
    blend_torch,
    colour_jitter,
    colour_jitter_torch,
    shuffle_grid,
    shuffle_grid_torch,
    structure_noise,
)
from memseg_lite.simulation.textures import TextureSource, resize_to, texture_bank

HEIGHT, WIDTH = 40, 56  # not square, not a multiple of the 4 x 8 grid's cells


@pytest.fixture(scope="module")
def textures() -> TextureSource:
    return TextureSource(None, seed=0, n_procedural=6, procedural_size=32)


def object_image(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """A bright, shaded, textured disk on a dark background: uint8 RGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    inside = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (0.4 * height) ** 2
    base = np.where(inside[..., None], [190, 140, 90], [25, 25, 30]) + (xx[..., None] % 7) * 3
    return np.clip(base + rng.normal(0, 4, (height, width, 3)), 0, 255).astype(np.uint8)


def expected_blend(result: SynthesisResult, image: np.ndarray) -> np.ndarray:
    """The paper's formula in float64, written out: (1 - M) I + (1 - delta) M I + delta M I_n."""
    m = result.mask.astype(np.float64)
    m = m[..., None] if image.ndim == 3 else m
    i = image.astype(np.float64)
    noise = result.noise_image.astype(np.float64)
    return (1 - m) * i + (1 - result.delta) * (m * i) + result.delta * (m * noise)


# ---------------------------------------------------------------- the numpy synthesizer
@pytest.mark.parametrize("kind", ["texture", "structure"])
def test_blend_formula_inside_and_untouched_outside(kind, textures):
    image = object_image()
    synthesizer = AnomalySynthesizer("hazelnut", textures)
    for seed in range(4):
        result = synthesizer.sample(image, np.random.default_rng(seed), kind=kind)
        inside = result.mask > 0
        assert result.kind == kind and 0.15 <= result.delta <= 1.0
        np.testing.assert_array_equal(result.image[~inside], image[~inside])
        np.testing.assert_allclose(result.image.astype(float), np.rint(expected_blend(result, image)), atol=1)
        assert np.abs(result.image[inside].astype(int) - image[inside]).mean() > 0  # something changed


def test_mask_is_perlin_times_foreground_and_never_empty(textures):
    image = object_image()
    synthesizer = AnomalySynthesizer("hazelnut", textures, p_normal=0.0)
    truth_foreground = foreground_mask(image, "hazelnut")
    for seed in range(20):
        result = synthesizer.sample(image, np.random.default_rng(seed))
        assert result.mask.dtype == np.float32 and set(np.unique(result.mask)) <= {0.0, 1.0}
        assert result.mask.sum() > 0
        np.testing.assert_array_equal(result.foreground_mask, truth_foreground)
        np.testing.assert_array_equal(result.mask > 0, result.perlin_mask & truth_foreground)


def test_normal_branch_returns_the_input_and_an_empty_mask(textures):
    image = object_image()
    result = AnomalySynthesizer(None, textures).sample(image, np.random.default_rng(0), kind="normal")
    np.testing.assert_array_equal(result.image, image)
    assert result.image is not image  # a copy, safe to modify
    assert result.mask.shape == image.shape[:2] and result.mask.dtype == np.float32 and not result.mask.any()
    assert result.delta is None and result.noise_image is None


def test_forced_delta_is_used(textures):
    image = object_image()
    synthesizer = AnomalySynthesizer(None, textures)
    result = synthesizer.sample(image, np.random.default_rng(1), kind="texture", delta=1.0)
    inside = result.mask > 0
    np.testing.assert_array_equal(result.image[inside], result.noise_image[inside])  # delta = 1: pure noise image


def test_probabilities_are_respected(textures):
    synthesizer = AnomalySynthesizer(None, textures, p_normal=0.3, p_texture=0.8)
    rng = np.random.default_rng(2)
    kinds = [synthesizer.draw_kind(rng) for _ in range(4000)]
    normal = np.mean([k == "normal" for k in kinds])
    texture_share = sum(k == "texture" for k in kinds) / sum(k != "normal" for k in kinds)
    assert abs(normal - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 4000)
    assert abs(texture_share - 0.8) < 4 * np.sqrt(0.8 * 0.2 / (0.7 * 4000))
    # and through __call__: normal samples have empty masks
    image = object_image(24, 24)
    empty = np.mean([not synthesizer(image, np.random.default_rng(seed))[1].any() for seed in range(200)])
    assert abs(empty - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 200)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_images_keep_dtype_and_range(dtype, textures):
    image = (object_image() / 255.0).astype(dtype)
    synthesizer = AnomalySynthesizer("hazelnut", textures)
    for kind in ("texture", "structure"):
        result = synthesizer.sample(image, np.random.default_rng(3), kind=kind)
        assert result.image.dtype == dtype and result.noise_image.dtype == dtype
        assert 0.0 <= result.image.min() and result.image.max() <= 1.0
        outside = result.mask == 0
        np.testing.assert_array_equal(result.image[outside], image[outside])
        np.testing.assert_allclose(result.image, expected_blend(result, image), atol=1e-5)


@pytest.mark.parametrize("shape", [(HEIGHT, WIDTH), (HEIGHT, WIDTH, 1)])
def test_grey_images(shape, textures):
    image = object_image()[..., 0].reshape(shape)
    synthesizer = AnomalySynthesizer("otsu", textures)
    for kind in ("texture", "structure"):
        result = synthesizer.sample(image, np.random.default_rng(4), kind=kind)
        assert result.image.shape == shape and result.image.dtype == np.uint8
        assert result.noise_image.shape == shape
        np.testing.assert_allclose(result.image.astype(float), np.rint(expected_blend(result, image)), atol=1)


def test_same_seed_same_sample(textures):
    image = object_image()
    synthesizer = AnomalySynthesizer("hazelnut", textures)
    a = synthesizer.sample(image, np.random.default_rng(5))
    b = synthesizer.sample(image, np.random.default_rng(5))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    images = {
        synthesizer.sample(image, np.random.default_rng(seed), kind="texture").image.tobytes() for seed in range(5)
    }
    assert len(images) == 5


def test_max_tries_error_names_the_settings(textures):
    image = object_image()
    impossible = AnomalySynthesizer(None, textures, perlin_threshold=0.999, max_tries=3)
    with pytest.raises(RuntimeError, match=r"max_tries=3.*perlin_threshold=0.999"):
        impossible.sample(image, np.random.default_rng(0), kind="texture")
    tiny = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    tiny[20, 28] = 255  # a one-pixel object; min_fraction=0 disables the fallback
    settings = ForegroundSettings(mode="threshold", threshold=100, kernel_size=0, min_fraction=0.0)
    with pytest.raises(RuntimeError, match=r"foreground .* covers 0\.0%"):
        AnomalySynthesizer(settings, textures, perlin_threshold=0.9, max_tries=2).sample(
            tiny, np.random.default_rng(0), kind="structure"
        )


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"p_normal": 1.5}, ValueError),
        ({"p_texture": -0.1}, ValueError),
        ({"delta_range": (0.5, 0.2)}, ValueError),
        ({"delta_range": (0.1, 1.2)}, ValueError),
        ({"perlin_scale_range": (2, 1)}, ValueError),
        ({"perlin_scale_range": (0.5, 2)}, TypeError),
        ({"perlin_threshold": 1.0}, ValueError),
        ({"structure_grid": (0, 8)}, ValueError),
        ({"structure_grid": 4}, TypeError),
        ({"max_tries": 0}, ValueError),
        ({"foreground": 3}, TypeError),
        ({"texture_source": "data/dtd"}, TypeError),
    ],
)
def test_argument_validation(kwargs, error):
    with pytest.raises(error):
        AnomalySynthesizer(**kwargs)


@pytest.mark.parametrize(
    "image,kwargs,error",
    [
        (np.zeros((8, 8, 2), np.uint8), {}, ValueError),
        (np.zeros((8, 8, 3), np.int16), {}, TypeError),
        (np.full((8, 8, 3), 2.0), {}, ValueError),
        ([[0, 1], [1, 0]], {}, TypeError),
        (np.zeros((8, 8, 3), np.uint8), {"kind": "scratch"}, ValueError),
        (np.zeros((8, 8, 3), np.uint8), {"delta": 1.5}, ValueError),
    ],
)
def test_bad_sample_input(image, kwargs, error):
    with pytest.raises(error):
        AnomalySynthesizer(None, TextureSource(None)).sample(image, np.random.default_rng(0), **kwargs)


def test_rng_must_be_a_generator():
    with pytest.raises(TypeError):
        AnomalySynthesizer(None, TextureSource(None)).sample(object_image(), 0)


# ---------------------------------------------------------------- structure noise
def test_shuffle_grid_moves_whole_cells():
    image = np.arange(32 * 48 * 3, dtype=np.int64).reshape(32, 48, 3)  # every pixel unique
    rng = np.random.default_rng(0)
    permutation = rng.permutation(8)
    out = shuffle_grid(image, (2, 4), permutation)
    cells = [image[r * 16 : (r + 1) * 16, c * 12 : (c + 1) * 12] for r in range(2) for c in range(4)]
    for position, source in enumerate(permutation):
        r, c = divmod(position, 4)
        np.testing.assert_array_equal(out[r * 16 : (r + 1) * 16, c * 12 : (c + 1) * 12], cells[source])


def test_shuffle_grid_handles_sizes_not_divisible_by_the_grid():
    image = object_image(37, 53)
    np.testing.assert_array_equal(shuffle_grid(image, (4, 8), np.arange(32)), image)  # identity: unchanged
    out = shuffle_grid(image, (4, 8), np.random.default_rng(1).permutation(32))
    assert out.shape == image.shape and out.dtype == image.dtype
    with pytest.raises(ValueError):
        shuffle_grid(image, (4, 8), np.arange(31))


def test_colour_jitter_identity_and_brightness():
    image = object_image()
    np.testing.assert_array_equal(colour_jitter(image, 1.0, 1.0, 1.0), image)
    np.testing.assert_allclose(colour_jitter(image, 0.5, 1.0, 1.0), np.rint(image * 0.5), atol=1)


def test_structure_noise_shape_and_seed():
    image = object_image()
    a = structure_noise(image, np.random.default_rng(3), (4, 8))
    b = structure_noise(image, np.random.default_rng(3), (4, 8))
    assert a.shape == image.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, image)


# ---------------------------------------------------------------- the torch synthesizer
def torch_batch(count: int = 8, grey: bool = False) -> torch.Tensor:
    images = np.stack([object_image(seed=seed) for seed in range(count)])
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return tensor[:, :1].contiguous() if grey else tensor


@pytest.fixture(scope="module")
def bank(textures) -> np.ndarray:
    return texture_bank(textures, np.random.default_rng(0), 4, (HEIGHT, WIDTH))


def check_torch_blend(images: torch.Tensor, result, atol: float) -> None:
    m = result.masks.unsqueeze(1).double()
    d = result.deltas.view(-1, 1, 1, 1).double()
    i = images.double()
    expected = (1 - m) * i + (1 - d) * (m * i) + d * (m * result.noise_images.double())
    if images.dtype == torch.uint8:
        expected = expected.round()
    torch.testing.assert_close(result.images.double(), expected, atol=atol, rtol=0)
    outside = (result.masks == 0).unsqueeze(1).expand_as(images)
    assert torch.equal(result.images[outside], images[outside])


@pytest.mark.parametrize("grey", [False, True])
def test_torch_blend_exact_and_outside_unchanged(grey, bank):
    images = torch_batch(grey=grey)
    synthesizer = TorchAnomalySynthesizer("hazelnut", bank, p_normal=0.25)
    result = synthesizer.sample(images, torch.Generator().manual_seed(0))
    assert result.images.dtype == torch.uint8 and result.images.shape == images.shape
    assert result.masks.dtype == torch.float32 and result.masks.shape == (8, HEIGHT, WIDTH)
    check_torch_blend(images, result, atol=1.0)
    anomalous = result.kinds > 0
    assert bool(anomalous.any())
    assert (result.masks[anomalous].flatten(1).sum(1) > 0).all()  # never empty
    assert not result.masks[~anomalous].any() and torch.equal(result.images[~anomalous], images[~anomalous])
    assert ((result.deltas[anomalous] >= 0.15) & (result.deltas[anomalous] <= 1.0)).all()
    assert torch.equal(result.masks > 0, result.perlin_masks & result.foreground_masks & anomalous.view(-1, 1, 1))


def test_torch_float_images(bank):
    images = torch_batch().float() / 255.0
    result = TorchAnomalySynthesizer(None, bank, p_normal=0.0).sample(images, torch.Generator().manual_seed(1))
    assert result.images.dtype == torch.float32 and 0 <= result.images.min() and result.images.max() <= 1
    check_torch_blend(images, result, atol=1e-5)


def test_torch_is_seeded_and_kinds_can_be_forced(bank):
    images = torch_batch(4)
    synthesizer = TorchAnomalySynthesizer("hazelnut", bank)
    a = synthesizer.sample(images, torch.Generator().manual_seed(7))
    b = synthesizer.sample(images, torch.Generator().manual_seed(7))
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    forced = synthesizer.sample(
        images, torch.Generator().manual_seed(7), kinds=["texture", "structure", "normal", "texture"], deltas=0.5
    )
    assert forced.kinds.tolist() == [1, 2, 0, 1]
    assert forced.deltas.tolist() == [0.5, 0.5, 0.0, 0.5]
    out_images, out_masks = synthesizer(images, torch.Generator().manual_seed(7))
    assert torch.equal(out_images, a.images) and torch.equal(out_masks, a.masks)


def test_torch_kind_probabilities(bank):
    images = torch_batch(4).repeat(50, 1, 1, 1)
    result = TorchAnomalySynthesizer(None, bank, p_normal=0.4, p_texture=0.25).sample(
        images, torch.Generator().manual_seed(2)
    )
    counts = torch.bincount(result.kinds, minlength=3).double() / len(result.kinds)
    expected = torch.tensor([0.4, 0.6 * 0.25, 0.6 * 0.75], dtype=torch.float64)
    assert (counts - expected).abs().max() < 4 * np.sqrt(0.25 / len(result.kinds))


def test_torch_coverage_comparable_to_numpy(textures, bank):
    image = object_image()
    numpy_synth = AnomalySynthesizer("hazelnut", textures, p_normal=0.0)
    numpy_cov = np.array(
        [numpy_synth.sample(image, np.random.default_rng(s), kind="structure").mask.mean() for s in range(200)]
    )
    images = torch.from_numpy(np.stack([image] * 400)).permute(0, 3, 1, 2)
    result = TorchAnomalySynthesizer("hazelnut", bank, p_normal=0.0).sample(images, torch.Generator().manual_seed(3))
    torch_cov = result.masks.mean((1, 2)).numpy()
    # Coverage has a long tail (a few huge blobs), so compare means within 4 standard errors.
    standard_error = np.sqrt(numpy_cov.var() / len(numpy_cov) + torch_cov.var() / len(torch_cov))
    assert abs(numpy_cov.mean() - torch_cov.mean()) < 4 * standard_error
    assert 0.6 < torch_cov.std() / numpy_cov.std() < 1.6
    assert np.median(torch_cov) > 0 and np.median(numpy_cov) > 0


def test_torch_building_blocks_match_numpy():
    rng = np.random.default_rng(4)
    image = object_image(37, 53)
    permutation = rng.permutation(32)
    shuffled = shuffle_grid_torch(
        torch.from_numpy(image).permute(2, 0, 1)[None], (4, 8), torch.from_numpy(permutation)[None]
    )
    np.testing.assert_array_equal(shuffled[0].permute(1, 2, 0).numpy(), shuffle_grid(image, (4, 8), permutation))
    jittered = colour_jitter_torch(
        torch.from_numpy(image).permute(2, 0, 1)[None].float(), torch.tensor([[1.1, 0.8, 1.2]]), 255.0
    )
    np.testing.assert_allclose(jittered[0].permute(1, 2, 0).numpy(), colour_jitter(image, 1.1, 0.8, 1.2), atol=1.0)
    noise = rng.integers(0, 256, image.shape).astype(np.float32)
    mask = (rng.random(image.shape[:2]) < 0.3).astype(np.float32)
    torch_blend = blend_torch(
        torch.from_numpy(image).permute(2, 0, 1)[None].float(), torch.from_numpy(noise).permute(2, 0, 1)[None],
        torch.from_numpy(mask)[None], torch.tensor([0.4]),
    )
    np.testing.assert_allclose(torch_blend[0].permute(1, 2, 0).numpy(), blend(image, noise, mask, 0.4), atol=1e-4)


def test_torch_uses_given_foreground_masks(bank):
    images = torch_batch(3)
    foreground = torch.zeros(3, HEIGHT, WIDTH, dtype=torch.bool)
    foreground[:, :, : WIDTH // 2] = True  # only the left half may change
    result = TorchAnomalySynthesizer(None, bank, p_normal=0.0).sample(
        images, torch.Generator().manual_seed(5), foreground_masks=foreground
    )
    assert not result.masks[:, :, WIDTH // 2 :].any()
    assert torch.equal(result.images[..., WIDTH // 2 :], images[..., WIDTH // 2 :])


def test_torch_from_texture_source(textures):
    synthesizer = TorchAnomalySynthesizer.from_texture_source(
        textures,
        np.random.default_rng(0),
        bank_size=3,
        image_size=(HEIGHT, WIDTH),
        foreground=None,
        p_normal=0.0,
        p_texture=1.0,
    )
    assert synthesizer.texture_bank.shape == (3, 3, HEIGHT, WIDTH) and synthesizer.texture_bank.dtype == torch.uint8
    result = synthesizer.sample(torch_batch(2), torch.Generator().manual_seed(0))
    assert result.kinds.tolist() == [1, 1]
    check_torch_blend(torch_batch(2), result, atol=1.0)


def test_torch_errors(bank):
    with pytest.raises(ValueError, match="texture_bank"):
        TorchAnomalySynthesizer(None, None)
    TorchAnomalySynthesizer(None, None, p_texture=0.0)  # structure-only needs no bank
    with pytest.raises(ValueError):
        TorchAnomalySynthesizer(None, np.zeros((2, 8, 8), np.uint8))
    synthesizer = TorchAnomalySynthesizer(None, bank)
    with pytest.raises(ValueError):
        synthesizer.sample(torch.zeros(2, 2, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError):
        synthesizer.sample(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), kinds=["texture"])
    with pytest.raises(RuntimeError, match="max_tries"):
        TorchAnomalySynthesizer(None, bank, perlin_threshold=0.999, max_tries=2).sample(torch_batch(2), kinds="texture")
    assert ANOMALY_KINDS == ("normal", "texture", "structure")


# ---------------------------------------------------------------- the device texture pool
class RecordingSource(TextureSource):
    """A procedural source that records which texture the loader path's ``sample`` picked
    (the same rng calls as :meth:`TextureSource.sample`)."""

    def __init__(self, count: int, seed: int = 0):
        super().__init__(None, seed=seed, n_procedural=count, procedural_size=32)
        self.drawn: list[int] = []

    def sample(self, rng, size):
        index = int(rng.integers(len(self)))
        self.drawn.append(index)
        return resize_to(self.image(index), size if isinstance(size, tuple) else (size, size))


SIM = 64  # side of the images in the path comparisons
POOL = 24  # pool slots (the source below holds 120 textures, so the pool refreshes)


@pytest.fixture(autouse=True)
def one_thread():
    """Batched torch ops on small images run fastest on one thread (and do not fight other jobs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def many_textures() -> RecordingSource:
    source = RecordingSource(120)
    for index in range(len(source)):
        source.image(index)  # generate once for every test of this module
    return source


def sim_images(count: int = 8) -> np.ndarray:
    return np.stack([object_image(SIM, SIM, seed) for seed in range(count)])


def device_synth(source, **kwargs) -> TorchAnomalySynthesizer:
    settings = {"bank_size": POOL, "image_size": SIM, "refresh_rate": 1.0, "refresh_every": 1, **kwargs}
    return TorchAnomalySynthesizer.from_texture_source(source, np.random.default_rng(11), **settings)


def loader_statistics(synthesizer: AnomalySynthesizer, images: np.ndarray, count: int, seed: int) -> dict:
    source = synthesizer.texture_source
    source.drawn.clear()
    results = [synthesizer.sample(images[i % len(images)], np.random.default_rng([seed, i])) for i in range(count)]
    textures = [r.noise_image.astype(np.float64) for r in results if r.kind == "texture"]
    return path_statistics(
        kinds=[r.kind for r in results], coverage=[r.mask.mean() for r in results if r.kind != "normal"],
        deltas=[r.delta for r in results if r.kind != "normal"], textures=textures, texture_ids=list(source.drawn),
    )


def device_statistics(synthesizer, images: np.ndarray, count: int, seed: int, batch: int = 25) -> dict:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    parts = [
        synthesizer.sample(pixels[torch.arange(start, start + batch) % len(images)], generator)
        for start in range(0, count, batch)
    ]
    kinds = torch.cat([p.kinds for p in parts])
    anomalous, texture = kinds > 0, kinds == 1
    ids = [p.texture_ids for p in parts if getattr(p, "texture_ids", None) is not None]
    return path_statistics(
        kinds=[ANOMALY_KINDS[k] for k in kinds.tolist()],
        coverage=torch.cat([p.masks.mean((1, 2)) for p in parts])[anomalous].tolist(),
        deltas=torch.cat([p.deltas for p in parts])[anomalous].tolist(),
        textures=list(torch.cat([p.noise_images for p in parts])[texture].permute(0, 2, 3, 1).double().numpy()),
        texture_ids=torch.cat(ids)[texture].tolist() if ids else None,
    )


def canonical(texture: np.ndarray) -> bytes:
    """The same bytes for a texture and its mirror images (so mirroring does not count as variety)."""
    pixels = np.rint(texture).astype(np.uint8)
    return min(p.tobytes() for p in (pixels, pixels[::-1], pixels[:, ::-1], pixels[::-1, ::-1]))


def path_statistics(kinds, coverage, deltas, textures, texture_ids) -> dict:
    return {
        "kinds": np.array([ANOMALY_KINDS.index(k) for k in kinds]),
        "coverage": np.array(coverage), "delta": np.array(deltas),
        "texture_mean": np.array([t.mean() for t in textures]),
        "texture_std": np.array([t.std() for t in textures]),
        # dissimilarity of consecutive texture anomalies: mean absolute pixel difference
        # (strict=False: with an odd count the last texture has no partner and is left out)
        "texture_pair_difference": np.array(
            [np.abs(a - b).mean() for a, b in zip(textures[::2], textures[1::2], strict=False)]
        ),
        "distinct_pasted_share": len({canonical(t) for t in textures}) / max(1, len(textures)),
        "distinct_sources": None if texture_ids is None else len(set(texture_ids)),
    }


def compare_paths(loader: dict, device: dict) -> list[str]:
    """The statistics on which the two paths disagree (empty: they agree)."""
    from scipy.stats import ks_2samp

    failures = []
    for kind in range(3):
        p1, p2 = (loader["kinds"] == kind).mean(), (device["kinds"] == kind).mean()
        pooled = (p1 * len(loader["kinds"]) + p2 * len(device["kinds"])) / (len(loader["kinds"]) + len(device["kinds"]))
        tolerance = 4 * np.sqrt(pooled * (1 - pooled) * (1 / len(loader["kinds"]) + 1 / len(device["kinds"])))
        if abs(p1 - p2) > tolerance:
            failures.append(f"share of {ANOMALY_KINDS[kind]}: {p1:.3f} vs {p2:.3f}")
    for name in ("coverage", "delta", "texture_mean", "texture_std", "texture_pair_difference"):
        if len(loader[name]) and len(device[name]):
            test = ks_2samp(loader[name], device[name])
            if test.pvalue < 1e-3:
                failures.append(f"{name}: KS statistic {test.statistic:.3f}, p = {test.pvalue:.1e}")
    # Variety: (nearly) every texture anomaly pastes a texture of its own, as on the loader path.
    if device["distinct_pasted_share"] < 0.9 * loader["distinct_pasted_share"]:
        failures.append(
            f"distinct pasted textures: {loader['distinct_pasted_share']:.2f} "
            f"vs {device['distinct_pasted_share']:.2f} of the samples"
        )
    if device["distinct_sources"] is not None and device["distinct_sources"] < 0.85 * loader["distinct_sources"]:
        failures.append(f"distinct source textures: {loader['distinct_sources']} vs {device['distinct_sources']}")
    return failures


def test_device_path_draws_the_loader_paths_kinds_masks_and_deltas(many_textures):
    """Default probabilities: the same kind shares, mask coverage and delta distributions."""
    images = sim_images()
    loader = loader_statistics(AnomalySynthesizer(None, many_textures), images, 400, seed=1)
    device = device_statistics(device_synth(many_textures), images, 400, seed=2)
    assert compare_paths(loader, device) == []
    assert 0.35 < (device["kinds"] == 0).mean() < 0.65 and len(device["delta"]) > 150
    assert device["delta"].min() >= 0.15 and device["delta"].max() <= 1.0


def test_device_path_textures_are_as_varied_as_the_loader_paths(many_textures):
    """Texture anomalies only: fresh textures and augmentations per sample, like the loader path;
    the old behaviour (a fixed bank of pre-augmented textures, here 2, reused) is caught."""
    images = sim_images()
    texture_only = {"foreground": None, "p_normal": 0.0, "p_texture": 1.0}
    loader = loader_statistics(AnomalySynthesizer(texture_source=many_textures, **texture_only), images, 300, seed=3)
    synthesizer = device_synth(many_textures, **texture_only)  # 10 loads a batch: a slot lives 2.4 batches
    device = device_statistics(synthesizer, images, 300, seed=4, batch=10)
    assert compare_paths(loader, device) == []
    assert synthesizer.texture_pool.refreshing and synthesizer.texture_pool.textures_loaded > 2 * POOL
    assert device["distinct_pasted_share"] > 0.95 and device["distinct_sources"] > 100

    fixed = texture_bank(many_textures, np.random.default_rng(0), 2, SIM)  # augmented once, then reused
    old = TorchAnomalySynthesizer(texture_bank=fixed, texture_ops=0, **texture_only)
    failures = compare_paths(loader, device_statistics(old, images, 300, seed=4, batch=10))
    assert any(f.startswith("distinct pasted") for f in failures)
    assert any(f.startswith("distinct source") for f in failures)
    assert any(f.startswith("texture_mean") for f in failures)


def test_small_sources_sit_in_the_pool_whole(textures):
    synthesizer = TorchAnomalySynthesizer.from_texture_source(
        textures, np.random.default_rng(0), bank_size=64, image_size=(HEIGHT, WIDTH)
    )
    pool = synthesizer.texture_pool
    assert not pool.refreshing and len(pool) == len(textures) == 6
    assert pool.ids.tolist() == list(range(6))
    for index in range(6):
        expected = resize_to(textures.image(index), (HEIGHT, WIDTH))
        np.testing.assert_array_equal(pool.textures[index].permute(1, 2, 0).numpy(), expected)
    before = pool.textures.clone()
    for seed in range(5):
        synthesizer.sample(torch_batch(8), torch.Generator().manual_seed(seed))
    assert torch.equal(pool.textures, before) and pool.textures_loaded == 6  # never refreshed


def test_texture_ids_name_the_pasted_texture(many_textures):
    """With no augmentation and delta = 1 the pasted pixels are the raw texture the id names."""
    synthesizer = device_synth(many_textures, foreground=None, texture_ops=0, p_normal=0.0, p_texture=1.0)
    images = torch.from_numpy(sim_images()).permute(0, 3, 1, 2).contiguous()
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        result = synthesizer.sample(images, generator, deltas=1.0)
        for k, index in enumerate(result.texture_ids.tolist()):
            expected = torch.from_numpy(resize_to(many_textures.image(index), (SIM, SIM))).permute(2, 0, 1).float()
            assert torch.equal(result.noise_images[k], expected)
            inside = result.masks[k] > 0
            assert torch.equal(result.images[k][:, inside], expected[:, inside].to(torch.uint8))


def test_pool_refresh_schedule_and_seek(many_textures):
    synthesizer = device_synth(many_textures, p_normal=0.5, p_texture=0.5, refresh_every=2)  # 0.25 loads per image
    pool = synthesizer.texture_pool
    assert pool.loads_per_image == 0.25 and pool.refresh_every == 2
    images = torch.from_numpy(sim_images()).permute(0, 3, 1, 2).contiguous()  # batches of 8
    outputs, used = [], []  # used[t]: the pool batch t drew from
    for step in range(7):
        outputs.append(synthesizer.sample(images, torch.Generator().manual_seed(100 + step)))
        used.append((pool.ids.clone(), pool.textures.clone(), pool.loads_done))
    # refreshes at the start of batches 0, 2, 4, 6, to floor(0.25 * images seen before) loads
    assert [u[2] for u in used] == [0, 0, 4, 4, 8, 8, 12]
    assert pool.textures_loaded == POOL + 12
    # the oldest slots are replaced; loads follow a shuffled pass over the source (no repeats in it)
    assert torch.equal(used[2][0][4:], used[0][0][4:]) and not torch.equal(used[2][0][:4], used[0][0][:4])
    assert len(set(pool.ids.tolist())) == POOL
    for k, index in enumerate(used[6][0].tolist()):
        np.testing.assert_array_equal(
            used[6][1][k].permute(1, 2, 0).numpy(), resize_to(many_textures.image(index), (SIM, SIM))
        )

    resumed = device_synth(many_textures, p_normal=0.5, p_texture=0.5, refresh_every=2)
    resumed.seek(4, 8)  # as after 4 batches of 8
    assert torch.equal(resumed.texture_pool.ids, used[3][0]) and torch.equal(resumed.texture_pool.textures, used[3][1])
    for step in (4, 5, 6):
        again = resumed.sample(images, torch.Generator().manual_seed(100 + step))
        assert torch.equal(again.images, outputs[step].images)
        assert torch.equal(again.texture_ids, outputs[step].texture_ids)
    with pytest.raises(ValueError, match="batches_done"):
        resumed.seek(-1, 8)


def test_device_path_repeats_exactly_with_the_same_seeds(many_textures):
    images = torch.from_numpy(sim_images()).permute(0, 3, 1, 2).contiguous()
    runs = []
    for _ in range(2):
        synthesizer = device_synth(many_textures)
        generator = torch.Generator().manual_seed(3)
        runs.append([synthesizer.sample(images, generator) for _ in range(5)])
    for a, b in zip(*runs, strict=True):
        assert (
            torch.equal(a.images, b.images)
            and torch.equal(a.masks, b.masks)
            and torch.equal(a.texture_ids, b.texture_ids)
        )
    other = device_synth(many_textures).sample(images, torch.Generator().manual_seed(4))
    assert not torch.equal(other.images, runs[0][0].images)


def test_pool_and_texture_argument_errors(textures, bank):
    with pytest.raises(ValueError, match="not both"):
        TorchAnomalySynthesizer(None, bank, texture_source=textures, image_size=8)
    with pytest.raises(ValueError, match="image_size"):
        TorchAnomalySynthesizer(None, texture_source=textures)
    with pytest.raises(TypeError, match="texture_source"):
        TorchAnomalySynthesizer(None, texture_source="data/dtd", image_size=8)
    with pytest.raises(ValueError, match="texture_ops"):
        TorchAnomalySynthesizer(None, bank, texture_ops=11)
    with pytest.raises(ValueError, match="refresh_rate"):
        TorchAnomalySynthesizer(None, texture_source=textures, image_size=8, refresh_rate=-1)
    with pytest.raises(ValueError, match="refresh_every"):
        TorchAnomalySynthesizer(None, texture_source=textures, image_size=8, pool_size=2, refresh_every=0)
    with pytest.raises(ValueError, match="pool_size"):
        TorchAnomalySynthesizer(None, texture_source=textures, image_size=8, pool_size=0)
    with pytest.raises(TypeError, match="rng"):
        TorchAnomalySynthesizer.from_texture_source(textures, 0)
    structure_only = TorchAnomalySynthesizer(None, texture_source=textures, image_size=8, p_texture=0.0)
    assert structure_only.texture_pool is None  # no texture is ever read
    with pytest.raises(ValueError, match="no textures"):
        structure_only.sample(torch_batch(2), kinds="texture")
