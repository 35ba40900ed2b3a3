"""The demo categories (what each product is and which defects it has), seeds and argument checks."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1
MASK_COVERAGE = 0.5  # a pixel is in the mask when the defect covers at least half of it
MIN_SIZE = 32
MAX_SIZE = 4096
MIN_VISIBILITY = 8.0  # mean albedo change (grey levels) a defect must reach inside its mask
MAX_TRIES = 50


@dataclass(frozen=True)
class CategorySpec:
    """What a demo category is: its name, kind, colour mode, defect types and a description."""

    name: str
    kind: str  # "object" (foreground on a background) or "texture" (full-frame surface)
    grayscale: bool  # written as single-channel PNG, like MVTec's grid, screw and zipper
    defects: tuple[str, ...]
    description: str


CATEGORIES: dict[str, CategorySpec] = {
    "button": CategorySpec(
        name="button",
        kind="object",
        grayscale=False,
        defects=("scratch", "dent", "stain", "chip"),
        description=(
            "An ivory four-hole button with a raised rim and an engraved arrow on a dark slate table; "
            "position, rotation, light direction, brightness and colour vary."
        ),
    ),
    "wood": CategorySpec(
        name="wood",
        kind="texture",
        grayscale=False,
        defects=("scratch", "hole", "stain", "crack"),
        description=(
            "A full-frame wooden board with warped growth rings and fibres; ring spacing, phase, "
            "grain angle, arcs and tone vary."
        ),
    ),
    "mesh": CategorySpec(
        name="mesh",
        kind="texture",
        grayscale=True,
        defects=("broken", "bent", "glue", "thread"),
        description=(
            "A grey-level woven wire mesh on a dark backing; wire pitch, angle, phase, jitter and "
            "lighting vary."
        ),
    ),
}


@dataclass(frozen=True, eq=False)
class DemoSample:
    """One rendered image with its ground truth.

    ``image`` and ``clean`` are uint8, ``H x W x 3`` (RGB) or ``H x W`` (grey categories);
    ``clean`` is the same image without the defect (same seed). ``mask`` is bool ``H x W``,
    True on the defect, all False for a good sample.
    """

    image: np.ndarray
    mask: np.ndarray
    clean: np.ndarray
    category: str
    defect: str | None


@dataclass(frozen=True)
class DemoDatasetSummary:
    """What :func:`write_demo_dataset` wrote; ``str()`` gives a short table."""

    root: Path
    seed: int
    size: int
    counts: dict[str, dict[str, int]]  # category -> split ("train/good", "test/<defect>") -> images
    seconds: float = field(compare=False)

    @property
    def n_images(self) -> int:
        return sum(sum(splits.values()) for splits in self.counts.values())

    def __str__(self) -> str:
        rows = [("category", "kind", "channels", "train", "test good", "test defect (per type)")]
        for name, splits in self.counts.items():
            spec = CATEGORIES[name]
            per_defect = ", ".join(f"{d} {splits[f'test/{d}']}" for d in spec.defects)
            n_defect = sum(splits[f"test/{d}"] for d in spec.defects)
            rows.append(
                (
                    name,
                    spec.kind,
                    "grey" if spec.grayscale else "RGB",
                    str(splits["train/good"]),
                    str(splits["test/good"]),
                    f"{n_defect} ({per_defect})",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            f"demo data: {self.n_images} images of {self.size} x {self.size} px, seed {self.seed}, "
            f"written to {self.root} in {self.seconds:.1f} s"
        ]
        lines += [
            "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Seeds and argument checks
# ----------------------------------------------------------------------------------------------


def sample_seed(seed: int, category: str, split: str, index: int) -> np.random.SeedSequence:
    """The seed of one image: ``split`` is ``"train/good"``, ``"test/good"`` or ``"test/<defect>"``.

    Names enter through CRC-32 (stable across Python runs, unlike ``hash``), so each image's
    seed depends only on its own coordinates.
    """
    seed = check_int("seed", seed, minimum=0)
    index = check_int("index", index, minimum=0)
    if not isinstance(category, str) or not isinstance(split, str):
        raise TypeError(f"category and split must be strings, got {category!r} and {split!r}")
    key = (zlib.crc32(category.encode()), zlib.crc32(split.encode()), index)
    return np.random.SeedSequence(seed, spawn_key=key)


def child_seed(sequence: np.random.SeedSequence, number: int) -> np.random.SeedSequence:
    # Built by hand rather than with .spawn(), which counts calls and would make a reused
    # SeedSequence give different children the second time.
    return np.random.SeedSequence(
        sequence.entropy, spawn_key=(*sequence.spawn_key, number), pool_size=sequence.pool_size
    )


def as_seed_sequence(seed: int | Sequence[int] | np.random.SeedSequence) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"seed must be an int, a sequence of ints or a numpy SeedSequence, got {seed!r}")
    if isinstance(seed, (int, np.integer)):
        check_int("seed", seed, minimum=0)
        return np.random.SeedSequence(int(seed))
    if isinstance(seed, Sequence) and seed and all(isinstance(s, (int, np.integer)) and s >= 0 for s in seed):
        return np.random.SeedSequence([int(s) for s in seed])
    raise TypeError(
        f"seed must be a non-negative int, a sequence of them or a numpy SeedSequence, got {seed!r}"
    )


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def check_size(size: object) -> int:
    return check_int("size", size, minimum=MIN_SIZE, maximum=MAX_SIZE)


def category_spec(category: object) -> CategorySpec:
    if not isinstance(category, str):
        raise TypeError(f"category must be a string, got {type(category).__name__} {category!r}")
    if category not in CATEGORIES:
        raise ValueError(f"unknown demo category {category!r}; known categories: {', '.join(CATEGORIES)}")
    return CATEGORIES[category]


def check_categories(categories: str | Iterable[str] | None) -> list[str]:
    if categories is None:
        return list(CATEGORIES)
    if isinstance(categories, str):
        categories = [categories]
    names = list(dict.fromkeys(categories))  # keep order, drop repeats
    if not names:
        raise ValueError(f"categories is empty; pass None for all, or some of: {', '.join(CATEGORIES)}")
    for name in names:
        category_spec(name)
    return names


