"""One reader for the MVTec AD folder layout, and the data sets built on it.

The same code reads MVTec AD itself, the demo data and a user's own product images, as long as
they follow the layout::

    <data_root>/<category>/train/good/*.png
    <data_root>/<category>/test/good/*.png
    <data_root>/<category>/test/<defect>/*.png
    <data_root>/<category>/ground_truth/<defect>/<image stem>_mask.png

Training never reads ``test/``: the memory images, the training images and the validation
images are three disjoint parts of ``train/good`` (see :func:`split_train_images`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from memseg_lite.io import list_images, read_image
from memseg_lite.transforms import ensure_rgb, image_to_tensor, resize_image, resize_mask

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
        for image in list_images(defect_dir):
            mask = None
            if defect != GOOD:
                mask = category_dir / "ground_truth" / defect / f"{image.stem}{MASK_SUFFIX}.png"
                if not mask.is_file():
                    raise FileNotFoundError(
                        f"defect image {image} has no ground-truth mask; expected {mask} "
                        "(a binary PNG of the same size, white where the defect is)"
                    )
            files.test.append(LabeledImage(image=image, defect=defect, mask=mask))
    if require_test and not files.test:
        raise FileNotFoundError(f"no test images in {test_dir}/<good|defect>/")
    return files


# --------------------------------------------------------------------------------------------
# Splitting train/good: memory | train | validation
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainSplit:
    memory: list[Path]
    train: list[Path]
    validation: list[Path]


def split_train_images(
    paths: Sequence[Path], memory_size: int, validation_size: int, seed: int
) -> TrainSplit:
    """Split the good training images, reproducibly, into three disjoint parts.

    The memory images only fill the memory bank: the network never trains on them, so the
    difference information it sees at training time is as large as it will be on new images.
    The validation images (plus synthetic anomalies) select checkpoints without the test set.
    """
    paths = list(paths)
    if memory_size < 1:
        raise ValueError(f"memory_size must be at least 1, got {memory_size}")
    if validation_size < 0:
        raise ValueError(f"validation_size must be >= 0, got {validation_size}")
    needed = memory_size + validation_size + 1
    if len(paths) < needed:
        raise ValueError(
            f"only {len(paths)} good training images, but memory_size={memory_size} + "
            f"validation_size={validation_size} + at least 1 training image are needed; "
            "lower --memory-size / --val-images or add images"
        )
    order = np.random.default_rng([seed, 0x5EED]).permutation(len(paths))
    shuffled = [paths[i] for i in order]
    memory = sorted(shuffled[:memory_size])
    validation = sorted(shuffled[memory_size : memory_size + validation_size])
    train = sorted(shuffled[memory_size + validation_size :])
    return TrainSplit(memory=memory, train=train, validation=validation)


# --------------------------------------------------------------------------------------------
# Loading pixels
# --------------------------------------------------------------------------------------------
def load_image(path: Path, image_size: int, center_crop: int | None = None) -> np.ndarray:
    """Read, convert grey to RGB, resize (and optionally center-crop): uint8 ``S x S x 3``."""
    return resize_image(ensure_rgb(read_image(path)), image_size, center_crop)


def load_mask(path: Path | None, image_shape: tuple[int, int], image_size: int, center_crop: int | None = None) -> np.ndarray:
    """Binary mask as uint8 {0, 1}, resized with nearest-neighbour; zeros when ``path`` is None.

    ``image_shape`` is the original image's (height, width); a mask of another size is an error,
    since resizing both independently would silently misalign them.
    """
    side = center_crop or image_size
    if path is None:
        return np.zeros((side, side), dtype=np.uint8)
    mask = read_image(path, grayscale=True)
    if mask.shape[:2] != tuple(image_shape):
        raise ValueError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} pixels but its image is "
            f"{image_shape[1]}x{image_shape[0]}; masks must have the size of their image"
        )
    return (resize_mask(mask, image_size, center_crop) > 127).astype(np.uint8)


def load_images(paths: Sequence[Path], image_size: int, center_crop: int | None = None, progress: bool = False) -> np.ndarray:
    """Load several images into one uint8 array ``[N, S, S, 3]`` (errors name the bad file)."""
    iterator = paths
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(paths, desc="loading images", unit="img", leave=False)
    return np.stack([load_image(path, image_size, center_crop) for path in iterator])


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> normalised float ``[N, 3, H, W]``."""
    return torch.stack([image_to_tensor(image) for image in images])


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------
def step_sample_seed(seed: int, step: int, slot: int) -> int:
    """The seed of one training sample: a pure function of (run seed, step, position in batch).

    This is what makes a resumed run draw exactly the batches an uninterrupted one would,
    whatever the number of DataLoader workers.
    """
    return int(np.random.SeedSequence([seed, step, slot]).generate_state(1)[0])


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for each step from ``start_step`` to ``total_steps``, a batch of (index, sample seed).

    The images of step ``s`` are drawn with a generator seeded by ``(seed, s)``, so batches do not
    depend on epochs, workers or where a run was resumed.
    """

    def __init__(self, n_images: int, batch_size: int, total_steps: int, seed: int, start_step: int = 0):
        if n_images < 1:
            raise ValueError("StepBatchSampler needs at least one image")
        self.n_images = n_images
        self.batch_size = batch_size
        self.total_steps = total_steps
        self.seed = seed
        self.start_step = start_step

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            rng = np.random.default_rng([self.seed, step, 0xBA7C])
            replace = self.batch_size > self.n_images
            indices = rng.choice(self.n_images, size=self.batch_size, replace=replace)
            yield [(int(index), step_sample_seed(self.seed, step, slot)) for slot, index in enumerate(indices)]


class SyntheticAnomalyDataset(Dataset):
    """Good images + the anomaly simulator: items are (image tensor, mask tensor).

    ``images`` is a uint8 array ``[N, H, W, 3]`` already resized. An item is addressed by
    ``(index, sample_seed)``: the seed drives the simulator, so the same pair always gives the
    same sample.
    """

    def __init__(self, images: np.ndarray, synthesizer):
        self.images = images
        self.synthesizer = synthesizer

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        image, mask = self.synthesizer(self.images[index], np.random.default_rng(seed))
        return image_to_tensor(image), torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))


class GoodImageDataset(Dataset):
    """Good images only, as uint8 ``[3, H, W]`` tensors, for anomalies simulated on the device.

    Items are addressed like :class:`SyntheticAnomalyDataset`'s, by ``(index, sample_seed)``;
    the seed is passed through so the trainer can seed the device-side simulation.
    """

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        pixels = torch.from_numpy(np.ascontiguousarray(self.images[index])).permute(2, 0, 1)
        return pixels, seed


@dataclass
class ValidationSet:
    """Held-out good images with fixed synthetic anomalies (never the test split).

    ``images``: normalised ``[M, 3, H, W]``; ``masks``: ``[M, H, W]`` in {0, 1}; ``labels``: ``[M]``
    (1 where the mask is non-empty); ``sources``: the train/good file each sample came from.
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    sources: list[Path]
    pixels: np.ndarray  # uint8 [M, H, W, 3], for pictures

    def __len__(self) -> int:
        return len(self.labels)


def build_validation_set(
    paths: Sequence[Path],
    images: np.ndarray,
    synthesizer,
    seed: int,
    anomalies_per_image: int = 2,
) -> ValidationSet:
    """For each held-out good image: the image itself, plus ``anomalies_per_image`` simulated anomalies.

    The anomalies alternate between texture and structure kinds and use fixed seeds, so the
    validation set is identical for every run with the same seed.
    """
    pixels, masks, labels, sources = [], [], [], []
    kinds = ("texture", "structure")
    for number, (path, image) in enumerate(zip(paths, images)):
        pixels.append(image)
        masks.append(np.zeros(image.shape[:2], dtype=np.float32))
        labels.append(0)
        sources.append(path)
        for variant in range(anomalies_per_image):
            rng = np.random.default_rng([seed, number, variant, 0x7A1])
            result = synthesizer.sample(image, rng, kind=kinds[variant % 2])
            pixels.append(result.image)
            masks.append(result.mask.astype(np.float32))
            labels.append(1)
            sources.append(path)
    if not pixels:
        raise ValueError("the validation set is empty; use at least one validation image")
    pixels_array = np.stack(pixels)
    return ValidationSet(
        images=images_to_tensor(pixels_array),
        masks=torch.from_numpy(np.stack(masks)),
        labels=torch.tensor(labels),
        sources=sources,
        pixels=pixels_array,
    )


class EvaluationSet(Dataset):
    """The test split of one category: items are dicts with image, mask, label, defect, path."""

    def __init__(self, files: CategoryFiles, image_size: int, center_crop: int | None = None):
        if not files.test:
            raise ValueError(f"category {files.category} has no test images")
        self.items = files.test
        self.image_size = image_size
        self.center_crop = center_crop

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        raw = ensure_rgb(read_image(item.image))
        image = resize_image(raw, self.image_size, self.center_crop)
        mask = load_mask(item.mask, raw.shape[:2], self.image_size, self.center_crop)
        return {
            "image": image_to_tensor(image),
            "mask": torch.from_numpy(mask),
            "label": item.label,
            "defect": item.defect,
            "path": str(item.image),
        }
