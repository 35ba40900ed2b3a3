"""Tests for the procedural demo data (memseg_lite.datasets.demo): layout, formats, ground truth, seeds, safety."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from memseg_lite import cli
from memseg_lite.datasets.demo import writer as demo_writer
from memseg_lite.datasets.demo.catalogue import CATEGORIES, sample_seed
from memseg_lite.datasets.demo.render import render_good, render_sample
from memseg_lite.datasets.demo.writer import ensure_demo_data, write_demo_dataset

SIZE = 64
SMALL = {"size": SIZE, "n_train": 2, "n_test_good": 2, "n_per_defect": 2}
ALL_DEFECTS = [(name, defect) for name, spec in CATEGORIES.items() for defect in spec.defects]


def read_raw(path: Path) -> np.ndarray:
    """The PNG exactly as stored (no colour conversion), so channel counts can be checked."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"cannot read {path}"
    return image


def to_rgb(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)


def abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel largest absolute channel difference, int ``H x W``."""
    diff = np.abs(a.astype(int) - b.astype(int))
    return diff.max(axis=2) if diff.ndim == 3 else diff


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def filled_foreground(image: np.ndarray) -> np.ndarray:
    """Otsu foreground of an object image with its holes filled (an estimate independent of the renderer)."""
    grey = cv2.cvtColor(to_rgb(image), cv2.COLOR_RGB2GRAY)
    _, binary = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(binary)
    cv2.drawContours(filled, [max(contours, key=cv2.contourArea)], -1, 1, thickness=-1)
    return filled.astype(bool)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    write_demo_dataset(out, **SMALL)
    return out


# ---------------------------------------------------------------------------------------------
# Layout and formats
# ---------------------------------------------------------------------------------------------


def test_layout_and_counts_follow_mvtec(small_set: Path):
    assert sorted(path.name for path in small_set.iterdir()) == sorted([*CATEGORIES, "manifest.json"])
    for name, spec in CATEGORIES.items():
        root = small_set / name
        assert sorted(path.name for path in (root / "train").iterdir()) == ["good"]
        assert sorted(path.name for path in (root / "test").iterdir()) == sorted(["good", *spec.defects])
        assert sorted(path.name for path in (root / "ground_truth").iterdir()) == sorted(spec.defects)
        assert sorted(path.name for path in (root / "train/good").iterdir()) == ["000.png", "001.png"]
        assert sorted(path.name for path in (root / "test/good").iterdir()) == ["000.png", "001.png"]
        for defect in spec.defects:
            assert sorted(path.name for path in (root / "test" / defect).iterdir()) == ["000.png", "001.png"]
            assert sorted(path.name for path in (root / "ground_truth" / defect).iterdir()) == [
                "000_mask.png",
                "001_mask.png",
            ]


def test_images_are_uint8_rgb_or_single_channel(small_set: Path):
    for name, spec in CATEGORIES.items():
        for path in (small_set / name).glob("t*/*/*.png"):  # train/ and test/
            image = read_raw(path)
            assert image.dtype == np.uint8
            expected = (SIZE, SIZE) if spec.grayscale else (SIZE, SIZE, 3)
            assert image.shape == expected, path


def test_masks_are_binary_single_channel_and_not_empty(small_set: Path):
    for name, spec in CATEGORIES.items():
        for defect in spec.defects:
            for path in (small_set / name / "ground_truth" / defect).iterdir():
                mask = read_raw(path)
                assert mask.dtype == np.uint8 and mask.shape == (SIZE, SIZE), path
                assert set(np.unique(mask).tolist()) == {0, 255}, path


def test_manifest_describes_what_is_on_disk(small_set: Path):
    manifest = json.loads((small_set / "manifest.json").read_text())
    assert manifest["size"] == SIZE and manifest["seed"] == 0
    assert isinstance(manifest["generator_version"], int)
    assert set(manifest["categories"]) == set(CATEGORIES)
    for name, entry in manifest["categories"].items():
        spec = CATEGORIES[name]
        assert entry["kind"] == spec.kind and entry["grayscale"] == spec.grayscale
        assert entry["defects"] == list(spec.defects)
        for split, count in entry["counts"].items():
            assert len(list((small_set / name / split).glob("*.png"))) == count


def test_written_files_are_the_rendered_samples(small_set: Path):
    for name, spec in CATEGORIES.items():
        good = render_sample(name, SIZE, sample_seed(0, name, "train/good", 1))
        np.testing.assert_array_equal(read_raw(small_set / name / "train/good/001.png"), cv2_order(good.image))
        defect = spec.defects[-1]
        sample = render_sample(name, SIZE, sample_seed(0, name, f"test/{defect}", 0), defect)
        np.testing.assert_array_equal(read_raw(small_set / name / "test" / defect / "000.png"), cv2_order(sample.image))
        stored_mask = read_raw(small_set / name / "ground_truth" / defect / "000_mask.png")
        np.testing.assert_array_equal(stored_mask > 0, sample.mask)


def cv2_order(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image


def test_summary_table_names_categories_counts_and_path(tmp_path: Path):
    out = tmp_path / "set"
    summary = write_demo_dataset(out, categories=["mesh"], size=32, n_train=3, n_test_good=1, n_per_defect=1)
    text = str(summary)
    assert str(out) in text and "mesh" in text and "grey" in text and "button" not in text
    assert summary.n_images == 3 + 1 + len(CATEGORIES["mesh"].defects)


# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------


def test_same_arguments_give_byte_identical_files_and_another_seed_differs(tmp_path: Path):
    arguments = {"categories": ["button", "mesh"], "size": 32, "n_train": 2, "n_test_good": 1, "n_per_defect": 1}
    write_demo_dataset(tmp_path / "a", seed=3, **arguments)
    write_demo_dataset(tmp_path / "b", seed=3, **arguments)
    write_demo_dataset(tmp_path / "c", seed=4, **arguments)
    first, second, third = (all_files(tmp_path / name) for name in "abc")
    assert first == second
    assert first.keys() == third.keys()
    images = [key for key in first if key.endswith(".png") and "ground_truth" not in key]
    assert all(first[key] != third[key] for key in images)


def test_image_seeds_do_not_depend_on_counts_or_other_categories(tmp_path: Path):
    write_demo_dataset(tmp_path / "few", categories=["wood"], size=32, n_train=2, n_test_good=1, n_per_defect=1)
    more_arguments = {"size": 32, "n_train": 3, "n_test_good": 2, "n_per_defect": 2}
    write_demo_dataset(tmp_path / "more", categories=["button", "wood"], **more_arguments)
    few, more = all_files(tmp_path / "few"), all_files(tmp_path / "more")
    shared = [key for key in few if key != "manifest.json"]
    assert shared and all(few[key] == more[key] for key in shared)


def test_render_sample_is_repeatable_and_its_clean_image_is_the_good_sample():
    seed = sample_seed(7, "wood", "test/stain", 0)
    first = render_sample("wood", SIZE, seed, "stain")
    again = render_sample("wood", SIZE, seed, "stain")  # the same SeedSequence object, reused
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.mask, again.mask)
    good = render_sample("wood", SIZE, seed)
    np.testing.assert_array_equal(good.image, first.clean)
    np.testing.assert_array_equal(good.clean, good.image)
    assert good.defect is None and good.mask.dtype == bool and not good.mask.any()
    assert first.defect == "stain" and first.category == "wood"


def test_render_good_shapes_dtypes_and_determinism():
    for name, spec in CATEGORIES.items():
        image = render_good(name, np.random.default_rng(5), size=48)
        assert image.dtype == np.uint8
        assert image.shape == ((48, 48) if spec.grayscale else (48, 48, 3))
        np.testing.assert_array_equal(image, render_good(name, np.random.default_rng(5), size=48))
        assert not np.array_equal(image, render_good(name, np.random.default_rng(6), size=48))


# ---------------------------------------------------------------------------------------------
# Ground truth: masks match defects
# ---------------------------------------------------------------------------------------------

VISIBLE = 16  # grey levels; smaller differences are antialiasing and rounding
RIM = 2  # pixels of antialiasing allowed around the mask


@pytest.mark.parametrize(("category", "defect"), ALL_DEFECTS)
def test_visible_changes_lie_in_the_mask_and_the_mask_changes_clearly(category: str, defect: str):
    visible_total = visible_in_mask = 0
    for index in range(3):
        sample = render_sample(category, SIZE, sample_seed(11, category, f"test/{defect}", index), defect)
        assert sample.image.shape == sample.clean.shape and sample.mask.shape == (SIZE, SIZE)
        assert sample.mask.dtype == bool and sample.mask.any()
        diff = abs_diff(sample.image, sample.clean)
        outside = ~dilate(sample.mask, RIM)
        assert diff[outside].max(initial=0) <= VISIBLE, f"{category}/{defect} #{index} changes pixels outside its mask"
        inside = diff[sample.mask].mean()
        assert inside >= 8, f"{category}/{defect} #{index}: mean change {inside:.1f} inside the mask is too faint"
        assert inside >= 10 * (diff[outside].mean() + 0.1)
        visible_total += (diff > VISIBLE).sum()
        visible_in_mask += ((diff > VISIBLE) & sample.mask).sum()
    # The mask is the defect, not a thin core of it: most visibly changed pixels are in it
    # (the rest is the antialiased rim, whose pixel centres lie outside the defect).
    assert visible_in_mask >= 0.6 * visible_total


@pytest.mark.parametrize("defect", CATEGORIES["button"].defects)
def test_object_defects_lie_on_the_object(defect: str):
    for index in range(3):
        sample = render_sample("button", 96, sample_seed(2, "button", f"test/{defect}", index), defect)
        on_object = dilate(filled_foreground(sample.clean), 1)
        assert sample.mask.any() and not (sample.mask & ~on_object).any()


def test_defect_images_are_not_separated_by_their_mean_colour():
    # Natural brightness variation between good images must exceed what a defect does to the mean.
    goods = [render_sample("wood", SIZE, sample_seed(0, "wood", "test/good", i)).image.mean() for i in range(8)]
    shifts = [
        abs(sample.image.mean() - sample.clean.mean())
        for sample in (render_sample("wood", SIZE, sample_seed(0, "wood", "test/stain", i), "stain") for i in range(4))
    ]
    assert max(shifts) < np.ptp(goods)


# ---------------------------------------------------------------------------------------------
# Natural variation
# ---------------------------------------------------------------------------------------------


def test_button_position_and_rotation_vary():
    size = 96
    centres, directions = [], []
    for index in range(8):
        image = render_sample("button", size, sample_seed(0, "button", "train/good", index)).image
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(float)
        silhouette = filled_foreground(image)
        ys, xs = np.nonzero(silhouette)
        cy, cx = ys.mean(), xs.mean()
        radius = np.sqrt(silhouette.sum() / np.pi)
        yy, xx = np.indices(grey.shape)
        face = np.hypot(yy - cy, xx - cx) < 0.72 * radius  # inside the rim
        dark = face & (grey < 0.75 * np.median(grey[face]))  # the holes and the engraved mark
        # The four holes are symmetric about the centre, so the dark pixels' centroid leans towards the mark.
        directions.append(np.arctan2(yy[dark].mean() - cy, xx[dark].mean() - cx))
        centres.append((cx, cy))
    assert np.std(np.array(centres), axis=0).min() > 0.02 * size
    resultant = abs(np.exp(1j * np.array(directions)).mean())  # 1 when all marks point the same way
    assert resultant < 0.85


@pytest.mark.parametrize("category", ["wood", "mesh"])
def test_texture_images_differ_beyond_brightness(category: str):
    samples = [render_sample(category, SIZE, sample_seed(0, category, "train/good", i)) for i in range(4)]
    images = [to_rgb(sample.image).astype(float).mean(axis=2) for sample in samples]
    standardised = [(image - image.mean()) / image.std() for image in images]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            correlation = (standardised[i] * standardised[j]).mean()
            assert correlation < 0.9, f"{category} good images {i} and {j} are nearly the same pattern"


# ---------------------------------------------------------------------------------------------
# Safe writing: no overwrite without force, atomic swap
# ---------------------------------------------------------------------------------------------

TINY = {"categories": ["wood"], "size": 32, "n_train": 1, "n_test_good": 1, "n_per_defect": 1}


def test_refuses_a_non_empty_folder_without_force_and_replaces_demo_data_with_force(tmp_path: Path):
    out = tmp_path / "set"
    write_demo_dataset(out, seed=1, **TINY)
    (out / "notes.txt").write_text("added later")
    with pytest.raises(FileExistsError, match="pass --force"):
        write_demo_dataset(out, **TINY)
    assert (out / "notes.txt").read_text() == "added later"
    with pytest.raises(FileExistsError, match=r"did not write.*\n  notes\.txt"):  # --force never deletes user files
        write_demo_dataset(out, force=True, **TINY)
    assert (out / "notes.txt").read_text() == "added later"
    (out / "notes.txt").unlink()
    write_demo_dataset(out, force=True, **TINY)
    assert (out / "manifest.json").is_file()
    assert json.loads((out / "manifest.json").read_text())["seed"] == 0
    assert [path.name for path in tmp_path.iterdir()] == ["set"]  # no staging or retired folders left


def test_force_never_deletes_a_folder_that_is_not_demo_data(tmp_path: Path):
    out = tmp_path / "data"
    (out / "mvtec" / "bottle" / "train" / "good").mkdir(parents=True)
    (out / "mvtec" / "bottle" / "train" / "good" / "000.png").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not written by `memseg-lite demo-data`"):
        write_demo_dataset(out, force=True, **TINY)
    assert (out / "mvtec" / "bottle" / "train" / "good" / "000.png").read_bytes() == b"precious"


def test_an_empty_existing_folder_is_filled_without_force(tmp_path: Path):
    out = tmp_path / "set"
    out.mkdir()
    write_demo_dataset(out, **TINY)
    assert (out / "manifest.json").is_file()
    assert [path.name for path in tmp_path.iterdir()] == ["set"]


def test_an_interrupted_write_leaves_nothing_half_written(tmp_path: Path, monkeypatch):
    out = tmp_path / "set"
    write_demo_dataset(out, **TINY)
    before = all_files(out)
    calls = []

    def failing_write(path, image):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of the run
        return real_write(path, image)

    real_write = demo_writer.write_image
    monkeypatch.setattr(demo_writer, "write_image", failing_write)
    with pytest.raises(KeyboardInterrupt):
        write_demo_dataset(out, force=True, seed=1, **TINY)
    assert all_files(out) == before  # the old set is untouched
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        write_demo_dataset(tmp_path / "fresh", **TINY)
    assert not (tmp_path / "fresh").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["set"]


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"categories": ["button", "carpet"]}, ValueError, "known categories: button, wood, mesh"),
        ({"categories": []}, ValueError, "categories is empty"),
        ({"size": 16}, ValueError, "size must be between 32"),
        ({"size": 64.0}, TypeError, "size must be an int"),
        ({"n_train": 0}, ValueError, "n_train must be >= 1"),
        ({"n_test_good": 0}, ValueError, "n_test_good must be >= 1"),
        ({"n_per_defect": 0}, ValueError, "n_per_defect must be >= 1"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, arguments, error, message):
    with pytest.raises(error, match=message):
        write_demo_dataset(tmp_path / "set", **{**TINY, **arguments})
    assert not (tmp_path / "set").exists()


def test_out_must_be_a_folder(tmp_path: Path):
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        write_demo_dataset(file, **TINY)


def test_render_functions_check_their_arguments():
    with pytest.raises(ValueError, match="its defects: scratch, hole, stain, crack"):
        render_sample("wood", SIZE, 0, "chip")
    with pytest.raises(ValueError, match="known categories"):
        render_sample("tile", SIZE, 0)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        render_good("wood", 0, SIZE)
    with pytest.raises(TypeError, match="seed"):
        render_sample("wood", SIZE, 1.5)


# ---------------------------------------------------------------------------------------------
# ensure_demo_data and the command line
# ---------------------------------------------------------------------------------------------


def test_ensure_demo_data_generates_once_then_reuses(tmp_path: Path, monkeypatch):
    root = tmp_path / "demo"
    assert ensure_demo_data(root, **TINY) == root
    assert (root / "manifest.json").is_file()

    def must_not_write(*args, **kwargs):
        raise AssertionError("ensure_demo_data rewrote a finished set")

    monkeypatch.setattr(demo_writer, "write_demo_dataset", must_not_write)
    assert ensure_demo_data(root, **TINY) == root
    with pytest.raises(ValueError, match="lacks categories button"):
        ensure_demo_data(root, categories=["button"])


def test_ensure_demo_data_fills_an_empty_folder_but_not_a_foreign_one(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    ensure_demo_data(empty, **TINY)
    assert (empty / "manifest.json").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "image.png").write_bytes(b"")
    with pytest.raises(FileExistsError, match="pass --force"):
        ensure_demo_data(foreign, **TINY)
    assert [path.name for path in foreign.iterdir()] == ["image.png"]


def test_cli_writes_the_set_and_refuses_to_overwrite(tmp_path: Path, capsys):
    out = tmp_path / "cli"
    argv = ["demo-data", "--out", str(out), "--categories", "mesh", "--size", "32", "--train", "2"]
    argv += ["--test-good", "1", "--per-defect", "1"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "mesh" in printed and str(out) in printed
    assert len(list((out / "mesh/train/good").glob("*.png"))) == 2
    assert cli.main(argv) == 1
    assert "pass --force" in capsys.readouterr().err
    assert cli.main([*argv, "--force"]) == 0


def test_never_replaces_the_folder_it_runs_in(tmp_path: Path, monkeypatch):
    out = tmp_path / "set"
    write_demo_dataset(out, **TINY)
    monkeypatch.chdir(out)
    with pytest.raises(ValueError, match="current working directory"):
        write_demo_dataset(out, force=True, **TINY)
    assert (out / "manifest.json").is_file()


def test_ensure_demo_data_rejects_a_broken_manifest_and_a_force_argument(tmp_path: Path):
    root = tmp_path / "demo"
    root.mkdir()
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a demo-data manifest"):
        ensure_demo_data(root)
    with pytest.raises(TypeError, match="never replaces"):
        ensure_demo_data(root, force=True)
