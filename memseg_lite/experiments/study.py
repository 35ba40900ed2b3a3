"""The accuracy study: a grid of settings x categories x seeds, one result line per run, resumable.

``python -m memseg_lite.experiments.study run --results docs/results/accuracy_study.jsonl --out runs/study``
works through :data:`GRID` in order (most informative cells first): it trains and evaluates one
run per (cell, category, seed) into ``OUT/<cell>/<category>/seed<k>`` and appends one JSON line to
the results file as soon as that run is finished. A run already in the results file (the same
cell, category, seed and settings) is skipped, and an interrupted run continues from its checkpoint
(:func:`memseg_lite.experiments.runs.train_and_evaluate`), so a later session simply runs the same
command again. ``--max-runs`` and ``--cells`` limit one session's share of the grid.

``python -m memseg_lite.experiments.study table --results ... --out docs/results/accuracy_study.md``
renders the results file: per category and cell the mean ± sample std over seeds (``n`` shown) of
the test metrics of the checkpoint chosen on validation (best) and of the last checkpoint, each
cell's difference from ``full`` and whether the seed ranges are apart, and per run the best step,
the validation score that chose it, and best vs last on the test split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from memseg_lite.core.io import write_text_atomic
from memseg_lite.training.presets import authors_code_options

#: The common settings of every run of the study: a size at which the demo categories learn on CPU
#: (the demo profile of notebook 08, with 200 steps so that a grid fits in hours, not days).
STUDY_SETTINGS: dict = {
    "image_size": 128,
    "steps": 200,
    "batch_size": 8,
    "memory_size": 20,
    "val_images": 8,
    "val_every": 50,
    "checkpoint_every": 50,
    "top_k": 25,
    "texture_root": "data/dtd",
}
METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro")
METRIC_NAMES = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AU-PRO"}


def _authors_code(category: str) -> dict:
    # memory_size is a study setting here (the demo categories are none of screw / toothbrush).
    return {k: v for k, v in authors_code_options(category).items() if k != "memory_size"}


#: Cell name -> the TrainConfig options it sets over :data:`STUDY_SETTINGS` (a callable takes the category).
CELLS: dict = {
    "full": {},  # the defaults: the paper's method
    "no_memory": {"use_memory": False},
    "no_attention": {"use_attention": False},
    "no_msff": {"fusion": "plain"},
    "authors_code": _authors_code,
    "rule_official": {"selection_rule": "official"},
    "rule_tootouch": {"selection_rule": "tootouch"},
    "avgpool3": {"feature_smoothing": "avgpool3"},
    "di_x100": {"di_scale": 100.0},
    "texture_only": {"p_texture": 1.0},
    "structure_only": {"p_texture": 0.0},
    "val_basic": {"val_recipe": "basic"},
}
SEEDS = (0, 1, 2)
#: Fresh seeds on which a cell that passes :func:`default_rule` must repeat before a default changes.
CONFIRM_SEEDS = (3, 4, 5)
#: The grid in the order it is run: (cells, categories), seeds inner; the paper's ablation and the
#: authors' code on the category that learns best (mesh) first, then the other switches, then
#: the other categories.
GRID: tuple = (
    (("full", "no_memory"), ("mesh",)),
    (("no_attention", "no_msff", "authors_code"), ("mesh",)),
    (
        ("rule_official", "rule_tootouch", "avgpool3", "di_x100", "texture_only", "structure_only", "val_basic"),
        ("mesh",),
    ),
    (tuple(CELLS), ("wood", "button")),
)


def cell_options(cell: str, category: str) -> dict:
    if cell not in CELLS:
        raise ValueError(f"unknown study cell {cell!r}; known cells: {', '.join(CELLS)}")
    options = CELLS[cell]
    return dict(options(category) if callable(options) else options)


def grid_runs(grid: Sequence = GRID, seeds: Sequence[int] = SEEDS, cells: Iterable[str] | None = None,
              categories: Iterable[str] | None = None) -> list[tuple]:
    """The (cell, category, seed) runs of ``grid`` in order, without repeats; ``cells`` and
    ``categories`` keep only those."""
    wanted = None if cells is None else set(cells)
    if wanted is not None and wanted - set(CELLS):
        raise ValueError(f"unknown study cell(s) {sorted(wanted - set(CELLS))}; known cells: {', '.join(CELLS)}")
    known_categories = {category for _, group_categories in grid for category in group_categories}
    wanted_categories = None if categories is None else set(categories)
    if wanted_categories is not None and wanted_categories - known_categories:
        raise ValueError(f"unknown study categor(ies) {sorted(wanted_categories - known_categories)}; "
                         f"the grid has {', '.join(sorted(known_categories))}")
    runs: list[tuple] = []
    for group_cells, group_categories in grid:
        for category in group_categories:
            if wanted_categories is not None and category not in wanted_categories:
                continue
            for seed in seeds:
                for cell in group_cells:
                    run = (cell, category, seed)
                    if run not in runs and (wanted is None or cell in wanted):
                        runs.append(run)
    return runs


def run_key(cell: str, category: str, seed: int, settings: dict) -> str:
    """What identifies a run in the results file: its cell, category, seed and a hash of its settings."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{cell}/{category}/seed{seed}/{digest}"


def read_results(path: str | os.PathLike) -> list[dict]:
    """The result lines of ``path`` (none when it does not exist); a clear error naming a bad line."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "key" not in record:
                raise ValueError("not a result record")
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: unreadable result ({error}); fix or delete that line") from None
        records.append(record)
    return records


def _append(path: Path, record: dict, unless_recorded: bool = False) -> bool:
    """Append one line; the file is rewritten atomically so a kill never leaves half a line.

    A lock file beside it makes read-and-rewrite one step, so several study processes (say one per
    core) can share one results file without losing lines. With ``unless_recorded`` nothing is
    written when a line with the record's key is already there (another process finished the same
    run first). Returns whether the line was written."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        if unless_recorded and record["key"] in {r["key"] for r in read_results(path)}:
            return False
        old = path.read_text() if path.is_file() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        write_text_atomic(path, old + json.dumps(record, sort_keys=True) + "\n")
    return True


def _record(cell: str, category: str, seed: int, key: str, options: dict, run_dir: Path,
            best: dict, last: dict, seconds: float) -> dict:
    from memseg_lite.core.checkpoint import load_checkpoint
    from memseg_lite.training.trainer import BEST_NAME

    validation = load_checkpoint(run_dir / BEST_NAME).get("validation", {})
    return {
        "key": key, "cell": cell, "category": category, "seed": seed, "options": options,
        "best": {k: best.get(k) for k in METRIC_KEYS},
        "last": {k: last.get(k) for k in METRIC_KEYS},
        "best_step": best.get("training_steps"), "last_step": last.get("training_steps"),
        "validation_score": validation.get("score"),
        "validation": {k: validation.get(k) for k in ("image_auroc", "pixel_auroc", "pixel_ap", "aupro", "loss")},
        "seconds": round(seconds, 1),
    }


def run_study(results: str | os.PathLike, out_dir: str | os.PathLike, data_root: str | os.PathLike = "data/demo",
              runs: Sequence[tuple] | None = None, settings: dict | None = None, max_runs: int | None = None,
              progress: bool = True) -> list[dict]:
    """Train and evaluate every run of ``runs`` (default :func:`grid_runs`) not yet in ``results``.

    Each finished run is appended to ``results`` at once. Several processes may work through the same
    runs: a run another one has finished (in ``results``) or is training (its run folder locked) is
    skipped, so one identical command per core shares the grid. Returns the records added.
    """
    from memseg_lite.experiments.runs import train_and_evaluate
    from memseg_lite.training.config import TrainConfig
    from memseg_lite.training.trainer import RunFolderBusyError

    results, out_dir = Path(results), Path(out_dir)
    settings = dict(STUDY_SETTINGS if settings is None else settings)
    runs = grid_runs() if runs is None else list(runs)
    if max_runs is not None and max_runs < 1:
        raise ValueError(f"max_runs must be >= 1, got {max_runs}")
    done = {record["key"] for record in read_results(results)}
    planned = []
    for cell, category, seed in runs:  # every config is built (and checked) before any training starts
        options = cell_options(cell, category)
        key = run_key(cell, category, seed, {**settings, **options, "data_root": str(data_root)})
        if key in done:
            continue
        config = TrainConfig(data_root=str(data_root), category=category, seed=seed,
                             out_dir=str(out_dir / cell / category / f"seed{seed}"), **{**settings, **options})
        planned.append((cell, category, seed, key, options, config))
    if progress:
        print(f"[study] {len(runs) - len(planned)} of {len(runs)} runs in {results} already; {len(planned)} to go"
              + (f", this session at most {max_runs}" if max_runs else ""), flush=True)
    added = []
    for cell, category, seed, key, options, config in planned:
        if max_runs is not None and len(added) >= max_runs:
            break
        if key in {record["key"] for record in read_results(results)}:  # another process finished it meanwhile
            continue
        if progress:
            print(f"[study] {time.strftime('%H:%M:%S')} {cell} {category} seed {seed}: {config.out_dir}", flush=True)
        started = time.perf_counter()
        try:
            status, metrics = train_and_evaluate(config, progress=False)
        except RunFolderBusyError as error:  # another study process trains it: go on with the next run
            if progress:
                print(f"[study] skipped, {error}", flush=True)
            continue
        if status == "interrupted":
            raise KeyboardInterrupt
        record = _record(cell, category, seed, key, options, Path(config.out_dir), metrics["best"], metrics["last"],
                         time.perf_counter() - started)
        # Another process may have finished and recorded this run while this one waited or evaluated.
        if not _append(results, record, unless_recorded=True):
            continue
        added.append(record)
        if progress:
            print(
                f"[study] {cell} {category} seed {seed}: "
                + ", ".join(f"{k} {100 * record['best'][k]:.2f}" for k in METRIC_KEYS)
                + f" ({record['seconds']:.0f} s)",
                flush=True,
            )
    return added


# ---- the table ------------------------------------------------------------------------------------
def spread(values: Sequence[float]) -> dict:
    """Mean, sample std (``None`` for one value), min, max and n."""
    values = list(values)
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": len(values)}


def summarise(records: Sequence[dict], seeds: Iterable[int] | None = None) -> dict:
    """(category, cell) -> {"best": {metric: spread in %}, "last": {...}, "seeds": [...]}.

    The latest line per key wins; ``seeds`` keeps only the runs of those seeds."""
    wanted = None if seeds is None else set(seeds)
    latest = {record["key"]: record for record in records if wanted is None or record["seed"] in wanted}
    groups: dict = {}
    for record in latest.values():
        groups.setdefault((record["category"], record["cell"]), []).append(record)
    summary = {}
    for group, members in groups.items():
        members.sort(key=lambda r: r["seed"])
        summary[group] = {
            "seeds": [r["seed"] for r in members],
            **{
                which: {
                    k: spread([100 * r[which][k] for r in members if r[which].get(k) is not None]) for k in METRIC_KEYS
                }
                for which in ("best", "last")
            },
        }
    return summary


def apart(a: dict, b: dict) -> str:
    """``"yes"`` when two spreads' seed ranges do not overlap (two seeds or more each), else ``"no"``.

    ``"-"`` if unknown."""
    if a["n"] < 2 or b["n"] < 2:
        return "-"
    return "yes" if a["min"] > b["max"] or a["max"] < b["min"] else "no"


def chance_apart(n_a: int, n_b: int) -> float:
    """How often the seed ranges of two cells that do not differ at all are apart by chance.

    With exchangeable, continuous results every ordering of the ``n_a + n_b`` values is equally
    likely; exactly two of the ``C(n_a + n_b, n_a)`` ways to place the ``a`` values among them put
    all of ``a`` above all of ``b`` or all below. Half of that is "beats", half "loses"."""
    if n_a < 1 or n_b < 1:
        raise ValueError(f"chance_apart needs at least one value on each side, got n_a={n_a}, n_b={n_b}")
    return 2 / math.comb(n_a + n_b, n_a)


def _beyond(summary: dict, category: str, cell: str, reference: str) -> tuple[list, list]:
    """The (category, metric, Δ) where ``cell`` beats / loses to ``reference`` beyond the spread."""
    wins, losses = [], []
    row, ref = summary.get((category, cell)), summary.get((category, reference))
    if row is None or ref is None:
        return wins, losses
    for k in METRIC_KEYS:
        a, b = row["best"][k], ref["best"][k]
        if a["mean"] is None or b["mean"] is None or apart(a, b) != "yes":
            continue
        (wins if a["mean"] > b["mean"] else losses).append((category, k, round(a["mean"] - b["mean"], 1)))
    return wins, losses


def default_rule(records: Sequence[dict], reference: str = "full", min_categories: int = 2) -> dict:
    """Which cells would change a default, by the rule of ``docs/ablations.md``, applied to every cell.

    Stage 1 (seeds :data:`SEEDS`): a cell *qualifies* when it beats ``reference`` beyond the spread
    (seed ranges apart) on some metric on at least ``min_categories`` categories and loses beyond the
    spread on none. Stage 2 (fresh seeds :data:`CONFIRM_SEEDS`): a qualified cell is *confirmed* when,
    on those seeds, it beats ``reference`` beyond the spread again on at least one of its stage-1 wins,
    is ahead (mean) on all of them, and loses beyond the spread on none. Only a confirmed cell changes a
    default. A cell not yet run on every category does not qualify (``complete`` is False).
    Returns cell -> {"wins", "losses", "categories", "complete", "qualifies", "confirm": None | {...}}."""
    first = summarise(records, SEEDS)
    fresh = summarise(records, CONFIRM_SEEDS)
    categories = sorted({category for category, _ in first})
    verdicts = {}
    for cell in sorted({cell for _, cell in first if cell != reference}, key=_cell_order):
        wins, losses = [], []
        for category in categories:
            w, lo = _beyond(first, category, cell, reference)
            wins += w
            losses += lo
        measured = [c for c in categories  # measured: every seed of SEEDS run for cell and reference
                    if all(first.get((c, x), {}).get("seeds") == sorted(SEEDS) for x in (cell, reference))]
        complete = len(measured) == len(categories)
        qualifies = complete and len({c for c, _, _ in wins}) >= min_categories and not losses
        confirm = None
        if qualifies and any((c, cell) in fresh and (c, reference) in fresh for c, _, _ in wins):
            repeated, behind, fresh_losses, missing = [], [], [], []
            for c, k, _ in wins:
                row, ref = fresh.get((c, cell)), fresh.get((c, reference))
                if row is None or ref is None or row["best"][k]["n"] < 2 or ref["best"][k]["n"] < 2:
                    missing.append((c, k))
                    continue
                delta = round(row["best"][k]["mean"] - ref["best"][k]["mean"], 1)
                if apart(row["best"][k], ref["best"][k]) == "yes" and delta > 0:
                    repeated.append((c, k, delta))
                if delta <= 0:
                    behind.append((c, k, delta))
            for c in categories:
                fresh_losses += _beyond(fresh, c, cell, reference)[1]
            confirm = {"repeated": repeated, "behind": behind, "losses": fresh_losses, "missing": missing,
                       "confirmed": bool(repeated) and not behind and not fresh_losses and not missing}
        verdicts[cell] = {"wins": wins, "losses": losses, "categories": measured, "complete": complete,
                          "qualifies": qualifies,
                          "confirm": confirm}
    return verdicts


def _cell_order(cell: str) -> int:
    order = list(CELLS)
    return order.index(cell) if cell in order else len(order)


def _list_text(items: Sequence[tuple]) -> str:
    return ", ".join(f"{c} {METRIC_NAMES[k]} {d:+.1f}" for c, k, d in items) or "none"


def render_rule(records: Sequence[dict], reference: str = "full") -> str:
    """The Markdown of :func:`default_rule`: one row per cell, and what it decides."""
    verdicts = default_rule(records, reference)
    n_categories = len({r["category"] for r in records if r["seed"] in SEEDS})
    chance = chance_apart(len(SEEDS), len(SEEDS))
    lines = [
        f"**Default rule, applied to every cell** (seeds {', '.join(map(str, SEEDS))}; beyond the spread = "
        f"seed ranges apart, which two cells that do not differ at all reach by chance "
        f"{chance:.0%} of the time per metric, half of it as a win; confirmation on fresh seeds "
        f"{', '.join(map(str, CONFIRM_SEEDS))})",
        "",
        "| cell | categories | beats `full` beyond the spread | loses beyond the spread | stage 1 | confirmation |",
        "|---|---|---|---|---|---|",
    ]
    for cell, v in verdicts.items():
        if not v["qualifies"]:
            stage2 = "-"
        elif v["confirm"] is None:
            won = ",".join(sorted({c for c, _, _ in v["wins"]}))
            stage2 = (f"pending: `--cells {reference},{cell} --categories {won} "
                      f"--seeds {','.join(map(str, CONFIRM_SEEDS))}`")
        else:
            c = v["confirm"]
            stage2 = ("**confirmed**" if c["confirmed"] else "not confirmed") + (
                f" (again beyond: {_list_text(c['repeated'])}; behind: {_list_text(c['behind'])}; "
                f"losses: {_list_text(c['losses'])}"
                + (f"; not run: {', '.join(f'{a} {METRIC_NAMES[k]}' for a, k in c['missing'])}" if c["missing"] else "")
                + ")")
        stage1 = ("qualifies" if v["qualifies"] else "no" if v["complete"]
                  else f"incomplete ({len(v['categories'])} of {n_categories} categories)")
        lines.append(f"| `{cell}` | {len(v['categories'])} | {_list_text(v['wins'])} | {_list_text(v['losses'])} | "
                     f"{stage1} | {stage2} |")
    return "\n".join(lines) + "\n"


def _cell_text(s: dict) -> str:
    if s["mean"] is None:
        return "-"
    if s["std"] is None:
        return f"{s['mean']:.1f}"
    return f"{s['mean']:.1f} ± {s['std']:.1f}"


def _cells_tables(summary: dict, seeds_text: str) -> list[str]:
    """Per category: each cell's mean ± std, Δ against ``full``, whether apart, and the last checkpoint's."""
    lines = []
    for category in sorted({category for category, _ in summary}):
        cells = sorted((cell for c, cell in summary if c == category), key=_cell_order)
        reference = summary.get((category, "full"))
        lines += [
            f"**{category}** ({seeds_text}; test split, %, mean ± sample std over n seeds; Δ: mean minus `full`'s; "
            "apart: the seed ranges do not overlap)",
            "",
            "| cell | n | image AUROC | pixel AUROC | AU-PRO | Δ image | Δ pixel | Δ AU-PRO | apart (img/pix/PRO) "
            "| last: image AUROC | last: pixel AUROC | last: AU-PRO |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for cell in cells:
            row = summary[category, cell]
            deltas, aparts = [], []
            for k in METRIC_KEYS:
                if (
                    reference is None
                    or cell == "full"
                    or row["best"][k]["mean"] is None
                    or reference["best"][k]["mean"] is None
                ):
                    deltas.append("-")
                    aparts.append("-")
                else:
                    deltas.append(f"{row['best'][k]['mean'] - reference['best'][k]['mean']:+.1f}")
                    aparts.append(apart(row["best"][k], reference["best"][k]))
            lines.append(f"| `{cell}` | {row['best']['aupro']['n']} | "
                         + " | ".join(_cell_text(row["best"][k]) for k in METRIC_KEYS) + " | "
                         + " | ".join(deltas) + " | " + "/".join(aparts) + " | "
                         + " | ".join(_cell_text(row["last"][k]) for k in METRIC_KEYS) + " |")
        lines.append("")
    return lines


def render_table(records: Sequence[dict], command: str = "") -> str:
    """The Markdown of the study: per category the cells table (seeds :data:`SEEDS`), the default
    rule's verdict per cell, the confirmation runs (seeds :data:`CONFIRM_SEEDS`), then best vs last per run."""
    lines = []
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += _cells_tables(summarise(records, SEEDS), f"seeds {', '.join(map(str, SEEDS))}")
    if any(r["seed"] in SEEDS for r in records):
        lines += [render_rule(records)]
    confirmation = summarise(records, CONFIRM_SEEDS)
    if confirmation:
        lines += _cells_tables(confirmation, f"confirmation, fresh seeds {', '.join(map(str, CONFIRM_SEEDS))}")
    order = {cell: i for i, cell in enumerate(CELLS)}
    latest = sorted({r["key"]: r for r in records}.values(),
                    key=lambda r: (r["category"], order.get(r["cell"], len(order)), r["seed"]))
    if latest:
        lines += ["**Checkpoint selection, per run** (test split, %; best: chosen by the validation score shown, "
                  "on held-out good images with simulated anomalies)", "",
                  "| category | cell | seed | best step | validation score | best: image / pixel / AU-PRO "
                  "| last step | last: image / pixel / AU-PRO | seconds |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in latest:
            score = r.get("validation_score")
            lines.append(
                f"| {r['category']} | `{r['cell']}` | {r['seed']} | {r['best_step']} | "
                f"{'-' if score is None else f'{100 * score:.1f}'} | "
                + " / ".join(f"{100 * r['best'][k]:.1f}" for k in METRIC_KEYS)
                + f" | {r['last_step']} | "
                + " / ".join(f"{100 * r['last'][k]:.1f}" for k in METRIC_KEYS)
                + f" | {r.get('seconds', '-')} |"
            )
    return "\n".join(lines) + "\n"


TABLE_START, TABLE_END = "<!-- accuracy study table: start -->", "<!-- accuracy study table: end -->"


def replace_between_markers(text: str, table: str, where: str = "the document") -> str:
    """``text`` with what lies between :data:`TABLE_START` and :data:`TABLE_END` replaced by ``table``."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"{where} has no '{TABLE_START}' ... '{TABLE_END}' pair to put the table between; add them")
    return text[: start + len(TABLE_START)] + "\n" + table + text[end:]


def _int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{name} takes comma-separated whole numbers such as 3,4,5, got {text!r}") from None
    if not values:
        raise ValueError(f"{name} is empty; give comma-separated whole numbers such as 3,4,5")
    return values


RUN_COMMAND = ("OMP_NUM_THREADS=1 nice -n 19 python -m memseg_lite.experiments.study run "
               "--results docs/results/accuracy_study.jsonl --out runs/study")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m memseg_lite.experiments.study", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train + evaluate the grid's runs not yet in --results (resumable)")
    run.add_argument("--results", default="docs/results/accuracy_study.jsonl", help="the results file (JSON lines)")
    run.add_argument("--out", default="runs/study", help="where the run folders go [runs/study]")
    run.add_argument("--data-root", default="data/demo")
    run.add_argument("--cells", help="comma-separated cells to run (others skipped) [all of the grid]")
    run.add_argument("--categories", help="comma-separated categories to run [all of the grid]")
    run.add_argument("--seeds", help=f"comma-separated seeds [{','.join(map(str, SEEDS))}]; "
                     f"{','.join(map(str, CONFIRM_SEEDS))} confirm a cell the default rule lets through")
    run.add_argument("--max-runs", type=int, help="stop after this many new runs")
    run.add_argument("--threads", type=int, default=1, help="torch CPU threads [1]")
    table = commands.add_parser("table", help="render --results as Markdown")
    table.add_argument("--results", default="docs/results/accuracy_study.jsonl")
    table.add_argument("--out", help="write the Markdown here (default: print it)")
    table.add_argument("--into", help="also put it between the table markers of this Markdown file (docs/ablations.md)")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            import torch

            torch.set_num_threads(args.threads)
            cells = None if args.cells is None else [c.strip() for c in args.cells.split(",") if c.strip()]
            categories = None if args.categories is None else [c.strip() for c in args.categories.split(",")
                                                                if c.strip()]
            seeds = SEEDS if args.seeds is None else _int_list(args.seeds, "--seeds")
            runs = grid_runs(seeds=seeds, cells=cells, categories=categories)
            run_study(args.results, args.out, args.data_root, runs=runs, max_runs=args.max_runs)
        else:
            text = render_table(read_results(args.results), RUN_COMMAND)
            if args.into:
                into = Path(args.into)
                write_text_atomic(into, replace_between_markers(into.read_text(), text, str(into)))
            if args.out:
                write_text_atomic(Path(args.out), text)
            elif not args.into:
                print(text, end="")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the finished runs are in the results file; run the same command again to continue",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
