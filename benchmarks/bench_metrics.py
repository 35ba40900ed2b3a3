"""Speed and memory of the metrics, against a baseline measured in the same run.

1. AU-PRO on 100 maps of 256 x 256: ``memseg_lite.evaluation.metrics.aupro`` (one sort, binary searches)
   against ``naive_aupro`` (a loop over every distinct threshold). The maps are quantised to a
   few hundred levels so the naive loop is exact and finishes; its cost grows linearly with the
   number of levels, the fast one's does not (a run on unquantised maps is timed too).
2. Pixel AUROC on 300 maps of 256 x 256 (20 million pixels): ``pixel_auroc`` against
   scikit-learn's ``roc_auc_score`` on the flattened pixels: time and peak extra memory
   (tracemalloc, which sees numpy's allocations). AU-PRO's peak memory on the same maps too.

Run from the repository root: ``python benchmarks/bench_metrics.py``.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import time_call, write_result

from memseg_lite.evaluation.metrics import aupro, naive_aupro, pixel_auroc

SIZE = 256
AUPRO_MAPS = 100
AUPRO_LEVELS = 500
AUROC_MAPS = 300


def realistic_maps(count: int, seed: int, levels: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Smooth anomaly maps (float32 [count, S, S] in [0, 1]) and uint8 0/1 masks.

    About 70 % of the images get 1-3 elliptic defects; their maps carry a blurred bump close to
    (not exactly on) each defect, on top of smooth background noise. ``levels`` quantises the maps.
    """
    rng = np.random.default_rng(seed)
    maps = np.empty((count, SIZE, SIZE), dtype=np.float32)
    masks = np.zeros((count, SIZE, SIZE), dtype=np.uint8)
    for index in range(count):
        noise = cv2.GaussianBlur(rng.standard_normal((SIZE, SIZE)).astype(np.float32), (0, 0), 6)
        noise /= noise.std() + 1e-8
        bump = np.zeros((SIZE, SIZE), dtype=np.float32)
        if rng.random() < 0.7:
            for _ in range(rng.integers(1, 4)):
                center = tuple(int(v) for v in rng.integers(20, SIZE - 20, 2))
                axes = tuple(int(v) for v in rng.integers(2, 25, 2))
                cv2.ellipse(masks[index], center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
                blob = np.zeros_like(bump)
                shifted = (center[0] + int(rng.integers(-5, 6)), center[1])
                cv2.ellipse(blob, shifted, axes, 0, 0, 360, 1.0, -1)
                bump += cv2.GaussianBlur(blob, (0, 0), 4) * rng.uniform(1, 4)
        maps[index] = 0.3 * noise + bump
    maps -= maps.min()
    maps /= maps.max()
    if levels is not None:
        maps = np.round(maps * (levels - 1)) / (levels - 1)
    return maps, masks


def peak_extra_bytes(function: Callable[[], object]) -> int:
    """Peak memory allocated while ``function()`` runs, on top of what was allocated before."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - before


def compare_aupro() -> dict:
    """1. AU-PRO: package against the naive reference, same quantised maps."""
    maps, masks = realistic_maps(AUPRO_MAPS, seed=0, levels=AUPRO_LEVELS)
    fast_value = aupro(maps, masks)
    fast_seconds = time_call(lambda: aupro(maps, masks), repeat=3)
    started = time.perf_counter()
    naive_value = naive_aupro(maps, masks)
    naive_seconds = time.perf_counter() - started
    difference = abs(fast_value - naive_value)
    continuous_maps, continuous_masks = realistic_maps(AUPRO_MAPS, seed=0, levels=None)
    continuous_seconds = time_call(lambda: aupro(continuous_maps, continuous_masks), repeat=3)
    return {
        "maps": f"{AUPRO_MAPS} x {SIZE} x {SIZE}, {AUPRO_LEVELS} score levels",
        "regions": int(sum(cv2.connectedComponents(m, connectivity=8)[0] - 1 for m in masks)),
        "value": round(fast_value, 6),
        "package_seconds": round(fast_seconds, 4),
        "naive_seconds": round(naive_seconds, 3),
        "speedup": round(naive_seconds / fast_seconds, 1),
        "abs_difference": float(difference),
        "difference_below_1e-6": bool(difference < 1e-6),
        "package_seconds_unquantised_maps": round(continuous_seconds, 4),
    }


def compare_pixel_auroc() -> dict:
    """2. Pixel AUROC: package against scikit-learn, same continuous maps."""
    from sklearn.metrics import roc_auc_score

    maps, masks = realistic_maps(AUROC_MAPS, seed=1, levels=None)
    flat_maps, flat_masks = maps.reshape(-1), masks.reshape(-1)  # views, no copies
    ours = pixel_auroc(maps, masks)
    theirs = roc_auc_score(flat_masks, flat_maps)
    ours_seconds = time_call(lambda: pixel_auroc(maps, masks), repeat=3)
    theirs_seconds = time_call(lambda: roc_auc_score(flat_masks, flat_maps), repeat=2, warmup=0)
    ours_bytes = peak_extra_bytes(lambda: pixel_auroc(maps, masks))
    theirs_bytes = peak_extra_bytes(lambda: roc_auc_score(flat_masks, flat_maps))
    aupro_bytes = peak_extra_bytes(lambda: aupro(maps, masks))
    pixels = maps.size
    return {
        "maps": f"{AUROC_MAPS} x {SIZE} x {SIZE} float32 ({pixels / 1e6:.1f} M pixels)",
        "value": round(ours, 6),
        "abs_difference_to_sklearn": float(abs(ours - theirs)),
        "package_seconds": round(ours_seconds, 3),
        "sklearn_seconds": round(theirs_seconds, 3),
        "speedup": round(theirs_seconds / ours_seconds, 1),
        "package_peak_extra_MiB": round(ours_bytes / 2**20, 1),
        "sklearn_peak_extra_MiB": round(theirs_bytes / 2**20, 1),
        "package_bytes_per_pixel": round(ours_bytes / pixels, 2),
        "sklearn_bytes_per_pixel": round(theirs_bytes / pixels, 2),
        "memory_ratio": round(theirs_bytes / ours_bytes, 1),
        "aupro_bytes_per_pixel_same_maps": round(aupro_bytes / pixels, 2),
    }


def main() -> dict:
    # One function per comparison, so the AU-PRO maps are freed when compare_aupro returns, before the
    # AUROC comparison allocates its 20 million pixels, and no timing lambda outlives the arrays it reads.
    result = {"aupro": compare_aupro(), "pixel_auroc": compare_pixel_auroc()}
    write_result("metrics", result)
    return result


if __name__ == "__main__":
    main()
