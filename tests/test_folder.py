"""Plain folders of images read into the same CategoryFiles as the MVTec AD layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from memseg_lite.datasets.folder import DEFECT, files_for_config, find_mask, scan_folders
from memseg_lite.datasets.mvtec import load_images, scan_category
from memseg_lite.training.config import TrainConfig


def _write(path, shape=(40, 70), value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((*shape, 3), value, dtype=np.uint8))
    return path


@pytest.fixture
def product(tmp_path):
    root = tmp_path / "bolts"
    for i, ext in enumerate([".png", ".JPG", ".bmp", ".jpeg", ".TIF"]):
        _write(root / "good" / f"g{i}{ext}")
    (root / "good" / "notes.txt").write_text("not an image")
    _write(root / "good" / ".hidden.png")
    _write(root / "test_good" / "t0.png")
    _write(root / "defects" / "d0.png")
    _write(root / "defects" / "scratch" / "d1.JPG")
    _write(root / "masks" / "d0_mask.PNG", value=255)
    _write(root / "masks" / "scratch" / "d1.png", value=255)
    return root


def test_scan_folders_gives_category_files(product):
    files = scan_folders(product / "good", product / "test_good", product / "defects", product / "masks")
    assert files.category == "bolts"  # .../bolts/good is named after its parent
    assert [p.name for p in files.train_good] == ["g0.png", "g1.JPG", "g2.bmp", "g3.jpeg", "g4.TIF"]
    assert [(i.image.name, i.defect, i.label) for i in files.test] == [
        ("t0.png", "good", 0), ("d0.png", DEFECT, 1), ("d1.JPG", "scratch", 1)]
    assert [i.mask.name if i.mask else None for i in files.test] == [None, "d0_mask.PNG", "d1.png"]
    assert files.defect_types == [DEFECT, "scratch"]
    # Without masks the defective images are still listed (image-level numbers only).
    unmasked = scan_folders(product / "good", product / "test_good", product / "defects")
    assert [i.mask for i in unmasked.test] == [None] * 3
    assert scan_folders(product / "good").test == []


def test_scan_folders_errors_name_the_folder(product, tmp_path):
    with pytest.raises(FileNotFoundError, match="--good folder .*missing does not exist"):
        scan_folders(tmp_path / "missing")
    with pytest.raises(NotADirectoryError, match="is a file"):
        scan_folders(product / "good" / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images .* --good folder"):
        scan_folders(tmp_path / "empty")
    (product / "masks" / "d0_mask.PNG").unlink()
    with pytest.raises(FileNotFoundError, match="d0.png has no mask"):
        scan_folders(product / "good", product / "test_good", product / "defects", product / "masks")
    with pytest.raises(ValueError, match="--masks needs --test-defect"):
        scan_folders(product / "good", mask_dir=product / "masks")
    with pytest.raises(ValueError, match="shares 5 image"):
        scan_folders(product / "good", test_good_dir=product / "good")


def test_find_mask_ignores_case_and_extension(product):
    assert find_mask(product / "masks", product / "defects" / "D0.png", DEFECT).name == "d0_mask.PNG"  # any case
    assert find_mask(product / "masks", product / "defects" / "d7.png", DEFECT) is None
    assert find_mask(product / "masks", product / "defects" / "d0.jpg", DEFECT).name == "d0_mask.PNG"


def test_files_for_config_reads_either_layout(product, tiny_demo):
    config = TrainConfig(good_dir=str(product / "good"), category="bolts")
    assert [p.name for p in files_for_config(config).train_good][:2] == ["g0.png", "g1.JPG"]
    assert files_for_config(config.to_dict()).category == "bolts"  # a checkpoint's stored dict works too
    mvtec = TrainConfig(data_root=str(tiny_demo), category="button")
    assert files_for_config(mvtec).train_good == scan_category(tiny_demo, "button").train_good
    with pytest.raises(FileNotFoundError, match="without test images"):
        files_for_config(config, require_test=True)
    with pytest.raises(ValueError, match="need good_dir"):
        TrainConfig(test_good_dir=str(product / "test_good"))


def test_any_size_is_loaded_and_mixed_shapes_warn(product):
    _write(product / "good" / "square.png", shape=(50, 50))
    files = scan_folders(product / "good")
    with pytest.warns(UserWarning, match="mixed aspect ratios"):
        pixels = load_images(files.train_good, (64, 128), resize="letterbox")
    assert pixels.shape == (6, 64, 128, 3)
