"""One reader for the MVTec AD folder layout: the categories, their files and their pixels.

The same code reads MVTec AD itself, the demo data and a user's own product images, as long as
they follow the layout::

    <data_root>/<category>/train/good/*.png
    <data_root>/<category>/test/good/*.png
    <data_root>/<category>/test/<defect>/*.png
    <data_root>/<category>/ground_truth/<defect>/<image stem>_mask.png
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from memseg_lite.core.io import IMAGE_SUFFIXES, list_images, read_image, read_mask
from memseg_lite.core.sizes import parse_size
from memseg_lite.core.transforms import (
    ensure_rgb,
    image_to_tensor,
    resize_image,
    resize_mask,
    warn_mixed_sizes,
)

# The 15 categories of MVTec AD (Bergmann et al., CVPR 2019); grid, screw and zipper are grey-level.
MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)
GOOD = "good"
MASK_SUFFIX = "_mask"


# --------------------------------------------------------------------------------------------
# Scanning the folder layout
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabeledImage:
    """One test image: its defect type (``"good"`` for normal ones) and ground-truth mask path."""

    image: Path
    defect: str
    mask: Path | None

    @property
    def label(self) -> int:
        return 0 if self.defect == GOOD else 1


@dataclass
class CategoryFiles:
    """The files of one category, checked against the MVTec AD layout."""

    root: Path
    category: str
    train_good: list[Path]
    test: list[LabeledImage] = field(default_factory=list)

    @property
    def defect_types(self) -> list[str]:
        return sorted({item.defect for item in self.test if item.defect != GOOD})

    def __str__(self) -> str:
        n_bad = sum(item.label for item in self.test)
        return (
            f"{self.category} ({self.root / self.category}): {len(self.train_good)} train/good, "
            f"{len(self.test) - n_bad} test/good, {n_bad} defective in {len(self.defect_types)} defect types"
        )


def list_categories(data_root: str | os.PathLike) -> list[str]:
    """Sub-folders of ``data_root`` that contain ``train/good``."""
    root = Path(data_root)
    if not root.is_dir():
        return []
    return sorted(path.name for path in root.iterdir() if (path / "train" / GOOD).is_dir())


def scan_category(data_root: str | os.PathLike, category: str, require_test: bool = True) -> CategoryFiles:
    """List and check a category's files; raise a clear error for anything out of place.

    Errors name the path and say what is expected: a missing data root or category (with the
    categories that are there), a missing or empty ``train/good``, a missing ``test`` folder
    (when ``require_test``), and a defect image whose mask is missing.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data root {root} does not exist. Generate the demo data with "
            f"`memseg-lite demo-data --out {root}`, get MVTec AD with `memseg-lite download mvtec`, "
            "or point --data-root at a folder in the MVTec AD layout"
        )
    category_dir = root / category
    if not category_dir.is_dir():
        known = list_categories(root)
        hint = f"categories found there: {', '.join(known)}" if known else "no category folders found there"
        raise FileNotFoundError(f"category folder {category_dir} does not exist ({hint})")

    train_dir = category_dir / "train" / GOOD
    if not train_dir.is_dir():
        raise FileNotFoundError(
            f"{train_dir} does not exist; a category needs its defect-free training images in train/good/"
        )
    train_good = list_images(train_dir)
    if not train_good:
        raise FileNotFoundError(f"no images (.png/.jpg/.bmp/.tif) in {train_dir}")

    files = CategoryFiles(root=root, category=category, train_good=train_good)
    test_dir = category_dir / "test"
    if not test_dir.is_dir():
        if require_test:
            raise FileNotFoundError(
                f"{test_dir} does not exist; evaluation needs test/good/ and test/<defect>/ folders"
            )
        return files

    # Hidden folders (.ipynb_checkpoints, ...) are not defect types.
    for defect_dir in sorted(path for path in test_dir.iterdir() if path.is_dir() and not path.name.startswith(".")):
        defect = defect_dir.name
        masks = _mask_files(category_dir / "ground_truth" / defect) if defect != GOOD else {}
        for image in list_images(defect_dir):
            mask = None
            if defect != GOOD:
                mask = _find_mask(
                    masks, image, category_dir / "ground_truth" / defect / f"{image.stem}{MASK_SUFFIX}.png"
                )
            files.test.append(LabeledImage(image=image, defect=defect, mask=mask))
    if require_test and not files.test:
        raise FileNotFoundError(f"no test images in {test_dir}/<good|defect>/")
    return files


def _mask_files(folder: Path) -> dict[str, list[Path]]:
    """Image files in ``folder`` by lower-case stem (``000_mask.PNG`` -> ``000_mask``)."""
    found: dict[str, list[Path]] = {}
    if folder.is_dir():
        for path in list_images(folder):
            found.setdefault(path.stem.lower(), []).append(path)
    return found


def _find_mask(masks: dict[str, list[Path]], image: Path, expected: Path) -> Path:
    """The mask of ``image``: ``<stem>_mask`` with any image extension, in any letter case."""
    candidates = masks.get(f"{image.stem}{MASK_SUFFIX}".lower(), [])
    exact = [path for path in candidates if path.stem == f"{image.stem}{MASK_SUFFIX}"]
    candidates = exact or candidates
    if not candidates:
        raise FileNotFoundError(
            f"defect image {image} has no ground-truth mask; expected {expected} "
            f"(a binary image of the same size, {', '.join(IMAGE_SUFFIXES)} in any letter case, "
            "non-zero where the defect is)"
        )
    if len(candidates) > 1:
        raise ValueError(
            f"defect image {image} has several ground-truth masks ({', '.join(str(p) for p in candidates)}); "
            "keep one and delete the others"
        )
    return candidates[0]


# --------------------------------------------------------------------------------------------
# Loading pixels
# --------------------------------------------------------------------------------------------
def load_image(path: Path, image_size, center_crop: int | None = None, resize: str = "stretch") -> np.ndarray:
    """Read, convert grey to RGB, fit to ``image_size`` (``S`` or ``(H, W)``; ``resize``: "stretch" or
    "letterbox", see :mod:`memseg_lite.core.transforms`) and optionally center-crop: uint8 ``H x W x 3``."""
    return resize_image(ensure_rgb(read_image(path)), image_size, center_crop, mode=resize)


def load_mask(
    path: Path | None, image_shape: tuple[int, int], image_size, center_crop: int | None = None, resize: str = "stretch"
) -> np.ndarray:
    """Binary mask as uint8 {0, 1}, resized with nearest-neighbour; zeros when ``path`` is None.

    Non-zero pixels mark the defect (0/1, 0/255, 16-bit, palette PNGs by index; see
    :func:`memseg_lite.core.io.read_mask`, which also says which masks are refused).
    ``image_shape`` is the original image's (height, width); a mask of another size is an error,
    since resizing both independently would silently misalign them.
    """
    if path is None:
        shape = (center_crop, center_crop) if center_crop else parse_size(image_size)
        return np.zeros(shape, dtype=np.uint8)
    mask = read_mask(path)
    if mask.shape[:2] != tuple(image_shape):
        raise ValueError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} pixels but its image is "
            f"{image_shape[1]}x{image_shape[0]}; masks must have the size of their image"
        )
    return (resize_mask(mask, image_size, center_crop, mode=resize) > 0).astype(np.uint8)


def load_images(
    paths: Sequence[Path], image_size, center_crop: int | None = None, progress: bool = False, resize: str = "stretch",
    return_shapes: bool = False,
):
    """Load several images into one uint8 array ``[N, H, W, 3]`` (errors name the bad file).

    Warns (``UserWarning``) when the images' shapes make ``resize`` distort them or pad them
    unevenly (:func:`memseg_lite.core.transforms.mixed_size_warning`). ``return_shapes``: also
    return each file's own ``(height, width)`` (for :func:`valid_region`).
    """
    iterator = paths
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(paths, desc="loading images", unit="img", leave=False)
    loaded, shapes = [], []
    for path in iterator:
        raw = ensure_rgb(read_image(path))
        shapes.append(tuple(raw.shape[:2]))
        loaded.append(resize_image(raw, image_size, center_crop, mode=resize))
    where = f"the images in {Path(paths[0]).parent}" if paths else "the images"
    warn_mixed_sizes(set(shapes), image_size, resize, where)
    return (np.stack(loaded), shapes) if return_shapes else np.stack(loaded)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> normalised float ``[N, 3, H, W]``."""
    return torch.stack([image_to_tensor(image) for image in images])


def valid_region(image_shape: tuple[int, int], image_size, center_crop: int | None = None,
                 resize: str = "stretch") -> np.ndarray:
    """uint8 ``H x W`` map, 1 where the network input shows the image's own pixels, 0 on letterbox padding.

    The image's frame fitted exactly as its pixels are (nearest-neighbour, then the same crop), so
    it lines up with the image and the mask. All ones for ``"stretch"`` and for images with the
    input's aspect ratio.
    """
    frame = np.ones(tuple(int(v) for v in image_shape[:2]), dtype=np.uint8)
    return resize_mask(frame, image_size, center_crop, mode=resize)


class EvaluationSet(Dataset):
    """The test split of one category: items are dicts with image, mask, valid, label, defect, path.

    ``valid`` (uint8 ``H x W``, :func:`valid_region`) marks the image's own pixels, so pixel metrics
    can leave letterbox padding out.
    """

    def __init__(self, files: CategoryFiles, image_size, center_crop: int | None = None, resize: str = "stretch"):
        if not files.test:
            raise ValueError(f"category {files.category} has no test images")
        self.items = files.test
        self.image_size = image_size
        self.center_crop = center_crop
        self.resize = resize

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        raw = ensure_rgb(read_image(item.image))
        image = resize_image(raw, self.image_size, self.center_crop, mode=self.resize)
        mask = load_mask(item.mask, raw.shape[:2], self.image_size, self.center_crop, resize=self.resize)
        valid = valid_region(raw.shape[:2], self.image_size, self.center_crop, resize=self.resize)
        return {
            "image": image_to_tensor(image),
            "mask": torch.from_numpy(mask),
            "valid": torch.from_numpy(valid),
            "label": item.label,
            "defect": item.defect,
            "path": str(item.image),
        }
