"""The accuracy study runner: one JSON line per finished run, reruns skip, the table from the lines."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import statistics

import pytest
from conftest import tiny_config

from memseg_lite.experiments import study
from memseg_lite.experiments.study import grid_runs, read_results, render_table, run_study, summarise


def test_grid_order_and_filter():
    runs = grid_runs()
    assert runs[:6] == [("full", "mesh", 0), ("no_memory", "mesh", 0), ("full", "mesh", 1),
                        ("no_memory", "mesh", 1), ("full", "mesh", 2), ("no_memory", "mesh", 2)]
    assert len(runs) == len(set(runs)) == len(study.CELLS) * 3 * 3  # every cell, 3 categories, 3 seeds, once
    assert {cell for cell, _, _ in grid_runs(cells=["di_x100"])} == {"di_x100"}
    with pytest.raises(ValueError, match="unknown study cell"):
        grid_runs(cells=["nope"])


def test_authors_code_cell_keeps_the_study_memory_size():
    options = study.cell_options("authors_code", "mesh")
    assert "memory_size" not in options
    assert options["di_scale"] == 100.0 and options["feature_smoothing"] == "avgpool3"


def record(cell, seed, aupro, last_aupro, category="mesh"):
    metrics = {"image_auroc": 0.5, "pixel_auroc": 0.9, "aupro": aupro}
    return {"key": f"{cell}/{category}/seed{seed}/x", "cell": cell, "category": category, "seed": seed,
            "best": metrics, "last": {**metrics, "aupro": last_aupro}, "best_step": 100, "last_step": 200,
            "validation_score": 0.7, "seconds": 1.0}


def test_summary_and_table_against_statistics():
    records = [record("full", 0, 0.80, 0.70), record("full", 1, 0.84, 0.72), record("full", 2, 0.82, 0.74),
               record("no_memory", 0, 0.60, 0.6), record("no_memory", 1, 0.62, 0.6),
               record("no_memory", 1, 0.64, 0.6)]  # a repeated key: the later line wins
    summary = summarise(records)
    full = summary["mesh", "full"]["best"]["aupro"]
    assert full["n"] == 3
    assert full["mean"] == pytest.approx(statistics.mean([80, 84, 82]))
    assert full["std"] == pytest.approx(statistics.stdev([80, 84, 82]))
    assert summary["mesh", "full"]["last"]["aupro"]["mean"] == pytest.approx(72)
    assert summary["mesh", "no_memory"]["best"]["aupro"]["n"] == 2
    assert summary["mesh", "no_memory"]["best"]["aupro"]["mean"] == pytest.approx(62)
    text = render_table(records, "the command")
    assert "Command: `the command`" in text
    row = next(line for line in text.splitlines() if line.startswith("| `no_memory` | 2 |"))
    assert "| -20.0 |" in row and "/yes |" in row  # Δ AU-PRO vs full, ranges apart
    assert "| mesh | `full` | 1 | 100 | 70.0 |" in text  # per-run best vs last with the validation score


def test_bad_results_line_is_named(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(record("full", 0, 0.8, 0.8)) + "\n{oops\n")
    with pytest.raises(ValueError, match="results.jsonl, line 2"):
        read_results(path)
    assert read_results(tmp_path / "missing.jsonl") == []


def _append_many(path, worker, count):
    for index in range(count):
        study._append(path, {"key": f"w{worker}/{index}", "worker": worker, "index": index})


def test_concurrent_appends_lose_no_line(tmp_path):
    # Two study processes on one results file (one per core): each append reads and rewrites the
    # file, so without the lock one process's line can be overwritten by the other's rewrite.
    path = tmp_path / "results.jsonl"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(path, worker, 30)) for worker in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0
    keys = [record["key"] for record in read_results(path)]
    assert sorted(keys) == sorted(f"w{w}/{i}" for w in range(3) for i in range(30))
    for worker in range(3):  # each process's lines stay in its own order
        assert [k for k in keys if k.startswith(f"w{worker}/")] == [f"w{worker}/{i}" for i in range(30)]


@pytest.mark.slow
def test_run_study_appends_and_skips(tiny_demo, tmp_path, monkeypatch):
    settings = {k: v for k, v in tiny_config(tiny_demo, tmp_path / "unused", steps=2, val_every=1,
                                             checkpoint_every=1).to_dict().items()
                if k not in ("data_root", "category", "out_dir", "seed")}
    results = tmp_path / "results.jsonl"
    runs = [("full", "button", 0), ("no_memory", "button", 0)]
    added = run_study(results, tmp_path / "runs", tiny_demo, runs=runs, settings=settings, max_runs=1, progress=False)
    assert [r["cell"] for r in added] == ["full"] and len(read_results(results)) == 1
    metrics = json.loads((tmp_path / "runs" / "full" / "button" / "seed0" / "evaluation" / "metrics.json").read_text())
    assert added[0]["best"]["aupro"] == pytest.approx(metrics["aupro"])
    assert added[0]["last_step"] == 2 and added[0]["validation_score"] is not None
    added = run_study(results, tmp_path / "runs", tiny_demo, runs=runs, settings=settings, progress=False)
    assert [r["cell"] for r in added] == ["no_memory"]

    def no_training(*args, **kwargs):
        raise AssertionError("a run in the results file was trained again")

    monkeypatch.setattr("memseg_lite.experiments.runs.train_and_evaluate", no_training)
    assert run_study(results, tmp_path / "runs", tiny_demo, runs=runs, settings=settings, progress=False) == []
    assert [r["cell"] for r in read_results(results)] == ["full", "no_memory"]


def test_table_goes_between_the_markers_only():
    text = f"intro\n{study.TABLE_START}\nold table\n{study.TABLE_END}\noutro\n"
    new = study.replace_between_markers(text, "| new |\n")
    assert new == f"intro\n{study.TABLE_START}\n| new |\n{study.TABLE_END}\noutro\n"
    assert study.replace_between_markers(new, "| new |\n") == new  # idempotent
    with pytest.raises(ValueError, match="docs/x.md has no"):
        study.replace_between_markers("no markers", "t", "docs/x.md")


def test_chance_apart_matches_counting_the_orderings():
    # Independent count: every way to place the a values among the n_a + n_b ranks is equally likely.
    for n_a, n_b in [(2, 2), (3, 3), (2, 3), (1, 4)]:
        total = apart_count = 0
        for a_ranks in itertools.combinations(range(n_a + n_b), n_a):
            b_ranks = [r for r in range(n_a + n_b) if r not in a_ranks]
            total += 1
            apart_count += min(a_ranks) > max(b_ranks) or max(a_ranks) < min(b_ranks)
        assert study.chance_apart(n_a, n_b) == pytest.approx(apart_count / total)
    assert study.chance_apart(3, 3) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="at least one value"):
        study.chance_apart(0, 3)


def metric_record(cell, category, seed, image, pixel, pro):
    metrics = {"image_auroc": image, "pixel_auroc": pixel, "aupro": pro}
    return {"key": f"{cell}/{category}/seed{seed}/x", "cell": cell, "category": category, "seed": seed,
            "best": metrics, "last": metrics, "best_step": 200, "last_step": 200, "validation_score": 0.5}


def grid_records(cell, seeds, shift):
    """Three seeds per category; ``shift[category]`` = (image, pixel, AU-PRO) added to full's values."""
    out = []
    for category, (di, dp, dr) in shift.items():
        for i, seed in enumerate(seeds):
            noise = 0.001 * i  # a spread of 0.2 points
            out.append(metric_record(cell, category, seed, 0.80 + di + noise, 0.90 + dp + noise, 0.70 + dr + noise))
    return out


def test_default_rule_qualifies_and_confirms_by_the_written_rule():
    zero = (0.0, 0.0, 0.0)
    seeds = study.SEEDS
    records = grid_records("full", seeds, {"mesh": zero, "wood": zero, "button": zero})
    # beats beyond the spread on mesh (AU-PRO) and wood (image), within on button: qualifies
    records += grid_records("avgpool3", seeds, {"mesh": (0, 0, 0.05), "wood": (0.03, 0, 0), "button": zero})
    # beats on two categories but loses button's pixel AUROC: does not qualify
    records += grid_records("no_memory", seeds, {"mesh": (0.02, 0, 0), "wood": (0.02, 0, 0),
                                                 "button": (0, -0.01, 0)})
    # would qualify, but is not run on button yet: incomplete
    records += grid_records("di_x100", seeds, {"mesh": (0.02, 0, 0), "wood": (0.02, 0, 0)})
    verdicts = study.default_rule(records)
    assert verdicts["avgpool3"]["qualifies"] and verdicts["avgpool3"]["confirm"] is None
    assert verdicts["avgpool3"]["wins"] == [("mesh", "aupro", 5.0), ("wood", "image_auroc", 3.0)]
    assert not verdicts["no_memory"]["qualifies"] and verdicts["no_memory"]["losses"] == [
        ("button", "pixel_auroc", -1.0)]
    assert not verdicts["di_x100"]["qualifies"] and not verdicts["di_x100"]["complete"]
    text = study.render_rule(records)
    assert "pending: `--cells full,avgpool3 --categories mesh,wood --seeds 3,4,5`" in text
    assert "incomplete (2 of 3 categories)" in text

    fresh = study.CONFIRM_SEEDS
    confirm = grid_records("full", fresh, {"mesh": zero, "wood": zero})
    # on fresh seeds: mesh AU-PRO beyond the spread again, wood image ahead within the spread
    repeat = confirm + grid_records("avgpool3", fresh, {"mesh": (0, 0, 0.04), "wood": (0.001, 0, 0)})
    verdict = study.default_rule(records + repeat)["avgpool3"]["confirm"]
    assert verdict["confirmed"] and verdict["repeated"] == [("mesh", "aupro", 4.0)]
    assert "**confirmed**" in study.render_rule(records + repeat)
    # behind on one of the stage-1 wins: not confirmed
    behind = confirm + grid_records("avgpool3", fresh, {"mesh": (0, 0, 0.04), "wood": (-0.01, 0, 0)})
    verdict = study.default_rule(records + behind)["avgpool3"]["confirm"]
    assert not verdict["confirmed"] and verdict["behind"][0][:2] == ("wood", "image_auroc")
    # the seeds table keeps seeds 0-2 only; the confirmation runs get their own table
    table = render_table(records + repeat)
    rows = [line for line in table.splitlines() if line.startswith("| `avgpool3` | 3 |") and " ± " in line]
    assert len(rows) == 5  # mesh, wood, button on seeds 0-2, then mesh and wood on the fresh seeds
    assert "confirmation, fresh seeds 3, 4, 5" in table


def test_grid_categories_filter_and_cli_seed_errors(capsys):
    runs = grid_runs(seeds=study.CONFIRM_SEEDS, cells=["full", "no_attention"], categories=["button", "mesh"])
    assert len(runs) == 12 and {seed for _, _, seed in runs} == {3, 4, 5}
    assert {category for _, category, _ in runs} == {"button", "mesh"}
    with pytest.raises(ValueError, match="unknown study categor"):
        grid_runs(categories=["carpet"])
    assert study.main(["run", "--seeds", "3,x", "--results", "unused.jsonl"]) == 2
    assert "--seeds takes comma-separated whole numbers" in capsys.readouterr().err


def test_run_study_skips_runs_another_process_owns_or_finished(tiny_demo, tmp_path, monkeypatch):
    from memseg_lite.experiments import runs as runs_module
    from memseg_lite.training.trainer import run_folder_lock

    settings = {k: v for k, v in tiny_config(tiny_demo, tmp_path / "unused", steps=2, val_every=1,
                                             checkpoint_every=1).to_dict().items()
                if k not in ("data_root", "category", "out_dir", "seed")}
    results, out = tmp_path / "results.jsonl", tmp_path / "runs"
    plan = [("full", "button", 0), ("no_memory", "button", 0), ("no_msff", "button", 0)]
    real_train_and_evaluate, trained = runs_module.train_and_evaluate, []

    def train_then_another_process_finishes_no_msff(config, progress=True):
        trained.append(config.out_dir)
        answer = real_train_and_evaluate(config, progress)
        key = study.run_key("no_msff", "button", 0, {**settings, "fusion": "plain", "data_root": str(tiny_demo)})
        study._append(results, {**record("no_msff", 0, 0.5, 0.5, "button"), "key": key})
        return answer

    monkeypatch.setattr(runs_module, "train_and_evaluate", train_then_another_process_finishes_no_msff)
    with run_folder_lock(out / "no_memory" / "button" / "seed0"):  # another process trains no_memory
        added = run_study(results, out, tiny_demo, runs=plan, settings=settings, progress=False)
    assert [r["cell"] for r in added] == ["full"]
    # no_memory was tried and found busy (the real lock check), no_msff was never started
    assert trained == [str(out / "full" / "button" / "seed0"), str(out / "no_memory" / "button" / "seed0")]
    assert [r["cell"] for r in read_results(results)] == ["no_msff", "full"]


def test_defaults_follow_the_committed_study():
    """A cell the committed study confirms (both stages of the rule) must be the default; no other may be."""
    import dataclasses
    from pathlib import Path

    from memseg_lite.training.config import TrainConfig

    results = Path(__file__).resolve().parents[1] / "docs" / "results" / "accuracy_study.jsonl"
    records = read_results(results)
    assert records, f"{results} is empty or missing: the study's results are committed"
    defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    for cell, verdict in study.default_rule(records).items():
        options = study.cell_options(cell, "mesh")
        is_default = all(defaults[name] == value for name, value in options.items())
        confirmed = bool(verdict["confirm"] and verdict["confirm"]["confirmed"])
        assert is_default == confirmed, (
            f"cell {cell!r} is {'confirmed' if confirmed else 'not confirmed'} by {results.name} but its options "
            f"{options} are {'' if is_default else 'not '}the TrainConfig defaults: change the default "
            "(and say so in README and notebook 11) or correct the study")


def test_a_run_recorded_meanwhile_by_another_process_is_not_recorded_twice(tiny_demo, tmp_path, monkeypatch):
    from memseg_lite.experiments import runs as runs_module

    settings = {k: v for k, v in tiny_config(tiny_demo, tmp_path / "unused", steps=2, val_every=1,
                                             checkpoint_every=1).to_dict().items()
                if k not in ("data_root", "category", "out_dir", "seed")}
    results = tmp_path / "results.jsonl"
    real_train_and_evaluate = runs_module.train_and_evaluate

    def another_process_records_it_first(config, progress=True):
        answer = real_train_and_evaluate(config, progress)
        key = study.run_key("full", "button", 0, {**settings, "data_root": str(tiny_demo)})
        study._append(results, {**record("full", 0, 0.5, 0.5, "button"), "key": key, "seconds": 300.0})
        return answer

    monkeypatch.setattr(runs_module, "train_and_evaluate", another_process_records_it_first)
    added = run_study(results, tmp_path / "runs", tiny_demo, runs=[("full", "button", 0)], settings=settings,
                      progress=False)
    assert added == []
    lines = read_results(results)
    assert len(lines) == 1 and lines[0]["seconds"] == 300.0  # the first process's line, kept alone
