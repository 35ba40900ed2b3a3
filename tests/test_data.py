"""The MVTec-layout reader: layout checks, clear errors, resizing rules, disjoint splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from memseg_lite.core.io import read_image, write_image
from memseg_lite.core.transforms import IMAGENET_MEAN, IMAGENET_STD, image_to_tensor, resize_mask, tensor_to_image
from memseg_lite.datasets.mvtec import EvaluationSet, load_image, load_mask, scan_category
from memseg_lite.training.data import StepBatchSampler, build_validation_set, split_train_images, step_sample_seed


def make_category(root: Path, name: str = "widget", n_train: int = 12, grey: bool = False, size: int = 40) -> Path:
    """A tiny category in the MVTec AD layout, written by the test itself."""
    rng = np.random.default_rng(0)
    shape = (size, size) if grey else (size, size, 3)
    category = root / name
    for i in range(n_train):
        write_image(category / "train" / "good" / f"{i:03d}.png", rng.integers(0, 255, shape, dtype=np.uint8))
    for i in range(2):
        write_image(category / "test" / "good" / f"{i:03d}.png", rng.integers(0, 255, shape, dtype=np.uint8))
    for i in range(2):
        write_image(category / "test" / "crack" / f"{i:03d}.png", rng.integers(0, 255, shape, dtype=np.uint8))
        mask = np.zeros((size, size), np.uint8)
        mask[5 : 15 + i, 8:20] = 255
        write_image(category / "ground_truth" / "crack" / f"{i:03d}_mask.png", mask)
    return category


def test_scan_lists_files_and_labels(tmp_path):
    make_category(tmp_path)
    files = scan_category(tmp_path, "widget")
    assert len(files.train_good) == 12
    assert [item.defect for item in files.test] == ["crack", "crack", "good", "good"]
    assert [item.label for item in files.test] == [1, 1, 0, 0]
    assert files.defect_types == ["crack"]
    assert all(item.mask is None for item in files.test if item.defect == "good")
    assert files.test[0].mask == tmp_path / "widget" / "ground_truth" / "crack" / "000_mask.png"


def test_hidden_folders_are_not_defect_types(tmp_path):
    category = make_category(tmp_path)
    (category / "test" / ".ipynb_checkpoints").mkdir()
    write_image(category / "test" / ".ipynb_checkpoints" / "000.png", np.zeros((40, 40, 3), np.uint8))
    assert scan_category(tmp_path, "widget").defect_types == ["crack"]


def test_sixteen_bit_images_keep_one_scale(tmp_path):
    import cv2

    for name, value in (("dark.png", 10_000), ("bright.png", 60_000)):
        cv2.imwrite(str(tmp_path / name), np.full((4, 4), value, np.uint16))
    # One fixed scale (the top 8 bits), not each image stretched by its own maximum.
    assert read_image(tmp_path / "dark.png", grayscale=True)[0, 0] == 10_000 >> 8
    assert read_image(tmp_path / "bright.png", grayscale=True)[0, 0] == 60_000 >> 8


def test_missing_root_and_category_errors_name_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="demo-data"):
        scan_category(tmp_path / "nowhere", "widget")
    make_category(tmp_path, "widget")
    with pytest.raises(FileNotFoundError, match=r"categories found there: widget"):
        scan_category(tmp_path, "gadget")


def test_missing_or_empty_train_good(tmp_path):
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no images .* in .*empty/train/good"):
        scan_category(tmp_path, "empty")
    (tmp_path / "bare").mkdir()
    with pytest.raises(FileNotFoundError, match=r"bare/train/good does not exist"):
        scan_category(tmp_path, "bare")


def test_missing_test_folder_only_matters_for_evaluation(tmp_path):
    category = make_category(tmp_path)
    import shutil

    shutil.rmtree(category / "test")
    assert len(scan_category(tmp_path, "widget", require_test=False).train_good) == 12
    with pytest.raises(FileNotFoundError, match="test/good/ and test/<defect>/"):
        scan_category(tmp_path, "widget")


def test_defect_without_mask_names_the_expected_mask(tmp_path):
    category = make_category(tmp_path)
    (category / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"001\.png has no ground-truth mask; expected .*001_mask\.png"):
        scan_category(tmp_path, "widget")


def test_corrupt_image_error_names_the_file(tmp_path):
    category = make_category(tmp_path)
    bad = category / "train" / "good" / "003.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match=r"cannot decode image file .*003\.png"):
        load_image(bad, 32)


def test_mask_size_mismatch_is_an_error(tmp_path):
    mask_path = write_image(tmp_path / "m.png", np.zeros((20, 30), np.uint8))
    with pytest.raises(ValueError, match=r"m\.png is 30x20 pixels but its image is 40x40"):
        load_mask(mask_path, (40, 40), 32)


def test_grey_images_become_three_channels(tmp_path):
    make_category(tmp_path, grey=True)
    files = scan_category(tmp_path, "widget")
    assert read_image(files.train_good[0]).shape == (40, 40, 3)
    image = load_image(files.train_good[0], 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])


def test_masks_resize_with_nearest_neighbour(tmp_path):
    rng = np.random.default_rng(3)
    mask = (rng.random((40, 40)) > 0.7).astype(np.uint8) * 255
    path = write_image(tmp_path / "mask.png", mask)
    resized = load_mask(path, (40, 40), 64)
    assert set(np.unique(resized)) <= {0, 1}
    # Upsampling 40 -> 64 with nearest neighbour: each output pixel copies source pixel floor(i * 40 / 64).
    source = (np.arange(64) * 40 / 64).astype(int)
    np.testing.assert_array_equal(resized, (mask[np.ix_(source, source)] > 127).astype(np.uint8))
    # A one-pixel line survives (bicubic + int cast would erode it).
    line = np.zeros((40, 40), np.uint8)
    line[20, 5:35] = 1
    assert resize_mask(line, 80).sum() >= 2 * line.sum()


def test_center_crop(tmp_path):
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = 200
    path = write_image(tmp_path / "img.png", image)
    cropped = load_image(path, 64, center_crop=32)
    assert cropped.shape == (32, 32, 3) and (cropped == 200).all()
    with pytest.raises(ValueError, match="center_crop=96 is larger"):
        load_image(path, 64, center_crop=96)


def test_normalisation_round_trip():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    tensor = image_to_tensor(image)
    expected = (image[..., 0] / 255.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    np.testing.assert_allclose(tensor[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(tensor_to_image(tensor), image)


def test_split_is_disjoint_reproducible_and_checked():
    paths = [Path(f"train/good/{i:03d}.png") for i in range(20)]
    split = split_train_images(paths, memory_size=6, validation_size=4, seed=1)
    assert len(split.memory) == 6 and len(split.validation) == 4 and len(split.train) == 10
    assert set(split.memory).isdisjoint(split.train) and set(split.memory).isdisjoint(split.validation)
    assert set(split.train).isdisjoint(split.validation)
    assert set(split.memory) | set(split.train) | set(split.validation) == set(paths)
    assert split == split_train_images(paths, 6, 4, seed=1)
    assert split.memory != split_train_images(paths, 6, 4, seed=2).memory
    with pytest.raises(ValueError, match="only 20 good training images"):
        split_train_images(paths, memory_size=15, validation_size=5, seed=0)


def test_step_batches_depend_only_on_seed_and_step():
    full = list(StepBatchSampler(n_images=7, batch_size=3, total_steps=10, seed=5))
    tail = list(StepBatchSampler(n_images=7, batch_size=3, total_steps=10, seed=5, start_step=6))
    assert len(full) == 10 and tail == full[6:]
    assert all(0 <= index < 7 for batch in full for index, _ in batch)
    assert len({seed for batch in full for _, seed in batch}) == 30, "every sample gets its own seed"
    assert full != list(StepBatchSampler(7, 3, 10, seed=6))
    assert step_sample_seed(5, 3, 1) == full[3][1][1]


class MarkingSynthesizer:
    """A stand-in simulator with the real interface: paints a square, records which images it saw."""

    def __init__(self):
        self.seen = []

    def sample(self, image, rng, kind=None, delta=None):
        from types import SimpleNamespace

        self.seen.append(image)
        mask = np.zeros(image.shape[:2], np.float32)
        top = int(rng.integers(0, image.shape[0] - 8))
        mask[top : top + 8, 4:12] = 1
        out = image.copy()
        out[mask > 0] = 255
        return SimpleNamespace(image=out, mask=mask, kind=kind)

    def __call__(self, image, rng):
        result = self.sample(image, rng)
        return result.image, result.mask


def test_validation_set_uses_only_train_good(tmp_path):
    make_category(tmp_path, n_train=14)
    files = scan_category(tmp_path, "widget")
    split = split_train_images(files.train_good, memory_size=4, validation_size=3, seed=0)
    pixels = np.stack([load_image(p, 32) for p in split.validation])
    validation = build_validation_set(split.validation, pixels, MarkingSynthesizer(), seed=0, anomalies_per_image=2,
                                      recipe="basic")
    assert len(validation) == 9
    assert validation.labels.tolist() == [0, 1, 1] * 3
    assert validation.images.shape == (9, 3, 32, 32) and validation.masks.shape == (9, 32, 32)
    assert all(torch.equal(validation.masks[i], torch.zeros(32, 32)) for i in (0, 3, 6))
    for source in validation.sources:
        assert "test" not in Path(source).relative_to(tmp_path).parts
        assert source in split.validation and source not in split.train and source not in split.memory
    again = build_validation_set(split.validation, pixels, MarkingSynthesizer(), seed=0, anomalies_per_image=2,
                                 recipe="basic")
    assert torch.equal(validation.masks, again.masks), "the validation set is fixed by the seed"
    assert validation.kinds == ["normal", "texture", "structure"] * 3
    assert validation.variants == ["good", "regular", "regular"] * 3


@pytest.fixture(scope="module")
def hard_validation(tmp_path_factory):
    """The default ("hard") validation set of the real simulator on three demo images, twice."""
    from memseg_lite.datasets.demo.writer import write_demo_dataset
    from memseg_lite.training.config import TrainConfig
    from memseg_lite.training.trainer import make_synthesizer

    root = tmp_path_factory.mktemp("hard") / "data"
    write_demo_dataset(root, categories=["mesh"], size=64, n_train=3, n_test_good=1, n_per_defect=1, seed=0)
    paths = sorted((root / "mesh" / "train" / "good").iterdir())
    pixels = np.stack([load_image(p, 64) for p in paths])
    config = TrainConfig(category="mesh", image_size=64)

    def build(seed):
        return build_validation_set(paths, pixels, make_synthesizer(config), seed=seed)

    return pixels, build(0), build(0), build(1)


def test_hard_validation_set_holds_both_kinds_small_and_faint(hard_validation):
    from memseg_lite.training.data import FAINT_DELTA, HARD_CYCLE, SMALL_RADIUS

    pixels, validation, _, _ = hard_validation
    assert len(validation) == 3 * (1 + 6), "each held-out image and 6 anomalies (the default)"
    assert validation.labels.tolist() == ([0] + [1] * 6) * 3
    assert validation.kinds.count("normal") == 3
    assert sorted(zip(validation.kinds, validation.variants, strict=True)) == sorted(
        [("normal", "good")] * 3 + [pair for pair in HARD_CYCLE] * 3)
    masks = validation.masks.numpy()
    for index, (label, variant) in enumerate(zip(validation.labels.tolist(), validation.variants, strict=True)):
        source = pixels[index // 7]
        changed = np.any(validation.pixels[index] != source, axis=-1)
        assert not changed[masks[index] == 0].any(), f"sample {index}: pixels outside the mask are untouched"
        if label == 0:
            assert masks[index].sum() == 0 and not changed.any()
            continue
        assert masks[index].sum() > 0, f"sample {index} ({variant}) has an empty mask"
        if variant == "small":  # inside one disc of radius SMALL_RADIUS * side around a mask pixel
            rows, cols = np.nonzero(masks[index])
            radius = max(2.0, SMALL_RADIUS * 64)
            assert (rows.max() - rows.min()) <= 2 * radius and (cols.max() - cols.min()) <= 2 * radius
            assert masks[index].sum() <= np.pi * radius**2 + 4 * radius
    # Faint: a blend factor in FAINT_DELTA moves the masked pixels less than regular anomalies do on average.
    def mean_change(variant):
        chosen = [i for i, v in enumerate(validation.variants) if v == variant]
        return np.mean([np.abs(validation.pixels[i].astype(float) - pixels[i // 7])[masks[i] > 0].mean()
                        for i in chosen])

    assert FAINT_DELTA[1] <= 0.3 and mean_change("faint") < mean_change("regular")


def test_hard_validation_set_is_fixed_by_the_seed(hard_validation):
    _, first, again, other = hard_validation
    assert torch.equal(first.masks, again.masks) and np.array_equal(first.pixels, again.pixels)
    assert first.variants == other.variants, "the plan does not depend on the seed"
    assert not torch.equal(first.masks, other.masks), "another seed draws other anomalies"


def test_hard_plan_cycles_over_images_and_bad_recipes_fail():
    from memseg_lite.training.data import HARD_CYCLE, anomaly_plan

    plans = [anomaly_plan(number, 4, "hard") for number in range(3)]
    assert sorted(pair for plan in plans for pair in plan) == sorted([*HARD_CYCLE, *HARD_CYCLE])
    assert anomaly_plan(0, 2, "basic") == [("texture", "regular"), ("structure", "regular")]
    with pytest.raises(ValueError, match="validation recipe must be one of"):
        build_validation_set([Path("a.png")], np.zeros((1, 32, 32, 3), np.uint8), MarkingSynthesizer(), 0,
                             recipe="harder")
    with pytest.raises(ValueError, match="anomalies_per_image must be >= 1"):
        build_validation_set([Path("a.png")], np.zeros((1, 32, 32, 3), np.uint8), MarkingSynthesizer(), 0, 0)


def test_evaluation_set_items(tmp_path):
    make_category(tmp_path, grey=True)
    dataset = EvaluationSet(scan_category(tmp_path, "widget"), image_size=32)
    item = dataset[0]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (32, 32)
    assert item["label"] == 1 and item["defect"] == "crack" and item["mask"].sum() > 0
    good = dataset[3]
    assert good["label"] == 0 and good["mask"].sum() == 0


def test_mask_reader_rules(tmp_path):
    from memseg_lite.core.io import read_mask

    region = np.zeros((12, 12), np.uint8)
    region[2:5, 3:9] = 1
    colour = np.zeros((12, 12, 3), np.uint8)
    colour[region == 1] = (200, 0, 0)  # a red mask: grey level 60, any non-zero channel marks the defect
    np.testing.assert_array_equal(read_mask(write_image(tmp_path / "red.png", colour)), region)
    np.testing.assert_array_equal(read_mask(write_image(tmp_path / "binary.bmp", region * 255)), region)
    assert read_mask(write_image(tmp_path / "empty.png", np.zeros((12, 12), np.uint8))).sum() == 0
    with pytest.raises(FileNotFoundError, match="mask file not found"):
        read_mask(tmp_path / "missing.png")


def test_two_masks_for_one_image_are_an_error_and_any_image_suffix_is_found(tmp_path):
    category = make_category(tmp_path)
    masks = category / "ground_truth" / "crack"
    (masks / "001_mask.png").rename(masks / "001_mask.Bmp")
    assert scan_category(tmp_path, "widget").test[1].mask == masks / "001_mask.Bmp"
    write_image(masks / "000_mask.tif", np.zeros((40, 40), np.uint8))
    with pytest.raises(ValueError, match=r"000\.png has several ground-truth masks"):
        scan_category(tmp_path, "widget")
