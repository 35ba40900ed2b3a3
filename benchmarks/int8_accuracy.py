"""The accuracy cost of OpenVINO INT8: fp32 (the eager model) against ``openvino-int8`` on trained runs.

For each run folder (a training's ``--out`` with ``best.pt``, trained on a demo category): image
AUROC, pixel AUROC and AU-PRO on the category's test split with both backends, and the max / mean
absolute difference of their anomaly maps. INT8 is calibrated on the run's good training images
(NNCF, up to 32 of them). Writes ``benchmarks/results/int8_accuracy.json`` and prints a Markdown
table (docs/deployment.md).

    python benchmarks/int8_accuracy.py runs/button runs/mesh runs/wood [--data-root data/demo]

Not part of ``make bench``: it needs trained runs (``make run`` trains the demo categories).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import write_result

from memseg_lite.core.checkpoint import load_checkpoint
from memseg_lite.deployment.fast import BACKENDS
from memseg_lite.evaluation.evaluate import compute_metrics, labelled_files, predict_test_files
from memseg_lite.network.model import load_model

METRICS = ("image_auroc", "pixel_auroc", "aupro")


def compare(run: Path, data_root: str | None) -> dict:
    checkpoint = run / "best.pt" if run.is_dir() else run
    payload = load_checkpoint(checkpoint)
    files = labelled_files(payload, data_root)
    model, payload = load_model(checkpoint, "cpu")
    fp32, _ = predict_test_files(model, payload, files, progress=False)
    int8, _ = predict_test_files(model, payload, files, progress=False, backend=BACKENDS["openvino-int8"],
                                 checkpoint=checkpoint)
    row = {"run": run.name, "category": payload.get("train_config", {}).get("category")}
    for name, predictions in (("fp32", fp32), ("int8", int8)):
        metrics = compute_metrics(predictions)
        for key in METRICS:
            row[f"{name}_{key}"] = metrics.get(key)
    difference = np.abs(fp32.maps - int8.maps)
    row["max_abs_map_difference"], row["mean_abs_map_difference"] = float(difference.max()), float(difference.mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    rows = [compare(run, args.data_root) for run in args.runs]
    write_result("int8_accuracy", {"rows": rows})
    print("| category | image AUROC fp32 / INT8 | pixel AUROC fp32 / INT8 | AU-PRO fp32 / INT8 | map diff max / mean |")
    print("|---|---|---|---|---|")
    for row in rows:
        cells = [f"{row[f'fp32_{key}']:.3f} / {row[f'int8_{key}']:.3f}" for key in METRICS]
        print(f"| {row['category']} | {' | '.join(cells)} | "
              f"{row['max_abs_map_difference']:.1e} / {row['mean_abs_map_difference']:.1e} |")


if __name__ == "__main__":
    main()
