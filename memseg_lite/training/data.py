"""The training and validation data sets, built on the layout reader.

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

from memseg_lite.core.transforms import image_to_tensor
from memseg_lite.datasets.mvtec import images_to_tensor
from memseg_lite.training.config import VALIDATION_RECIPES


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

    Data-parallel runs: ``batch_size`` is the global batch; the process of rank ``rank`` out of
    ``world_size`` gets the ``rank``-th contiguous slice of it (``world_size`` must divide
    ``batch_size``), so the ranks' batches together are exactly the single-process batch.
    """

    def __init__(self, n_images: int, batch_size: int, total_steps: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1):
        if n_images < 1:
            raise ValueError("StepBatchSampler needs at least one image")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"StepBatchSampler: rank must be in [0, world_size), got rank={rank}, world_size={world_size}"
            )
        if batch_size % world_size:
            raise ValueError(
                f"batch_size={batch_size} (the global batch) cannot be split evenly over {world_size} processes; "
                f"use a --batch-size that is a multiple of {world_size}"
            )
        share = batch_size // world_size
        self.slots = range(rank * share, (rank + 1) * share)
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
            yield [(int(indices[slot]), step_sample_seed(self.seed, step, slot)) for slot in self.slots]


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


#: DataLoader workers when ``TrainConfig.num_workers`` is None and the model trains on CUDA.
DEFAULT_CUDA_WORKERS = 4


def loader_workers(requested: int | None, device: torch.device, processes_per_machine: int = 1) -> int:
    """The DataLoader workers to use: ``requested``, or for None :data:`DEFAULT_CUDA_WORKERS` on CUDA
    (at most the CPU cores this process's share of the machine has) and 0 (the training process) elsewhere."""
    if requested is not None:
        return int(requested)
    if device.type != "cuda":
        return 0
    cores = (os.cpu_count() or 1) // max(1, processes_per_machine)
    return max(1, min(DEFAULT_CUDA_WORKERS, cores - 1))


def loader_context(workers: int) -> str | None:
    """The DataLoader's process start method: ``"spawn"`` when there are workers.

    A forked worker inherits the parent's locks in whatever state its threads left them; after ONNX
    Runtime, OpenVINO or a process group ran in the same process (a notebook that predicts and then
    trains) a forked worker can wait on such a lock for ever. Spawned workers start clean; the
    trainer creates its loader once per run, so their start-up (about a second each) is paid once.
    """
    return "spawn" if workers > 0 else None


def init_loader_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one OpenCV and one torch thread per worker process.

    The workers already run in parallel; OpenCV's own thread pool in each of them would
    oversubscribe the cores (and slow the simulation down instead of speeding it up).
    """
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


class GoodImageDataset(Dataset):
    """Good images only, as uint8 ``[3, H, W]`` tensors, for anomalies simulated on the device.

    Items are addressed like :class:`SyntheticAnomalyDataset`'s, by ``(index, sample_seed)``;
    each comes with ``[sample_seed, index]``: the seed seeds the device-side simulation, the index
    finds the image's cached foreground mask.
    """

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        pixels = torch.from_numpy(np.ascontiguousarray(self.images[index])).permute(2, 0, 1)
        return pixels, torch.tensor([seed, index], dtype=torch.int64)


#: The ``"hard"`` recipe's cycle of (kind, variant): both kinds, each regular, small and faint.
HARD_CYCLE = (
    ("texture", "regular"), ("structure", "regular"),
    ("texture", "small"), ("structure", "small"),
    ("texture", "faint"), ("structure", "faint"),
)
#: Blend factor of faint anomalies: the low end of the method's delta ~ U[0.15, 1].
FAINT_DELTA = (0.15, 0.25)
#: Radius of the disc a small anomaly is cut to, as a fraction of the image's shorter side
#: (about 1 % of a square image's area; at least 2 pixels).
SMALL_RADIUS = 0.06


@dataclass
class ValidationSet:
    """Held-out good images with fixed synthetic anomalies (never the test split).

    ``images``: normalised ``[M, 3, H, W]``; ``masks``: ``[M, H, W]`` in {0, 1}; ``labels``: ``[M]``
    (1 where the mask is non-empty); ``sources``: the train/good file each sample came from;
    ``kinds``: ``"normal"``, ``"texture"`` or ``"structure"`` per sample; ``variants``: ``"good"``,
    ``"regular"``, ``"small"`` or ``"faint"`` per sample; ``valid``: uint8 ``[M, H, W]``, 1 on the
    images' own pixels and 0 on letterbox padding, which the pixel metrics and the pixel threshold
    leave out (``None``: every pixel is the image's own).
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    sources: list[Path]
    pixels: np.ndarray  # uint8 [M, H, W, 3], for pictures
    kinds: list[str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)
    valid: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


def anomaly_plan(number: int, anomalies_per_image: int, recipe: str) -> list[tuple[str, str]]:
    """The (kind, variant) of each anomaly of held-out image ``number``.

    ``"basic"``: kinds alternate, every anomaly as the simulator draws it (what runs used before the
    ``"hard"`` recipe). ``"hard"``: :data:`HARD_CYCLE`, continued from image to image, so with fewer
    than six anomalies per image the set as a whole still holds every (kind, variant).
    """
    if recipe == "basic":
        return [(("texture", "structure")[variant % 2], "regular") for variant in range(anomalies_per_image)]
    if recipe == "hard":
        start = number * anomalies_per_image
        return [HARD_CYCLE[(start + variant) % len(HARD_CYCLE)] for variant in range(anomalies_per_image)]
    raise ValueError(f"validation recipe must be one of {VALIDATION_RECIPES}, got {recipe!r}")


def small_anomaly(image: np.ndarray, result, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cut a simulated anomaly down to a disc around one of its pixels: (image, mask) of a small defect.

    The blend acts pixel by pixel, so keeping the simulated pixels inside the smaller mask and the
    good ones outside is exactly the sample the simulator gives for that mask.
    """
    mask = result.mask > 0
    height, width = mask.shape
    rows, cols = np.nonzero(mask)
    centre = int(rng.integers(len(rows)))
    radius = max(2.0, SMALL_RADIUS * min(height, width))
    yy, xx = np.ogrid[:height, :width]
    disc = (yy - rows[centre]) ** 2 + (xx - cols[centre]) ** 2 <= radius**2
    small = mask & disc  # never empty: it holds the centre
    pixels = np.where(small[..., None] if image.ndim == 3 else small, result.image, image)
    return pixels.astype(image.dtype, copy=False), small.astype(np.float32)


def build_validation_set(
    paths: Sequence[Path],
    images: np.ndarray,
    synthesizer,
    seed: int,
    anomalies_per_image: int = 6,
    recipe: str = "hard",
    valid: Sequence[np.ndarray] | None = None,
) -> ValidationSet:
    """For each held-out good image: the image itself, plus ``anomalies_per_image`` simulated anomalies.

    ``recipe`` (:func:`anomaly_plan`): ``"hard"`` mixes texture and structure anomalies, each
    regular (as the simulator draws it), small (cut to a disc of radius :data:`SMALL_RADIUS` of the
    image side) and faint (blend factor in :data:`FAINT_DELTA`); ``"basic"`` alternates the kinds,
    all regular. The anomalies use fixed seeds, so the validation set is identical for every run
    with the same seed. ``synthesizer`` needs ``sample(image, rng, kind=..., delta=...)``
    (:class:`memseg_lite.simulation.synthesis.AnomalySynthesizer`). ``valid``: per held-out image its
    valid region (:func:`memseg_lite.datasets.mvtec.valid_region`), repeated for its anomalies; kept
    only where some pixel is padding.
    """
    if valid is not None and len(valid) != len(images):
        raise ValueError(f"valid: expected one region per held-out image ({len(images)}), got {len(valid)}")
    if anomalies_per_image < 1:
        raise ValueError(f"anomalies_per_image must be >= 1, got {anomalies_per_image}")
    anomaly_plan(0, 1, recipe)  # an unknown recipe fails before any work
    pixels, masks, labels, sources, kinds, variants = [], [], [], [], [], []
    for number, (path, image) in enumerate(zip(paths, images, strict=True)):
        pixels.append(image)
        masks.append(np.zeros(image.shape[:2], dtype=np.float32))
        labels.append(0)
        sources.append(path)
        kinds.append("normal")
        variants.append("good")
        for variant, (kind, how) in enumerate(anomaly_plan(number, anomalies_per_image, recipe)):
            rng = np.random.default_rng([seed, number, variant, 0x7A1])
            delta = float(rng.uniform(*FAINT_DELTA)) if how == "faint" else None
            result = synthesizer.sample(image, rng, kind=kind, **({"delta": delta} if delta is not None else {}))
            sample, mask = result.image, result.mask.astype(np.float32)
            if how == "small":
                sample, mask = small_anomaly(image, result, rng)
            pixels.append(sample)
            masks.append(mask)
            labels.append(1)
            sources.append(path)
            kinds.append(kind)
            variants.append(how)
    if not pixels:
        raise ValueError("the validation set is empty; use at least one validation image")
    pixels_array = np.stack(pixels)
    regions = None
    if valid is not None and any(not np.all(np.asarray(region) > 0) for region in valid):
        copies = 1 + anomalies_per_image
        regions = torch.from_numpy(np.repeat(np.stack([np.asarray(r, dtype=np.uint8) for r in valid]), copies, axis=0))
    return ValidationSet(
        images=images_to_tensor(pixels_array),
        masks=torch.from_numpy(np.stack(masks)),
        labels=torch.tensor(labels),
        sources=sources,
        pixels=pixels_array,
        kinds=kinds,
        variants=variants,
        valid=regions,
    )
