"""Execute the whole workbook in order with papermill and write a results summary (``make run``).

    python scripts/run_workbook.py --profile demo --out outputs/workbook

Every notebook runs on a fresh kernel with ``MEMSEG_PROFILE`` set, in ``notebooks/`` as working
folder; the executed copies land in ``--out``. The training and evaluation notebooks get
``run_dir`` pointed inside ``--out``, so their checkpoints, metrics and figures are kept with the
executed notebooks. At the end ``summary.md`` gathers the metrics table and
``anomaly_maps.png`` the evaluation notebook's figure of anomaly maps.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "python3"


def notebook_paths(selection: list[str] | None) -> list[Path]:
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if selection:
        paths = [p for p in paths if any(p.name.startswith(s) or p.stem == s for s in selection)]
        if not paths:
            raise SystemExit(f"no notebook in {NOTEBOOKS} matches {selection}")
    return paths


@contextlib.contextmanager
def stderr_to(path: Path):
    """Send this process's stderr (file descriptor 2, inherited by the kernels) to ``path``.

    Kernels write start-up chatter there (e.g. ipykernel's warning about unencrypted local TCP);
    it goes to a log file next to the executed notebook instead of the console.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def declared_parameters(path: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(path)))


def run(
    profile: str, out: Path, selection: list[str] | None, category: str | None, run_times: Path | None = None
) -> int:
    import papermill

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "runs"
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    os.environ["MEMSEG_PROFILE"] = profile
    rows = []
    started = time.perf_counter()
    print(f"memseg-lite workbook: profile={profile}, writing to {out}")
    for path in notebook_paths(selection):
        declared = declared_parameters(path)
        parameters = {}
        if "run_dir" in declared:
            parameters["run_dir"] = str(run_dir)
        if category and "category" in declared:
            parameters["category"] = category
        target = out / path.name
        print(f"- {path.name} ...", end=" ", flush=True)
        tick = time.perf_counter()
        log = logs / f"{path.stem}.stderr.txt"
        try:
            with stderr_to(log):
                papermill.execute_notebook(
                    str(path),
                    str(target),
                    parameters=parameters,
                    kernel_name=KERNEL,
                    cwd=str(NOTEBOOKS),
                    progress_bar=False,
                    log_output=False,
                )
        except Exception as error:  # papermill raises PapermillExecutionError with the cell's traceback
            seconds = time.perf_counter() - tick
            print(f"FAILED after {seconds:.0f} s")
            print(f"\n{error}\n\nThe partly executed notebook is {target}; kernel messages in {log}", file=sys.stderr)
            rows.append((path.name, seconds, "failed"))
            write_summary(out, run_dir, rows, profile, time.perf_counter() - started)
            return 1
        seconds = time.perf_counter() - tick
        print(f"ok ({seconds:.0f} s)")
        rows.append((path.name, seconds, "ok"))
    summary = write_summary(out, run_dir, rows, profile, time.perf_counter() - started)
    if run_times is not None:
        write_run_times(run_times, rows, profile, time.perf_counter() - started)
        print(f"  run times: {run_times}")
    print(f"\nDone in {(time.perf_counter() - started) / 60:.1f} min. Results: {out}")
    print(f"  summary:  {summary}")
    if (out / "anomaly_maps.png").is_file():
        print(f"  figure:   {out / 'anomaly_maps.png'}")
    return 0


def write_summary(out: Path, run_dir: Path, rows: list, profile: str, seconds: float) -> Path:
    """summary.md: the notebooks' status and time, and every evaluation's metrics."""
    lines = [
        "# memseg-lite workbook run",
        "",
        f"Profile `{profile}`, total {seconds / 60:.1f} min.",
        "",
        "| notebook | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {status} | {sec:.0f} |" for name, sec, status in rows]
    metrics_files = sorted(run_dir.glob("*/evaluation/metrics.json")) if run_dir.is_dir() else []
    if metrics_files:
        lines += [
            "",
            "## Test-split metrics (demo data)",
            "",
            "| category | image AUROC | pixel AUROC | AU-PRO | test images | training steps | backbone |",
            "|---|---|---|---|---|---|---|",
        ]
        for path in metrics_files:
            metrics = json.loads(path.read_text())
            lines.append(
                f"| {metrics.get('category', path.parents[1].name)} | {metrics['image_auroc']:.4f} | "
                f"{metrics['pixel_auroc']:.4f} | {metrics['aupro']:.4f} | {metrics.get('n_images', '')} | "
                f"{metrics.get('training_steps', '')} | {metrics.get('backbone', '')} |"
            )
        lines += [
            "",
            "For comparison, MemSeg on MVTec AD (paper, mean of 15 categories): image AUROC 0.9956, "
            "pixel AUROC 0.9884. The demo data is procedural and the demo run is CPU-sized, so the "
            "numbers measure this implementation on this data, not a reproduction of the paper.",
        ]
        figure = metrics_files[0].parent / "anomaly_maps.png"
        if figure.is_file():
            shutil.copyfile(figure, out / "anomaly_maps.png")
            lines += ["", "![anomaly maps](anomaly_maps.png)"]
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_run_times(path: Path, rows: list, profile: str, seconds: float) -> Path:
    """The run-times table the docs link to (docs/run-times.md): one finished run's seconds per notebook."""
    when = time.strftime("%Y-%m-%d", time.gmtime())
    lines = [
        "# Run times",
        "",
        f"Written by `scripts/run_workbook.py` (`make run`) on {when}: profile `{profile}`, "
        f"{os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}. "
        "Do not edit by hand; a finished `make run` rewrites it.",
        "",
        "| notebook | seconds |",
        "|---|---|",
    ]
    lines += [f"| `{Path(name).stem}` | {sec:.0f} |" for name, sec, _status in rows]
    lines += [f"| whole run (notebooks, without the docs site) | {seconds:.0f} ({seconds / 60:.1f} min) |"]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("\n".join(lines) + "\n")
    temporary.replace(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="demo", choices=("full", "demo", "smoke"))
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "workbook")
    parser.add_argument("--only", nargs="+", help="run only these notebooks (prefixes like 08 09)")
    parser.add_argument("--category", help="override the training/evaluation category")
    parser.add_argument(
        "--run-times", type=Path, help="also write the run-times table here (make run: docs/run-times.md)"
    )
    args = parser.parse_args()
    return run(args.profile, args.out, args.only, args.category, args.run_times)


if __name__ == "__main__":
    sys.exit(main())
