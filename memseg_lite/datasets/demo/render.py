"""Rendering one good image, or one sample with its defect, its mask and its clean twin."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memseg_lite.core.runtime import check_rng
from memseg_lite.datasets.demo.catalogue import (
    DemoSample,
    as_seed_sequence,
    category_spec,
    check_size,
    child_seed,
)
from memseg_lite.datasets.demo.defects import add_defect
from memseg_lite.datasets.demo.scenes import SCENES, finish


def render_good(category: str, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Render one defect-free image of ``category``: uint8 ``size x size x 3`` (RGB), or ``size x size`` (grey)."""
    spec = category_spec(category)
    size = check_size(size)
    check_rng(rng)
    scene = SCENES[spec.name](rng, size)
    return finish(scene.albedo, scene)


def render_sample(
    category: str,
    size: int,
    seed: int | Sequence[int] | np.random.SeedSequence,
    defect: str | None = None,
) -> DemoSample:
    """Render one sample with its ground truth: the image, its defect mask and the clean image.

    The clean image comes from the first child of ``seed`` and equals
    ``render_good(category, np.random.default_rng(child_0), size)``; the defect is drawn from the
    second child, so the same seed gives the same product with or without a defect.
    ``defect=None`` gives a good sample (``image == clean``, empty mask).
    """
    spec = category_spec(category)
    size = check_size(size)
    if defect is not None and defect not in spec.defects:
        raise ValueError(f"unknown defect {defect!r} for category {category!r}; its defects: {', '.join(spec.defects)}")
    sequence = as_seed_sequence(seed)
    scene = SCENES[spec.name](np.random.default_rng(child_seed(sequence, 0)), size)
    clean = finish(scene.albedo, scene)
    if defect is None:
        return DemoSample(image=clean, mask=np.zeros((size, size), bool), clean=clean, category=category, defect=None)
    albedo, mask = add_defect(spec.name, defect, scene, np.random.default_rng(child_seed(sequence, 1)), size)
    return DemoSample(image=finish(albedo, scene), mask=mask, clean=clean, category=category, defect=defect)


