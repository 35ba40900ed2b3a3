"""Plain folders of images: the practitioner's data, read into the same :class:`CategoryFiles` as MVTec AD.

A user with photos of a product rarely has the MVTec AD layout. Here the folders are named one
by one::

    good_dir/         defect-free images (training, memory bank, validation)   required
    test_good_dir/    defect-free images for evaluation / calibration           optional
    test_defect_dir/  defective images; images directly inside are defect type
                      "defect", images in sub-folders take the sub-folder's name  optional
    mask_dir/         one mask per defective image: <stem>_mask.<ext> or
                      <stem>.<ext>, directly inside or in the defect type's
                      sub-folder (non-zero pixels mark the defect)              optional

Any common image extension in any case (``.png .jpg .jpeg .bmp .tif .tiff``, so ``.JPG`` too),
any size. Without masks the defective images still count for the image-level numbers (AUROC,
precision, recall, F1 and the F1-optimal threshold), not for the pixel-level ones.

:func:`scan_folders` returns the :class:`~memseg_lite.datasets.mvtec.CategoryFiles` that
:func:`~memseg_lite.datasets.mvtec.scan_category` gives for the MVTec AD layout, so training and
evaluation do not care where the files came from.
"""

from __future__ import annotations

import os
from pathlib import Path

from memseg_lite.core.io import IMAGE_SUFFIXES, list_images
from memseg_lite.datasets.mvtec import GOOD, MASK_SUFFIX, CategoryFiles, LabeledImage, scan_category

DEFECT = "defect"  # the defect type of images directly inside test_defect_dir


def _folder(path: str | os.PathLike, option: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"{option} folder {folder} does not exist; give the folder that holds the images")
    if not folder.is_dir():
        raise NotADirectoryError(f"{option} {folder} is a file, not a folder; give the folder that holds the images")
    return folder


def _images(folder: Path, option: str, required: bool = True) -> list[Path]:
    images = list_images(folder)
    if required and not images:
        raise FileNotFoundError(
            f"no images ({' '.join(IMAGE_SUFFIXES)}, any case) directly inside the {option} folder {folder}"
        )
    return images


def find_mask(mask_dir: Path, image: Path, defect: str) -> Path | None:
    """The mask of ``image``: ``<stem>_mask.<ext>`` or ``<stem>.<ext>`` (any image extension, any case).

    Looked up in ``mask_dir/<defect>/`` first (when that sub-folder exists), then in ``mask_dir``.
    """
    wanted = {f"{image.stem}{MASK_SUFFIX}".lower(), image.stem.lower()}
    for folder in (mask_dir / defect, mask_dir):
        if not folder.is_dir():
            continue
        for candidate in sorted(folder.iterdir()):
            if candidate.is_file() and candidate.suffix.lower() in IMAGE_SUFFIXES and candidate.stem.lower() in wanted:
                return candidate
    return None


def scan_folders(
    good_dir: str | os.PathLike,
    test_good_dir: str | os.PathLike | None = None,
    test_defect_dir: str | os.PathLike | None = None,
    mask_dir: str | os.PathLike | None = None,
    name: str | None = None,
    check_overlap: bool = True,
) -> CategoryFiles:
    """List and check the images of plain folders (see the module docstring); errors name the folder.

    ``name`` is the product's name in messages and results (default: the good folder's name, or
    its parent's when that name is ``good``). ``check_overlap``: refuse test images that are also in
    ``good_dir`` (off when ``good_dir`` only names the product, e.g. to evaluate an MVTec AD run on folders).
    """
    good = _folder(good_dir, "--good")
    train_good = _images(good, "--good")
    if name is None:
        name = good.parent.name if good.name.lower() == GOOD and good.parent.name else good.name
    files = CategoryFiles(root=good.parent, category=name, train_good=train_good)
    if mask_dir is not None and test_defect_dir is None:
        raise ValueError("--masks needs --test-defect (the defective images the masks belong to)")

    if test_good_dir is not None:
        folder = _folder(test_good_dir, "--test-good")
        overlap = {p.resolve() for p in train_good} & {p.resolve() for p in _images(folder, "--test-good")}
        if overlap and check_overlap:
            raise ValueError(
                f"--test-good {folder} shares {len(overlap)} image(s) with --good {good} (e.g. {sorted(overlap)[0]}); "
                "test images must not be training images"
            )
        files.test += [LabeledImage(image=path, defect=GOOD, mask=None) for path in _images(folder, "--test-good")]

    if test_defect_dir is not None:
        folder = _folder(test_defect_dir, "--test-defect")
        groups = [(DEFECT, _images(folder, "--test-defect", required=False))]
        groups += [
            (sub.name, _images(sub, "--test-defect", required=False))
            for sub in sorted(folder.iterdir())
            if sub.is_dir() and not sub.name.startswith(".") and sub.name.lower() != GOOD
        ]
        groups = [(defect, images) for defect, images in groups if images]
        if not groups:
            raise FileNotFoundError(
                f"no images ({' '.join(IMAGE_SUFFIXES)}, any case) in the --test-defect folder {folder} "
                "or its sub-folders"
            )
        masks = _folder(mask_dir, "--masks") if mask_dir is not None else None
        for defect, images in groups:
            for image in images:
                mask = None
                if masks is not None:
                    mask = find_mask(masks, image, defect)
                    if mask is None:
                        raise FileNotFoundError(
                            f"defective image {image} has no mask in {masks}; expected {masks}/{image.stem}"
                            f"{MASK_SUFFIX}.png (or {image.stem}.png, any image extension; non-zero where the "
                            "defect is). Add it, or leave out --masks to evaluate image-level numbers only"
                        )
                files.test.append(LabeledImage(image=image, defect=defect, mask=mask))
    return files


def files_for_config(config, require_test: bool = False) -> CategoryFiles:
    """The files a :class:`~memseg_lite.training.config.TrainConfig` (or its dict, as stored in checkpoints) names.

    Plain folders when ``good_dir`` is set, otherwise ``data_root/category`` in the MVTec AD layout.
    """
    def get(key, default=None):
        return config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)

    if get("good_dir"):
        files = scan_folders(get("good_dir"), get("test_good_dir"), get("test_defect_dir"), get("mask_dir"),
                             name=get("category"))
        if require_test and not files.test:
            raise FileNotFoundError(
                f"the run was trained from the plain folder {get('good_dir')} without test images; "
                "give --test-good DIR --test-defect DIR [--masks DIR]"
            )
        return files
    return scan_category(get("data_root", "data/demo"), get("category", "button"), require_test=require_test)
