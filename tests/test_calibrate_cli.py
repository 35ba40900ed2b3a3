"""``memseg-lite calibrate`` on the command line (issue 21): the operating-point options' usage errors,
and, end to end on a tiny trained run, the image-threshold line, the one-line warnings for a degenerate
threshold and the rule recorded in thresholds.json."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from memseg_lite.cli import build_parser
from memseg_lite.cli import main as cli

RECALL, ALARMS = "--target-recall", "--max-false-alarm-rate"


# --------------------------------------------------------------------------------------------
# Usage errors: argparse exits with 2 and names the option and its interval
# --------------------------------------------------------------------------------------------
def _usage_error(argv, capsys) -> str:
    # main() lets argparse's SystemExit through: the exit code is argparse's own.
    with pytest.raises(SystemExit) as stopped:
        cli(["calibrate", "--checkpoint", "model.pt", *argv])
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


@pytest.mark.parametrize(
    ("option", "value", "interval"),
    [(RECALL, "0", "(0, 1]"), (RECALL, "1.5", "(0, 1]"), (RECALL, "abc", "(0, 1]"), (RECALL, "nan", "(0, 1]"),
     (RECALL, "-0.5", "(0, 1]"), (ALARMS, "1", "[0, 1)"), (ALARMS, "-0.1", "[0, 1)"), (ALARMS, "inf", "[0, 1)")],
)
def test_an_operating_point_outside_its_interval_is_a_usage_error(option, value, interval, capsys):
    err = _usage_error([option, value], capsys)
    assert "memseg-lite calibrate: error:" in err
    assert f"{option} must be a number in {interval}" in err and repr(value) in err
    assert "Traceback" not in err


def test_both_operating_points_together_are_a_usage_error(capsys):
    err = _usage_error([RECALL, "0.9", ALARMS, "0.1"], capsys)
    assert "memseg-lite calibrate: error:" in err and "not allowed with" in err
    assert RECALL in err and ALARMS in err


@pytest.mark.parametrize(
    ("argv", "recall", "alarms"),
    [([RECALL, "1"], 1.0, None), ([RECALL, "1e-3"], 0.001, None), ([ALARMS, "0"], None, 0.0),
     ([ALARMS, "0.999"], None, 0.999), ([], None, None)],
)
def test_the_edges_of_the_intervals_parse(argv, recall, alarms):
    args = build_parser().parse_args(["calibrate", "--checkpoint", "model.pt", *argv])
    assert (args.target_recall, args.max_false_alarm_rate) == (recall, alarms)


# --------------------------------------------------------------------------------------------
# End to end: a tiny trained run, labelled folders arranged so the threshold decides nothing
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tiny_demo, tmp_path_factory):
    """Two training steps on the tiny button category at 64 px (random encoder, CPU)."""
    run = tmp_path_factory.mktemp("calibrate_cli") / "run"
    code = cli(["train", "--data-root", str(tiny_demo), "--category", "button", "--out", str(run),
                "--image-size", "64", "--steps", "2", "--batch-size", "4", "--memory-size", "4",
                "--val-images", "3", "--val-every", "1", "--checkpoint-every", "2", "--backbone-weights", "none",
                "--seed", "0", "--device", "cpu", "--no-progress"])
    assert code == 0 and (run / "best.pt").is_file()
    return run


@pytest.fixture(scope="module")
def folders(tiny_demo, tmp_path_factory):
    """--test-good: the category's good test images; --test-defect: byte-for-byte copies of them
    ("duplicates"), so no threshold separates the two, or its real defects ("real")."""
    root = tmp_path_factory.mktemp("labelled")
    test = tiny_demo / "button" / "test"
    good = sorted((test / "good").iterdir())
    (root / "good").mkdir()
    (root / "duplicates" / "copy").mkdir(parents=True)
    for path in good:
        shutil.copy(path, root / "good" / path.name)
        shutil.copy(path, root / "duplicates" / "copy" / f"dup_{path.name}")
    shutil.copytree(test, root / "real", ignore=shutil.ignore_patterns("good"))
    return root


def _scores(run, folders, defect: str, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """Per-image scores and labels from `memseg-lite evaluate` on the same folders (same backend and batch)."""
    out = tmp_path / f"evaluation_{defect}"
    assert cli(["evaluate", "--checkpoint", str(run / "best.pt"), "--test-good", str(folders / "good"),
                "--test-defect", str(folders / defect), "--out", str(out), "--no-figures", "--device", "cpu"]) == 0
    with (out / "scores.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    return np.array([float(r["score"]) for r in rows]), np.array([int(r["label"]) for r in rows], dtype=bool)


def _operating_point(scores, labels, recall=None, alarms=None) -> np.ndarray:
    """Which images the chosen image threshold calls defective, by trying every cut `score >= s`."""
    cuts = [scores >= s for s in np.unique(scores)] + [np.zeros_like(labels)]  # lowest first; last: none called
    recalls = [np.mean(called[labels]) for called in cuts]
    alarm_rates = [np.mean(called[~labels]) for called in cuts]
    if recall is not None:  # the highest threshold (fewest called) that still finds >= recall of the defects
        return [called for called, r in zip(cuts, recalls, strict=True) if r >= recall - 1e-12][-1]
    if alarms is not None:  # the lowest threshold (most called) that flags <= alarms of the good images
        return [called for called, a in zip(cuts, alarm_rates, strict=True) if a <= alarms + 1e-12][0]
    f1 = [2 * np.sum(c & labels) / (c.sum() + labels.sum()) for c in cuts]
    return cuts[max(range(len(cuts)), key=lambda i: (f1[i], i))]  # ties: the higher threshold


def _expected_warnings(called, labels) -> list[str]:
    """The degenerate conditions, as the start of each warning (the threshold's value follows)."""
    expected = []
    if called[~labels].all():
        expected.append(f"flags all {int((~labels).sum())} good calibration images as defective")
    if not called[labels].any():
        expected.append(f"misses all {int(labels.sum())} defective calibration images")
    return expected


CASES = [  # (defect folder, options, rule); the duplicates make every case but the last degenerate
    ("duplicates", [RECALL, "1"], "target_recall"),
    ("duplicates", [ALARMS, "0"], "max_false_alarm_rate"),
    ("duplicates", [], "f1_optimal"),
    ("real", [RECALL, "0.5"], "target_recall"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("defect", "options", "rule"), CASES)
def test_calibrate_warns_once_per_degenerate_threshold(trained_run, folders, defect, options, rule, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)  # calibrate rewrites best.pt and thresholds.json
    scores, labels = _scores(run, folders, defect, tmp_path)
    value = float(options[1]) if options else None
    called = _operating_point(scores, labels, recall=value if rule == "target_recall" else None,
                              alarms=value if rule == "max_false_alarm_rate" else None)
    expected = _expected_warnings(called, labels)
    if defect == "duplicates":  # the arrangement works: the good and defective scores are the same
        assert sorted(scores[labels]) == sorted(scores[~labels]) and expected
    capsys.readouterr()

    checkpoint = run / "best.pt"
    code = cli(["calibrate", "--checkpoint", str(checkpoint), "--test-good", str(folders / "good"),
                "--test-defect", str(folders / defect), "--device", "cpu", *options])
    captured = capsys.readouterr()
    assert code == 0, captured.err

    stored = json.loads((run / "thresholds.json").read_text())
    threshold = stored["image"]
    assert stored["source"] == "calibration" and stored["details"]["image_rule"] == rule
    if rule == "target_recall":
        assert stored["details"]["target_recall"] == value and f"recall >= {options[1]}" in stored["rule"]
    elif rule == "max_false_alarm_rate":
        assert stored["details"]["max_false_alarm_rate"] == value and f"rate <= {options[1]}" in stored["rule"]
    else:
        assert "F1-optimal" in stored["rule"]
    # The stored threshold calls exactly the images the brute-force operating point calls.
    np.testing.assert_array_equal(scores >= threshold, called)
    recall, alarm_rate = np.mean(called[labels]), np.mean(called[~labels])
    assert stored["details"]["image_recall"] == pytest.approx(recall)
    assert stored["details"]["image_false_alarm_rate"] == pytest.approx(alarm_rate)

    out_lines = captured.out.splitlines()
    assert out_lines[0].startswith(f"image threshold {threshold:.4f} ({rule}: precision ")
    assert f"recall {recall:.3f}, false-alarm rate {alarm_rate:.3f}" in out_lines[0]
    assert f"on {int((~labels).sum())} good + {int(labels.sum())} defective images)" in out_lines[0]
    assert out_lines[-1] == f"stored in {checkpoint} and {run / 'thresholds.json'}"

    # stderr: exactly the warning lines, one each (no progress bar off a terminal, no Python warning text).
    prefix = f"warning: calibrate {checkpoint}: the image threshold {threshold:.4f} "
    err_lines = captured.err.splitlines()
    assert len(err_lines) == len(expected) and captured.err.endswith("\n" if expected else ""), captured.err
    for line, condition in zip(err_lines, expected, strict=True):
        assert line.startswith(prefix + condition), line
    assert stored["details"]["warnings"] == [line.removeprefix(f"warning: calibrate {checkpoint}: ")
                                             for line in err_lines]


@pytest.mark.parametrize("terminal", [True, False])
def test_the_progress_bar_only_on_a_terminal(terminal, monkeypatch, tmp_path):
    """Off a terminal (a log, a pipe) the bar's redraws would run into the warning lines."""
    import io

    import memseg_lite.evaluation.evaluate as evaluate_module

    class Stderr(io.StringIO):
        def isatty(self) -> bool:
            return terminal

    seen = {}

    def fake_calibrate(checkpoint, *args, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop here: only the arguments matter

    monkeypatch.setattr(evaluate_module, "calibrate_checkpoint", fake_calibrate)
    monkeypatch.setattr("sys.stderr", Stderr())
    assert cli(["calibrate", "--checkpoint", str(tmp_path / "best.pt"), RECALL, "0.9"]) == 130
    assert seen["progress"] is terminal and seen["target_recall"] == 0.9
