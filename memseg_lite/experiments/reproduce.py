"""Train and evaluate every MVTec AD category present, then tabulate against published numbers.

``memseg-lite reproduce --data-root data/mvtec --device cuda`` is the full GPU run. It is
resumable: a category whose ``evaluation/metrics.json`` exists is not trained again, and an
interrupted training continues from its checkpoint (:func:`memseg_lite.experiments.runs.train_and_evaluate`).
Each category's best checkpoint (chosen on validation data) and its last checkpoint are both
evaluated; the table shows them side by side.

Categories in parallel (each category is an independent run, so this scales with the devices):

- ``--jobs N``: N worker processes on this machine, each taking the next unfinished category;
  with GPUs, worker ``j`` uses GPU ``j`` (``N`` at most the number of GPUs); on the CPU the cores
  are shared evenly between the workers;
- under ``torchrun`` (one machine or several, ``--nnodes``/``--rdzv-endpoint``): rank ``r`` of
  ``W`` takes categories ``r, r + W, r + 2W, ...`` on ``cuda:LOCAL_RANK`` (or the CPU); rank 0
  waits for all (a gloo barrier) and writes the table. The output folder must be on a file
  system every machine sees.

Either way one ``results.md`` / ``results.csv`` holds every category.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from memseg_lite.core.io import write_csv_atomic, write_text_atomic
from memseg_lite.core.runtime import auto_device_setting
from memseg_lite.datasets.mvtec import MVTEC_CATEGORIES, list_categories
from memseg_lite.experiments.reference_numbers import REPORTED
from memseg_lite.experiments.runs import (
    LAST_METRICS_FILE,
    METRICS_FILE,
    train_and_evaluate,
)
from memseg_lite.training.config import TrainConfig
from memseg_lite.training.distributed import launched_world, rank_device

METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro")
# A barrier may wait for a whole category's training on the slowest rank.
BARRIER_TIMEOUT = datetime.timedelta(days=7)


def _choose_categories(data_root: Path, categories: list[str] | None) -> list[str]:
    present = list_categories(data_root)
    if categories is None:
        categories = [c for c in MVTEC_CATEGORIES if c in present] or present
    missing = [c for c in categories if c not in present]
    if missing:
        raise FileNotFoundError(
            f"categories {missing} are not in {data_root} (found: {', '.join(present) or 'none'}); "
            "download them with `memseg-lite download mvtec`"
        )
    if not categories:
        raise FileNotFoundError(f"no category folders with train/good in {data_root}")
    return list(categories)


def run_category(data_root: str | os.PathLike, category: str, out_dir: str | os.PathLike, progress: bool = True,
                 **config_overrides) -> str:
    """Train (or resume) and evaluate one category's best and last checkpoints unless done; returns what happened.

    ``"skipped"`` (both were evaluated before), ``"done"``, or ``"interrupted"`` (Ctrl-C /
    SIGTERM: the checkpoint is saved, a later call continues it).
    """
    run_dir = Path(out_dir) / category
    config = TrainConfig(data_root=str(data_root), category=category, out_dir=str(run_dir), **config_overrides)
    if (run_dir / METRICS_FILE).is_file() and (run_dir / LAST_METRICS_FILE).is_file():
        print(f"[{category}] already evaluated, skipping ({run_dir / METRICS_FILE})")
    elif (run_dir / METRICS_FILE).is_file():
        print(f"[{category}] already evaluated (best checkpoint); evaluating the last checkpoint")
    status, _ = train_and_evaluate(config, progress=progress, figures=True)
    return status


# ---- --jobs N: a pool of local worker processes ------------------------------------------------
_WORKER: dict = {}


def use_device(device: str) -> None:
    """Make ``device`` this process's current GPU (``cuda:N``), so that nothing (CUDA context,
    default streams, synchronisation) lands on GPU 0 by default; the CPU needs nothing."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.set_device(torch.device(device))


def _init_worker(devices, threads: int) -> None:
    """Pool initialiser: this worker's device (one GPU each, taken from a queue) and CPU threads."""
    import torch

    _WORKER["device"] = devices.get()
    if _WORKER["device"] == "cpu":
        torch.set_num_threads(threads)
    else:
        use_device(_WORKER["device"])


def _pool_task(data_root: str, category: str, out_dir: str, overrides: dict) -> tuple[str, str]:
    device = _WORKER.get("device")
    options = dict(overrides)
    if device is not None and options.get("device", "auto") in ("auto", "cuda", "cpu"):
        options["device"] = device
    return category, run_category(data_root, category, out_dir, progress=False, **options)


def _worker_devices(jobs: int, requested: str) -> list[str]:
    """One device name per worker: ``cuda:j`` with GPUs (at most one worker per GPU), else ``cpu``."""
    import torch

    if requested == "auto":
        requested = auto_device_setting()  # MEMSEG_DEVICE, when set
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if jobs > count:
            raise ValueError(f"--jobs {jobs} but only {count} GPU(s) are visible; use --jobs {count} or fewer "
                             "(one category per GPU)")
        return [f"cuda:{index}" for index in range(jobs)]
    if requested not in ("auto", "cpu"):
        raise ValueError(f"--jobs with device={requested!r}: use device 'auto', 'cuda' or 'cpu' (each worker "
                         "then takes its own GPU, or a share of the CPU cores)")
    return ["cpu"] * jobs


def _run_pool(data_root: Path, categories: list[str], out: Path, jobs: int, overrides: dict) -> list[str]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    devices = _worker_devices(jobs, overrides.get("device", "auto"))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    for device in devices:
        queue.put(device)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    statuses = []
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                                   initargs=(queue, threads))
    try:
        futures = [
            executor.submit(_pool_task, str(data_root), category, str(out), overrides) for category in categories
        ]
        for future in as_completed(futures):
            category, status = future.result()
            print(f"[{category}] {status}")
            statuses.append(status)
    except KeyboardInterrupt:
        # The workers got the same Ctrl-C: each saves its checkpoint; wait for them, then stop.
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return statuses


# ---- under torchrun: each rank its share --------------------------------------------------------
def _run_share(data_root: Path, categories: list[str], out: Path, progress: bool, overrides: dict) -> list[str]:
    import torch.distributed as dist

    rank, world, local_rank = launched_world()
    options = dict(overrides)
    options["device"] = str(rank_device(options.get("device", "auto"), local_rank))
    use_device(options["device"])
    mine = categories[rank::world]
    print(f"[rank {rank}/{world}] categories {', '.join(mine) or 'none'} on {options['device']}")
    statuses = [run_category(data_root, category, out, progress=progress and rank == 0, **options)
                for category in mine]
    # Everyone waits for the slowest rank, so rank 0 tabulates finished categories only. gloo needs
    # no GPU: the barrier works the same whether the ranks trained on GPUs or CPUs.
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=BARRIER_TIMEOUT)
    # A rank that was interrupted tells the others, so rank 0 does not tabulate half a run.
    import torch

    flag = torch.tensor([1.0 if "interrupted" in statuses else 0.0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    dist.destroy_process_group()
    return statuses + (["interrupted"] if flag.item() > 0 and "interrupted" not in statuses else [])


def reproduce(
    data_root: str | os.PathLike,
    categories: list[str] | None = None,
    out_dir: str | os.PathLike = "runs/reproduce",
    progress: bool = True,
    jobs: int = 1,
    **config_overrides,
) -> list[dict]:
    """Train + evaluate each category (skipping finished ones); write results.md and results.csv.

    ``jobs``: categories trained at the same time in worker processes on this machine. Under
    torchrun (``WORLD_SIZE`` > 1) each rank takes its share instead and rank 0 writes the table
    (the other ranks return an empty list). Raises ``KeyboardInterrupt`` after an interruption
    (checkpoints saved; run it again to continue).
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    data_root, out = Path(data_root), Path(out_dir)
    categories = _choose_categories(data_root, categories)
    TrainConfig(data_root=str(data_root), category=categories[0], **config_overrides)  # bad options fail here
    rank, world, _ = launched_world()
    if world > 1:
        if jobs > 1:
            raise ValueError("--jobs N and torchrun do not combine: under torchrun each rank is one job; "
                             "start N processes per machine with --nproc_per_node N instead")
        statuses = _run_share(data_root, categories, out, progress, config_overrides)
    elif jobs > 1:
        statuses = _run_pool(data_root, categories, out, min(jobs, len(categories)), config_overrides)
    else:
        statuses = []
        for category in categories:
            statuses.append(run_category(data_root, category, out, progress=progress, **config_overrides))
            if statuses[-1] == "interrupted":
                break
    if "interrupted" in statuses:
        raise KeyboardInterrupt
    if rank != 0:
        return []
    rows = [result_row(category, out / category) for category in categories]
    write_results(out, rows)
    return rows


def _percent(metrics: dict | None, key: str) -> float | None:
    value = None if metrics is None else metrics.get(key)
    return None if value is None else 100 * float(value)


def result_row(category: str, run_dir: Path) -> dict:
    """One table row: the best checkpoint's metrics (in %) and, as ``last_*``, the last checkpoint's."""
    best = json.loads((run_dir / METRICS_FILE).read_text())
    last_path = run_dir / LAST_METRICS_FILE
    last = json.loads(last_path.read_text()) if last_path.is_file() else None
    row = {"category": category, **{key: _percent(best, key) for key in METRIC_KEYS}}
    row.update({f"last_{key}": _percent(last, key) for key in METRIC_KEYS})
    row["best_step"] = best.get("training_steps")
    row["last_step"] = None if last is None else last.get("training_steps")
    row["backbone"] = best.get("backbone", "unknown")
    row["textures"] = best.get("textures", "unknown")
    return row


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r.get(key) for r in rows]
    return None if any(v is None for v in values) else sum(values) / len(values)


def write_results(out: Path, rows: list[dict]) -> tuple[Path, Path]:
    """results.csv (per category + mean) and results.md (with the published numbers beside).

    Beside each category's best checkpoint (``image_auroc`` ...) the last checkpoint's numbers
    (``last_image_auroc`` ...; empty where a row has none).
    """
    out.mkdir(parents=True, exist_ok=True)
    keys = (*METRIC_KEYS, *(f"last_{key}" for key in METRIC_KEYS))
    mean = {"category": f"mean ({len(rows)} categories)", **{k: _mean(rows, k) for k in keys}}
    # What stood in for the paper's inputs: a random encoder (no ImageNet weights) or procedural textures (no DTD).
    sources = ("backbone", "textures")
    for name in sources:
        mean[name] = "/".join(sorted({str(r.get(name, "unknown")) for r in rows}))
    table = rows + [mean]
    steps = ("best_step", "last_step")

    def number(value) -> str:
        return "" if value is None else f"{value:.2f}"

    records = [{"category": row["category"], **{k: number(row.get(k)) for k in keys},
                **{k: "" if row.get(k) is None else row[k] for k in steps},
                **{name: row.get(name, "unknown") for name in sources}} for row in table]
    csv_path = write_csv_atomic(out / "results.csv", records, ["category", *keys, *steps, *sources])

    def cell(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    def step_cell(row: dict) -> str:
        best, last = row.get("best_step"), row.get("last_step")
        if best is None and last is None:
            return "-"
        return f"{best if best is not None else '-'} / {last if last is not None else '-'}"

    lines = ["# MemSeg on MVTec AD: this run vs published numbers", "",
             ("Image AUROC, pixel AUROC and AU-PRO: the checkpoint chosen on validation data (held-out good "
              "images with simulated anomalies); last: the model after the last training step."), "",
             ("| category | image AUROC | pixel AUROC | AU-PRO (FPR 0.3) | last: image AUROC | last: pixel AUROC "
              "| last: AU-PRO | steps best / last | encoder | textures |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['category']} | " + " | ".join(cell(r.get(k)) for k in keys)
              + f" | {step_cell(r)} | {r.get('backbone', 'unknown')} | {r.get('textures', 'unknown')} |" for r in table]
    if any(r.get("backbone") == "random" or r.get("textures") == "procedural" for r in rows):
        lines += ["", "**Fallbacks were used**: a random encoder (no ImageNet weights; copy resnet18-f37072fd.pth to "
                  "~/.cache/torch/hub/checkpoints/ or allow the download) and/or procedural textures (no DTD; "
                  "`memseg-lite download dtd`). These numbers are not comparable with the published ones."]
    lines += ["", "## Published (means over 15 categories)", "",
              "| source | image AUROC | pixel AUROC | AU-PRO |", "|---|---|---|---|"]
    lines += [
        f"| {r['source']} | {cell(r['image_auroc'])} | {cell(r['pixel_auroc'])} | {cell(r['aupro'])} |"
        for r in REPORTED
    ]
    lines += ["", "Checkpoints here are selected on validation data made from held-out good training images "
              "with simulated anomalies, never on the test set."]
    md_path = write_text_atomic(out / "results.md", "\n".join(lines) + "\n")
    return md_path, csv_path
