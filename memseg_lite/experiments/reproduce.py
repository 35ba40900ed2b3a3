"""Train and evaluate every MVTec AD category present, then tabulate against published numbers.

``memseg-lite reproduce --data-root data/mvtec --device cuda`` is the full GPU run. It is
resumable: a category whose ``evaluation/metrics.json`` exists is skipped, and an interrupted
training continues from its checkpoint.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from memseg_lite.core.checkpoint import load_checkpoint
from memseg_lite.core.io import atomic_output, write_text_atomic
from memseg_lite.datasets.mvtec import MVTEC_CATEGORIES, list_categories
from memseg_lite.experiments.reference_numbers import REPORTED
from memseg_lite.training.config import TrainConfig


def reproduce(
    data_root: str | os.PathLike,
    categories: list[str] | None = None,
    out_dir: str | os.PathLike = "runs/reproduce",
    progress: bool = True,
    **config_overrides,
) -> list[dict]:
    """Train + evaluate each category (skipping finished ones); write results.md and results.csv."""
    from memseg_lite.evaluation.evaluate import evaluate_checkpoint
    from memseg_lite.training.trainer import BEST_NAME, CHECKPOINT_NAME, train

    data_root, out = Path(data_root), Path(out_dir)
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

    rows = []
    for category in categories:
        run_dir = out / category
        metrics_path = run_dir / "evaluation" / "metrics.json"
        if metrics_path.is_file():
            print(f"[{category}] already evaluated, skipping ({metrics_path})")
        else:
            config = TrainConfig(data_root=str(data_root), category=category, out_dir=str(run_dir), **config_overrides)
            started = (run_dir / CHECKPOINT_NAME).is_file()
            finished = started and int(load_checkpoint(run_dir / CHECKPOINT_NAME)["step"]) >= config.steps
            if not finished:
                print(f"[{category}] {'resuming' if started else 'training'} {config.steps} steps on {config.device}")
                result = train(config, resume=started, progress=progress)
                if result.interrupted:
                    raise KeyboardInterrupt
            print(f"[{category}] evaluating")
            evaluate_checkpoint(run_dir / BEST_NAME, data_root, category, run_dir / "evaluation",
                                device=config.device, progress=progress)
        metrics = json.loads(metrics_path.read_text())
        rows.append({
            "category": category,
            "image_auroc": 100 * metrics["image_auroc"],
            "pixel_auroc": 100 * metrics["pixel_auroc"],
            "aupro": 100 * metrics["aupro"],
        })
    write_results(out, rows)
    return rows


def write_results(out: Path, rows: list[dict]) -> tuple[Path, Path]:
    """results.csv (per category + mean) and results.md (with the published numbers beside)."""
    out.mkdir(parents=True, exist_ok=True)
    keys = ("image_auroc", "pixel_auroc", "aupro")
    mean = {"category": f"mean ({len(rows)} categories)", **{k: sum(r[k] for r in rows) / len(rows) for k in keys}}
    table = rows + [mean]
    csv_path = out / "results.csv"
    with atomic_output(csv_path) as temporary, temporary.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["category", *keys])
        writer.writeheader()
        for row in table:
            writer.writerow({"category": row["category"], **{k: f"{row[k]:.2f}" for k in keys}})

    def cell(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = ["# MemSeg on MVTec AD: this run vs published numbers", "",
             "| category | image AUROC | pixel AUROC | AU-PRO (FPR 0.3) |", "|---|---|---|---|"]
    lines += [f"| {r['category']} | {cell(r['image_auroc'])} | {cell(r['pixel_auroc'])} | {cell(r['aupro'])} |" for r in table]
    lines += ["", "## Published (means over 15 categories)", "",
              "| source | image AUROC | pixel AUROC | AU-PRO |", "|---|---|---|---|"]
    lines += [f"| {r['source']} | {cell(r['image_auroc'])} | {cell(r['pixel_auroc'])} | {cell(r['aupro'])} |" for r in REPORTED]
    lines += ["", "Checkpoints here are selected on validation data made from held-out good training images "
              "with simulated anomalies, never on the test set."]
    md_path = write_text_atomic(out / "results.md", "\n".join(lines) + "\n")
    return md_path, csv_path
