"""Data-parallel training on the CPU: two processes (gloo) against one, at the same global batch.

Measured in one run, on the demo data (``button``), 128 x 128, global batch 8, 10 memory images:

- one process using every core (the baseline: what ``memseg-lite train`` does today);
- one process on one thread (for scale);
- two processes (``launch_training``, the machinery of ``memseg-lite train --nproc 2``), one
  thread each, 4 images each per step; with and without synchronised batch norm.

The time per step is the trainer's own loop time (``TrainResult.seconds``, the same clock in
every case: data, forward, backward, the gradient all-reduce, the final validation) divided by the
steps; process start-up and data loading are excluded and reported separately for the
two-process run. Speed-up = baseline time per step / two-process time per step. On a 2-core CPU
the ideal is about 1 (the same cores either way); the point of the measurement is the cost of the
communication. On GPUs each process has its own device and the expected speed-up is close to N.

Run from the repository root: ``python benchmarks/bench_distributed.py``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

IMAGE_SIZE = 128
BATCH = 8
STEPS = 12


def _config(data_root: Path, out_dir: Path, **overrides):
    from memseg_lite.training.config import TrainConfig

    options = dict(data_root=str(data_root), category="button", out_dir=str(out_dir), image_size=IMAGE_SIZE,
                   batch_size=BATCH, steps=STEPS, memory_size=10, val_images=2, val_every=STEPS,
                   checkpoint_every=STEPS, backbone_weights="none", device="cpu", seed=0)
    options.update(overrides)
    return TrainConfig(**options)


def one_process(data_root: Path, folder: Path, threads: int) -> float:
    import torch

    from memseg_lite.training.trainer import Trainer

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = Trainer(_config(data_root, folder / f"one_{threads}"), progress=False).fit()
    finally:
        torch.set_num_threads(previous)
    return result.seconds / STEPS


def two_processes(data_root: Path, folder: Path, sync_batchnorm: bool) -> tuple[float, float]:
    from memseg_lite.training.distributed import launch_training
    from memseg_lite.training.trainer import Trainer

    started = time.perf_counter()
    summaries = launch_training(Trainer, _config(data_root, folder / f"two_{sync_batchnorm}",
                                                 sync_batchnorm=sync_batchnorm), 2, progress=False, threads=1)
    wall = time.perf_counter() - started
    loop = max(summary["seconds"] for summary in summaries)
    return loop / STEPS, wall - loop


def main() -> None:
    os.environ.setdefault("MEMSEG_OFFLINE", "1")
    import torch
    from _common import write_result

    from memseg_lite.datasets.demo.writer import ensure_demo_data

    data_root = ensure_demo_data(ROOT / "data" / "demo")
    cores = os.cpu_count() or 1
    folder = Path(tempfile.mkdtemp(prefix="bench_distributed_"))
    try:
        baseline = one_process(data_root, folder, threads=torch.get_num_threads())
        single_thread = one_process(data_root, folder, threads=1)
        two, startup = two_processes(data_root, folder, sync_batchnorm=False)
        two_sync, _ = two_processes(data_root, folder, sync_batchnorm=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    write_result("distributed", {
        "image_size": IMAGE_SIZE, "global_batch": BATCH, "steps": STEPS, "cpu_cores": cores,
        "one_process_all_threads_s_per_step (baseline)": round(baseline, 3),
        "one_process_1_thread_s_per_step": round(single_thread, 3),
        "two_processes_1_thread_each_s_per_step": round(two, 3),
        "two_processes_sync_batchnorm_s_per_step": round(two_sync, 3),
        "speedup_2_processes_over_baseline": round(baseline / two, 2),
        "speedup_2_processes_sync_bn_over_baseline": round(baseline / two_sync, 2),
        "speedup_2_processes_over_1_thread": round(single_thread / two, 2),
        "two_process_start_up_s (spawn, import, data, model)": round(startup, 1),
    })


if __name__ == "__main__":
    main()
