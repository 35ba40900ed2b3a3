"""One run of a study: train (or resume), then evaluate its best and its last checkpoint on the test split.

:func:`train_and_evaluate` is what ``reproduce`` (one run per category) and ``ablate`` (one run per
variant and seed) share. In the run folder it writes:

- ``evaluation/``       the evaluation of ``best.pt`` (the checkpoint chosen on validation data),
  ``metrics.json`` last: it marks the run as finished;
- ``evaluation/last/``  the evaluation of ``checkpoint.pt`` (the model after the last step).
  When the best checkpoint *is* the last step, the model is evaluated once and
  ``last/metrics.json`` says so (``"same_as_best": true``).

Resumable: a run with both ``metrics.json`` files is skipped; a run evaluated before the last
checkpoint was (``evaluation/metrics.json`` only) gets ``evaluation/last/`` and nothing else; a run
with a checkpoint is resumed; a run folder without one (killed before its first checkpoint) is
started over. A run made with other settings than asked for (other steps, image size, ...) is an
error. Options that only decide which checkpoint is called best (:data:`SELECTION_OPTIONS`) are
the exception: an existing run keeps its own, so it is judged by the rules it was trained under.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from memseg_lite.core.checkpoint import load_checkpoint
from memseg_lite.core.io import write_text_atomic
from memseg_lite.training.config import TrainConfig

METRICS_FILE = Path("evaluation") / "metrics.json"
LAST_METRICS_FILE = Path("evaluation") / "last" / "metrics.json"
#: Options that choose the validation set and the selection score, not the trained weights.
SELECTION_OPTIONS = ("val_anomalies_per_image", "val_recipe", "selection_metric")


def run_settings(config: TrainConfig) -> TrainConfig:
    """``config`` checked against the run already in ``config.out_dir`` (if any).

    Raises ``ValueError`` naming the options that differ and would change training; returns the
    config with the run's own :data:`SELECTION_OPTIONS` (printed when they differ from ``config``).
    """
    from memseg_lite.training.trainer import CONFIG_NAME

    saved_path = Path(config.out_dir) / CONFIG_NAME
    if not saved_path.is_file():
        return config
    saved = TrainConfig.load(saved_path)
    changed = config.changes_blocking_resume(saved)
    blocking = [name for name in changed if name not in SELECTION_OPTIONS]
    if blocking:
        raise ValueError(
            f"the run in {config.out_dir} was made with other settings ({', '.join(blocking)} differ); use another "
            "--out for these settings, or delete that run folder to redo it"
        )
    kept = {name: getattr(saved, name) for name in changed}
    if kept:
        print(f"[{config.out_dir}] keeps its own selection settings ("
              + ", ".join(f"{name}={value!r}" for name, value in kept.items()) + ")")
        config = dataclasses.replace(config, **kept)
    return config


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _same_as_best(best: dict, checkpoint: Path) -> dict:
    return {**best, "checkpoint": str(checkpoint), "same_as_best": True}


def _write_metrics(path: Path, metrics: dict) -> None:
    write_text_atomic(path, json.dumps(metrics, indent=2) + "\n")


@dataclasses.dataclass(frozen=True)
class CheckpointsToEvaluate:
    """What ``memseg-lite evaluate --checkpoint PATH [--also-last]`` evaluates."""

    run_dir: Path  # the run folder (PATH itself, or the folder holding the checkpoint file)
    best: Path  # evaluated into OUT
    last: Path | None  # also evaluated into OUT/last, side by side; None: only ``best``
    note: str | None = None  # why fewer checkpoints than asked are evaluated (printed to stderr)


def checkpoints_to_evaluate(given: str | os.PathLike, also_last: bool = False) -> CheckpointsToEvaluate:
    """A run folder means its ``best.pt`` and ``checkpoint.pt`` (the last model); a checkpoint file means
    itself, plus the ``checkpoint.pt`` beside it with ``also_last``. Clear errors for what is missing."""
    from memseg_lite.training.trainer import BEST_NAME, CHECKPOINT_NAME

    given = Path(given)
    if given.is_dir():
        best, last = given / BEST_NAME, given / CHECKPOINT_NAME
        if not best.is_file() and not last.is_file():
            raise FileNotFoundError(f"--checkpoint {given} is a folder without {BEST_NAME} or {CHECKPOINT_NAME}; "
                                    "pass a run folder (a training's --out) or a checkpoint file")
        if not best.is_file():
            return CheckpointsToEvaluate(given, last, None, f"{given} has no {BEST_NAME} yet (stopped before its "
                                                            f"first validation): evaluating {CHECKPOINT_NAME} only")
        return CheckpointsToEvaluate(given, best, last if last.is_file() else None)
    if not also_last:
        return CheckpointsToEvaluate(given.parent, given, None)
    last = given.parent / CHECKPOINT_NAME
    if not last.is_file():
        raise FileNotFoundError(f"--also-last: there is no {last} beside --checkpoint {given}")
    if given.is_file() and last.resolve() == given.resolve():
        return CheckpointsToEvaluate(given.parent, given, None)  # --checkpoint is the last model itself
    return CheckpointsToEvaluate(given.parent, given, last)


def evaluate_best_and_last(
    best_checkpoint: Path, last_checkpoint: Path, out_dir: Path, evaluate, progress: bool = True
) -> tuple[dict, dict]:
    """Evaluate ``best_checkpoint`` into ``out_dir`` and ``last_checkpoint`` into ``out_dir/last``.

    ``evaluate(checkpoint, folder) -> metrics`` does one evaluation (and writes its files in
    ``folder``). When both checkpoints hold the same step (the best model is the last one) it runs
    once, ``last/metrics.json`` says ``"same_as_best": true`` and ``metrics.json`` ``"same_as_last":
    true``. ``out_dir/metrics.json`` is written last, so it marks both evaluations as done.
    """
    out_dir, last_dir = Path(out_dir), Path(out_dir) / "last"
    best_step = int(load_checkpoint(best_checkpoint)["step"])
    last_step = int(load_checkpoint(last_checkpoint)["step"])
    if best_step != last_step:
        if progress:
            print(f"evaluating the last checkpoint (step {last_step}) and the best one (step {best_step})")
        last = {**evaluate(last_checkpoint, last_dir), "same_as_best": False}
        _write_metrics(last_dir / "metrics.json", last)
        return evaluate(best_checkpoint, out_dir), last
    print(f"the best checkpoint is the last step ({last_step}): one model, evaluated once for both")
    # Into last/ first, then the best's files move up: out_dir/metrics.json is written last.
    best = {**evaluate(best_checkpoint, last_dir), "same_as_last": True}
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in last_dir.iterdir():
        if path.suffix == ".png":  # figures once, with the best
            os.replace(path, out_dir / path.name)
    if (last_dir / "scores.csv").is_file():
        shutil.copyfile(last_dir / "scores.csv", out_dir / "scores.csv")
    last = _same_as_best(best, last_checkpoint)
    last.pop("same_as_last")
    _write_metrics(last_dir / "metrics.json", last)
    _write_metrics(out_dir / "metrics.json", best)
    return best, last


def best_vs_last_table(best: dict, last: dict) -> str:
    """A Markdown table of the best and the last checkpoint's test metrics, side by side."""
    rows = (("image AUROC", "image_auroc"), ("pixel AUROC", "pixel_auroc"), ("AU-PRO (FPR 0.3)", "aupro"),
            ("image precision at threshold", "image_precision"), ("image recall at threshold", "image_recall"),
            ("image F1 at threshold", "image_f1"), ("pixel F1 at threshold", "pixel_f1"))

    def number(metrics: dict, key: str) -> str:
        return "n/a" if metrics.get(key) is None else f"{metrics[key]:.4f}"

    same = " (the same model)" if last.get("same_as_best") else ""
    header = (f"| {best.get('category', 'metric')} | best (step {best.get('training_steps')}) | "
              f"last (step {last.get('training_steps')}){same} |")
    lines = [header, "|---|---|---|"]
    lines += [f"| {label} | {number(best, key)} | {number(last, key)} |" for label, key in rows
              if best.get(key) is not None or last.get(key) is not None]
    lines.append(f"| test images | {best.get('n_images')} | {last.get('n_images')} |")
    return "\n".join(lines)


def _evaluate(run_dir: Path, config: TrainConfig, figures: bool, progress: bool) -> tuple[dict, dict]:
    """Evaluate what is missing of best and last; returns their metrics."""
    from memseg_lite.evaluation.evaluate import evaluate_checkpoint
    from memseg_lite.training.trainer import BEST_NAME, CHECKPOINT_NAME

    def evaluate(checkpoint: Path, folder: Path) -> dict:
        return evaluate_checkpoint(checkpoint, config.data_root, config.category, folder, device=config.device,
                                   figures=figures, progress=progress)

    best_path, last_path = run_dir / METRICS_FILE, run_dir / LAST_METRICS_FILE
    best_checkpoint, last_checkpoint = run_dir / BEST_NAME, run_dir / CHECKPOINT_NAME
    if not best_path.is_file():
        return evaluate_best_and_last(best_checkpoint, last_checkpoint, best_path.parent, evaluate, progress)
    # Evaluated before the last checkpoint was (an older run): add the last one only.
    best = _read(best_path)
    if int(load_checkpoint(best_checkpoint)["step"]) == int(load_checkpoint(last_checkpoint)["step"]):
        last = _same_as_best(best, last_checkpoint)
    else:
        last = {**evaluate(last_checkpoint, last_path.parent), "same_as_best": False}
    _write_metrics(last_path, last)
    return best, last


def train_and_evaluate(config: TrainConfig, progress: bool = True, figures: bool = False) -> tuple[str, dict]:
    """Train (or resume) the run ``config.out_dir`` unless it is finished, then evaluate best and last.

    Returns ``(status, {"best": metrics, "last": metrics})``: status ``"skipped"`` (both were
    evaluated before), ``"done"``, or ``"interrupted"`` (Ctrl-C / SIGTERM: the checkpoint is saved,
    both metrics are ``None``; a later call continues).
    """
    from memseg_lite.training.trainer import CHECKPOINT_NAME, train

    config = run_settings(config)
    run_dir = Path(config.out_dir)
    best_path, last_path = run_dir / METRICS_FILE, run_dir / LAST_METRICS_FILE
    if best_path.is_file() and last_path.is_file():
        return "skipped", {"best": _read(best_path), "last": _read(last_path)}
    checkpoint = run_dir / CHECKPOINT_NAME
    started = checkpoint.is_file()
    finished = started and int(load_checkpoint(checkpoint)["step"]) >= config.steps
    if not finished and not best_path.is_file():
        if progress:
            print(f"[{config.category} {run_dir}] {'resuming' if started else 'training'} {config.steps} steps "
                  f"on {config.device}")
        # Killed before its first checkpoint, a run left files but nothing to resume: start it over.
        result = train(config, resume=started, restart=not started, progress=progress)
        if result.interrupted:
            return "interrupted", {"best": None, "last": None}
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{run_dir} has an evaluation but no {CHECKPOINT_NAME} (the last model) to "
                                "evaluate; restore it, or delete the run folder to redo the run")
    best, last = _evaluate(run_dir, config, figures, progress)
    return "done", {"best": best, "last": last}
