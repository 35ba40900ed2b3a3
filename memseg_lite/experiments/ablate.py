"""What each part of MemSeg buys: train named variants of the network and the simulation, table them.

``memseg-lite ablate --data-root data/demo --category button --variants full,no_memory --seeds 0,1 --out DIR``
trains every variant once per seed into ``DIR/<variant>/seed<k>``, evaluates each run's best
checkpoint (chosen on validation data) and its last checkpoint on the test split and writes
``DIR/results.csv`` and ``DIR/results.md``: image AUROC, pixel AUROC and AU-PRO per variant, for
the best and (``last_*``) the last checkpoint, the mean and the spread (sample standard deviation,
and min-max) over the seeds.

Resumable (:func:`memseg_lite.experiments.runs.train_and_evaluate`): a run whose evaluations exist
is skipped; a run with a checkpoint is resumed; a run folder without one (killed before its first
checkpoint) is started over. A run whose saved settings differ from what its variant asks for now
(other steps, image size, ...) is an error: use another ``--out`` for other settings.

The variants (``experiments.variants.VARIANTS``) change one thing against ``full`` (the method as the paper
describes it; the defaults of :class:`memseg_lite.training.config.TrainConfig`):

=================  ==============================================================================
``full``           everything on
``no_memory``      no memory bank and no difference information: ``CI = II``; the spatial
                   attention has nothing to come from, its maps are all ones
``no_attention``   spatial attention maps all ones (MSFF output unweighted)
``no_msff``        a 1x1 convolution per level instead of MSFF (same channel counts)
``texture_only``   every simulated anomaly is a texture anomaly (``p_texture = 1``)
``structure_only`` every simulated anomaly is a structure anomaly (``p_texture = 0``)
``no_foreground``  no foreground mask: anomalies land anywhere (``foreground = "none"``)
``avgpool3``       the authors' code's 3x3 feature smoothing before the memory comparison
``authors_code``   the authors' released code's settings for the category (``training.presets.authors_code_options``)
=================  ==============================================================================

A variant's settings win over the common options given to :func:`ablate` (``steps``,
``image_size``, ... are common; a variant never sets those).

The paper's ablation numbers are NOT in the table: the study's figures could not be checked
against the paper's text while writing this module, and a wrong reference is worse than none.
Compare with the ablation tables of the paper (Yang et al. 2022, arXiv 2205.00908, section 4)
by hand.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from memseg_lite.core.io import write_csv_atomic, write_text_atomic
from memseg_lite.experiments.runs import train_and_evaluate
from memseg_lite.experiments.variants import COMMON_ONLY, DEFAULT_VARIANTS, variant_options
from memseg_lite.training.config import TrainConfig

METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro")
#: The table's columns: the best checkpoint's metrics, then the last checkpoint's.
COLUMNS = (*METRIC_KEYS, *(f"last_{key}" for key in METRIC_KEYS))

def parse_list(text: str | Sequence | None, name: str, cast=str) -> list:
    """``"a,b,c"`` (or a sequence) as a list, each item cast; empty items and repeats are errors."""
    if text is None:
        return []
    items = [part.strip() for part in text.split(",")] if isinstance(text, str) else list(text)
    if any(item == "" for item in items) or not items:
        raise ValueError(f"{name}: expected a comma-separated list such as 'a,b', got {text!r}")
    try:
        values = [cast(item) for item in items]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: every item must be a {cast.__name__}, got {text!r}") from None
    if len(set(values)) != len(values):
        raise ValueError(f"{name}: items repeat in {text!r}")
    return values


def run_dir_for(out_dir: str | os.PathLike, variant: str, seed: int) -> Path:
    return Path(out_dir) / variant / f"seed{seed}"


def run_variant(config: TrainConfig, progress: bool = True, figures: bool = False) -> tuple[str, dict | None]:
    """Train (or resume) and evaluate one run unless it is finished
    (:func:`memseg_lite.experiments.runs.train_and_evaluate`).

    Returns ``(status, {"best": metrics, "last": metrics})``: status ``"skipped"`` (evaluated
    before), ``"done"`` or ``"interrupted"`` (both metrics ``None``; run again to continue).
    """
    return train_and_evaluate(config, progress=progress, figures=figures)


def _spread(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "std": std, "min": min(values), "max": max(values)}


def summarise(runs: dict[str, dict[int, dict]], last: dict[str, dict[int, dict]] | None = None) -> list[dict]:
    """One row per variant: per metric (in %) the mean, sample std (``None`` for one seed), min and max.

    ``runs``: variant -> seed -> the best checkpoint's metrics (keys ``image_auroc`` ...);
    ``last``: the same for the last checkpoint (keys ``last_image_auroc`` ... in the rows; their
    spreads are all ``None`` without it).
    """
    rows = []
    for variant, per_seed in runs.items():
        row: dict = {"variant": variant, "seeds": sorted(per_seed)}
        last_per_seed = (last or {}).get(variant, {})
        for key in METRIC_KEYS:
            values = [100.0 * float(m[key]) for m in per_seed.values() if m.get(key) is not None]
            row[key] = _spread(values)
            last_values = [100.0 * float(m[key]) for m in last_per_seed.values() if m and m.get(key) is not None]
            row[f"last_{key}"] = _spread(last_values)
        rows.append(row)
    return rows


#: The first line of the results.md ablate writes: only a file carrying it (or an older ablate
#: table) is replaced; a results.md of the user's is never overwritten.
RESULTS_MARKER = "<!-- written by memseg-lite ablate: replaced on every run -->"
RESULTS_CSV_HEADER = "variant,seeds,"


def _written_by_ablate(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    if path.suffix == ".csv":
        return text.startswith(RESULTS_CSV_HEADER)
    older = text.startswith("# Ablation on ") and "| variant | seeds |" in text  # before the marker line
    return text.startswith(RESULTS_MARKER) or older


def check_results_replaceable(out: Path) -> None:
    """Refuse, before anything is trained, a ``results.md`` / ``results.csv`` in ``out`` that ablate did not write."""
    for name in ("results.md", "results.csv"):
        path = out / name
        if path.exists() and (not path.is_file() or not _written_by_ablate(path)):
            raise FileExistsError(
                f"{path} was not written by memseg-lite ablate, which writes its table there; nothing was trained. "
                "Move or rename that file, or choose another --out"
            )


def write_results(out: Path, rows: list[dict], category: str, description: str = "") -> tuple[Path, Path]:
    """``results.csv`` and ``results.md`` (atomic writes; files ablate did not write are refused)."""
    check_results_replaceable(out)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["variant", "seeds"] + [f"{key}_{stat}" for key in COLUMNS for stat in ("mean", "std", "min", "max")]

    def number(value) -> str:
        return "" if value is None else f"{value:.2f}"

    records = []
    for row in rows:
        record = {"variant": row["variant"], "seeds": " ".join(map(str, row["seeds"]))}
        for key in COLUMNS:
            spread = row.get(key) or _spread([])
            for stat in ("mean", "std", "min", "max"):
                record[f"{key}_{stat}"] = number(spread[stat])
        records.append(record)
    csv_path = write_csv_atomic(out / "results.csv", records, fields)

    def cell(spread: dict | None) -> str:
        if spread is None or spread["mean"] is None:
            return "-"
        if spread["std"] is None:
            return f"{spread['mean']:.2f}"
        return f"{spread['mean']:.2f} ± {spread['std']:.2f} ({spread['min']:.2f}-{spread['max']:.2f})"

    lines = [RESULTS_MARKER, f"# Ablation on {category}", ""]
    if description:
        lines += [description, ""]
    lines += [
        "| variant | seeds | checkpoint | image AUROC | pixel AUROC | AU-PRO (FPR 0.3) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | {len(r['seeds'])} | best | {cell(r['image_auroc'])} | "
                     f"{cell(r['pixel_auroc'])} | {cell(r['aupro'])} |")
        lines.append(f"| {r['variant']} | {len(r['seeds'])} | last | {cell(r.get('last_image_auroc'))} | "
                     f"{cell(r.get('last_pixel_auroc'))} | {cell(r.get('last_aupro'))} |")
    lines += [
        "",
        ("Best: the checkpoint chosen on validation data (held-out good images with simulated anomalies); "
         "last: the model after the last training step."),
        "",
        ("Values in %: the mean over seeds, ± the sample standard deviation and (min-max) when there are "
         "several seeds. A difference between two variants smaller than their spread is noise."),
        "",
        ("The paper's ablation numbers (Yang et al. 2022, arXiv 2205.00908) are not listed beside: they could not "
         "be checked against the paper's text when this table was written; compare by hand."),
    ]
    md_path = write_text_atomic(out / "results.md", "\n".join(lines) + "\n")
    return md_path, csv_path


def ablate(
    data_root: str | os.PathLike,
    category: str,
    out_dir: str | os.PathLike,
    variants: Iterable[str] | str | None = None,
    seeds: Iterable[int] | str = (0,),
    progress: bool = True,
    figures: bool = False,
    **config_overrides,
) -> list[dict]:
    """Train and evaluate each variant per seed into ``out_dir/<variant>/seed<k>``; write the table.

    Args:
        data_root, category: the data (MVTec AD layout) to train and test on.
        out_dir: the study's folder.
        variants: names from ``variants.VARIANTS`` (default ``variants.DEFAULT_VARIANTS``), a list or ``"a,b"``.
        seeds: training seeds, a list or ``"0,1"``.
        progress: progress bars.
        figures: write the evaluation figures of each run.
        **config_overrides: common :class:`TrainConfig` options (``steps``, ``image_size``, ``device``, ...).

    Returns:
        The rows of the table (:func:`summarise`). Raises ``KeyboardInterrupt`` after an
        interruption (checkpoints saved; call again to continue).
    """
    names = parse_list(variants, "variants") if variants is not None else list(DEFAULT_VARIANTS)
    seed_list = parse_list(seeds, "seeds", int)
    if any(seed < 0 for seed in seed_list):
        raise ValueError(f"seeds must be >= 0, got {seed_list}")
    fixed = sorted(set(config_overrides) & set(COMMON_ONLY))
    if fixed:
        raise ValueError(f"{', '.join(fixed)} are set by ablate itself (one folder per variant and seed); remove them")
    out = Path(out_dir)
    check_results_replaceable(out)
    configs = {}
    for name in names:  # every config is built (and checked) before any training starts
        options = {**config_overrides, **variant_options(name, category)}
        for seed in seed_list:
            configs[name, seed] = TrainConfig(data_root=str(data_root), category=category,
                                              out_dir=str(run_dir_for(out, name, seed)), seed=seed, **options)
    runs: dict[str, dict[int, dict]] = {name: {} for name in names}
    last_runs: dict[str, dict[int, dict]] = {name: {} for name in names}
    for (name, seed), config in configs.items():
        if progress:
            print(f"[ablate] {name} seed {seed}: {config.out_dir}")
        status, metrics = run_variant(config, progress=progress, figures=figures)
        if status == "interrupted":
            raise KeyboardInterrupt
        if progress and status == "skipped":
            print(f"[ablate] {name} seed {seed}: finished before, skipped")
        runs[name][seed] = metrics["best"]
        last_runs[name][seed] = metrics["last"]
    rows = summarise(runs, last_runs)
    common = ", ".join(f"{k}={v}" for k, v in sorted(config_overrides.items()))
    write_results(
        out, rows, category, f"Data: {data_root}, category {category}; common options: {common or 'defaults'}."
    )
    return rows
