"""Bad input and faults met through the command line: one clear line, nothing lost (issue 10).

Every case goes through ``memseg_lite.cli.main([...])`` (or a real ``memseg-lite`` process where
a signal or a second process is part of the case) and checks the exit code and the one error
line: ``memseg-lite COMMAND: error: ...`` naming the path, the cause and what to do. Exit codes:
0 done, 1 a user error (this one line), 2 a usage error (argparse), 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from memseg_lite.cli import main as cli
from memseg_lite.core.checkpoint import load_checkpoint
from memseg_lite.training.trainer import read_log

TINY = ["--image-size", "64", "--batch-size", "2", "--memory-size", "4", "--val-images", "2",
        "--backbone-weights", "none", "--no-progress"]


def train_args(data, out, *extra, steps=2):
    return ["train", "--data-root", str(data), "--category", "button", "--out", str(out), "--steps", str(steps),
            "--val-every", "1", *TINY, *extra]


def one_error_line(capsys, command: str) -> str:
    """The single ``memseg-lite COMMAND: error:`` line on stderr (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("memseg-lite")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"memseg-lite {command}: error: "), lines[0]
    assert "[Errno" not in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tiny_demo, tmp_path_factory):
    """A finished 2-step run (checkpoint.pt, best.pt, log.jsonl, config.json, split.json)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert cli(train_args(tiny_demo, run)) == 0
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def snapshot(folder: Path) -> dict[str, bytes]:
    """The run's files (not the hidden lock file, which stays after a run)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


# ---- 2. a folder with run artifacts is never overwritten without --resume / --restart ---------
@pytest.mark.parametrize("removed", [("checkpoint.pt",), (), ("checkpoint.pt", "best.pt", "split.json")])
def test_train_refuses_a_folder_holding_a_run(tiny_demo, run_copy, capsys, removed):
    for name in removed:
        (run_copy / name).unlink()
    before = snapshot(run_copy)
    assert cli(train_args(tiny_demo, run_copy)) == 1
    line = one_error_line(capsys, "train")
    for name in before:
        assert name in line, (name, line)
    assert "--restart" in line and "--resume" in line and str(run_copy) in line
    assert snapshot(run_copy) == before, "nothing was touched"


def test_restart_starts_over_and_keeps_other_files(tiny_demo, run_copy, capsys):
    (run_copy / "checkpoint.pt").unlink()
    (run_copy / "NOTES.txt").write_text("mine")
    old_config = json.loads((run_copy / "config.json").read_text())
    assert cli(train_args(tiny_demo, run_copy, "--restart", "--seed", "3")) == 0
    assert json.loads((run_copy / "config.json").read_text())["seed"] == 3 != old_config["seed"]
    assert [r["step"] for r in read_log(run_copy)[0]] == [1, 2]
    assert load_checkpoint(run_copy / "checkpoint.pt")["train_config"]["seed"] == 3
    assert (run_copy / "NOTES.txt").read_text() == "mine"


def test_resume_and_restart_together_is_an_error(tiny_demo, run_copy, capsys):
    assert cli(train_args(tiny_demo, run_copy, "--resume", "--restart")) == 1
    assert "--resume" in one_error_line(capsys, "train")


# ---- 3. one process per run folder --------------------------------------------------------------
@pytest.mark.slow
def test_second_train_on_the_same_folder_names_the_first_ones_pid(tiny_demo, tmp_path, capsys):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "memseg_lite.cli", *train_args(tiny_demo, run, steps=100000)]
    command[command.index("--val-every") + 1] = "100000"
    env = {**os.environ, "MEMSEG_OFFLINE": "1"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        log = run / "log.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and not (log.is_file() and log.read_text().strip()):
            assert first.poll() is None, first.communicate()
            time.sleep(0.2)
        for extra in ((), ("--resume",), ("--restart",)):
            assert cli(train_args(tiny_demo, run, *extra)) == 1
            line = one_error_line(capsys, "train")
            assert f"pid {first.pid}" in line and str(run) in line, line
    finally:
        first.terminate()
        out, err = first.communicate(timeout=120)
    assert first.returncode == 143, err
    steps = [r["step"] for r in read_log(run)[0]]
    assert steps == list(range(1, len(steps) + 1)), "one process wrote the log"


def test_the_run_lock_is_free_again_after_a_run(tiny_demo, run_copy, capsys):
    from memseg_lite.training.trainer import run_folder_lock

    with run_folder_lock(run_copy):
        pass  # no error: the finished run released it
    with run_folder_lock(run_copy):
        with pytest.raises(Exception, match=f"pid {os.getpid()}"):
            with run_folder_lock(run_copy):
                pass


# ---- 7. a mistyped --foreground is an error listing the valid values ----------------------------
@pytest.mark.parametrize("value", ["foo", "threshold", "Otsu"])
def test_unknown_foreground_lists_the_choices(tiny_demo, tmp_path, capsys, value):
    assert cli(train_args(tiny_demo, tmp_path / "run", "--foreground", value)) == 1
    line = one_error_line(capsys, "train")
    assert repr(value) in line and "'otsu'" in line and "'none'" in line and "button" in line, line
    assert not (tmp_path / "run").exists(), "nothing is started"


def test_known_foreground_values_still_train(tiny_demo, tmp_path):
    from memseg_lite.training.config import TrainConfig

    for value in ("otsu", "none", "button", "wood", "screw", None):
        TrainConfig(foreground=value)
    with pytest.raises(ValueError, match=r"foreground must be.*got 'foo'"):
        TrainConfig(foreground="foo")


def test_resolve_foreground_refuses_mode_lookalikes_and_keeps_unknown_categories():
    from memseg_lite.simulation.foreground import DEFAULT_FOREGROUND, NO_FOREGROUND, resolve_foreground

    for value in ("threshold", "Otsu", "None", "THRESHOLD"):
        with pytest.raises(ValueError, match=r"not a valid setting.*'otsu'.*button.*mode='threshold'"):
            resolve_foreground(value)
    assert resolve_foreground("otsu")[0] == DEFAULT_FOREGROUND and resolve_foreground("none")[0] == NO_FOREGROUND
    # a category of one's own (no entry in FOREGROUND_SETTINGS) still means Otsu, as documented
    settings, label = resolve_foreground("my_product")
    assert settings == DEFAULT_FOREGROUND and "not in FOREGROUND_SETTINGS" in label


# ---- 9. OS errors, a full disk, corrupt run files ------------------------------------------------
def _raise(error):
    def fail(*args, **kwargs):
        raise error

    return fail


OUTPUT_COMMANDS = {
    "demo-data": lambda out, ctx: ["demo-data", "--out", str(out), "--size", "64", "--train", "2"],
    "train": lambda out, ctx: train_args(ctx["data"], out),
    "evaluate": lambda out, ctx: ["evaluate", "--checkpoint", str(ctx["run"] / "best.pt"), "--data-root",
                                  str(ctx["data"]), "--category", "button", "--out", str(out)],
    "predict": lambda out, ctx: ["predict", str(ctx["image"]), "--checkpoint", str(ctx["run"] / "best.pt"),
                                 "--out", str(out)],
    "download": lambda out, ctx: ["download", "dtd", "--dest", str(out), "--archive", str(ctx["image"])],
    "reproduce": lambda out, ctx: ["reproduce", "--data-root", str(ctx["data"]), "--categories", "button",
                                   "--out", str(out), "--steps", "2"],
}


@pytest.fixture
def context(tiny_demo, finished_run):
    return {"data": tiny_demo, "run": finished_run,
            "image": sorted((tiny_demo / "button" / "test" / "dent").iterdir())[0]}


@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
@pytest.mark.parametrize("cause", [errno.EROFS, errno.EACCES])
def test_unwritable_output_folder_is_one_line_before_any_work(command, cause, context, tmp_path, capsys, monkeypatch):
    """A read-only file system (EROFS) or a folder without write permission (EACCES).

    Tests run as root here, where chmod does not stop writes, so the first write into the
    folder (the temporary file every atomic write starts with) is made to fail as the OS would.
    """
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", _raise(OSError(cause, os.strerror(cause), str(out / ".probe"))))
    assert cli(OUTPUT_COMMANDS[command](out, context)) == 1
    line = one_error_line(capsys, command)
    assert str(out) in line and ("read-only" in line if cause == errno.EROFS else "permission denied" in line), line
    assert list(out.iterdir()) == []


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="root ignores chmod; the EROFS/EACCES test above covers it"
)
def test_chmod_read_only_output_folder(context, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert cli(OUTPUT_COMMANDS["evaluate"](out / "evaluation", context)) == 1
        assert "permission denied" in one_error_line(capsys, "evaluate")
    finally:
        out.chmod(0o700)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/data/x/000.png"), "permission denied: /data/x/000.png"),
        (OSError(errno.ENOSPC, "No space left on device", "/data/x/000.png"), "no space left on device"),
        (OSError(errno.EROFS, "Read-only file system", "/data/x"), "read-only file system: /data/x"),
        (OSError(errno.EIO, "Input/output error", "/data/x/000.png"), "/data/x/000.png"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/x/000.png"), "/data/x/000.png"),
    ],
)
def test_os_errors_deep_inside_a_command_are_one_line(error, expected, tmp_path, capsys, monkeypatch):
    import memseg_lite.datasets.demo.writer as writer

    monkeypatch.setattr(writer, "write_demo_dataset", _raise(error))
    assert cli(["demo-data", "--out", str(tmp_path / "demo")]) == 1
    line = one_error_line(capsys, "demo-data")
    assert expected in line, line


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(how, tmp_path, capsys, monkeypatch):
    import memseg_lite.datasets.demo.writer as writer

    monkeypatch.setattr(writer, "write_demo_dataset", _raise(PermissionError(errno.EACCES, "Permission denied", "/x")))
    argv = ["demo-data", "--out", str(tmp_path / "demo")]
    if how == "flag":
        argv = ["--debug", *argv]
    else:
        monkeypatch.setenv("MEMSEG_DEBUG", "1")
    assert cli(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "memseg-lite demo-data: error: permission denied: /x" in err


def test_debug_after_the_subcommand_works_too(tmp_path, capsys, monkeypatch):
    import memseg_lite.datasets.demo.writer as writer

    monkeypatch.setattr(writer, "write_demo_dataset", _raise(PermissionError(errno.EACCES, "Permission denied", "/x")))
    assert cli(["demo-data", "--out", str(tmp_path / "demo"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error",
    [
        __import__("tarfile").ReadError("unexpected end of data"),
        EOFError("Compressed file ended before the end-of-stream marker was reached"),
        __import__("zipfile").BadZipFile("File is not a zip file"),
        __import__("pickle").UnpicklingError("invalid load key, 'x'."),
    ],
)
def test_archive_and_pickle_errors_are_one_line(error, tmp_path, capsys, monkeypatch):
    import memseg_lite.datasets.download as download

    archive = tmp_path / "dtd.tar.gz"
    archive.write_bytes(b"\x1f\x8b broken")
    monkeypatch.setattr(download, "download_dtd", _raise(error))
    assert cli(["download", "dtd", "--dest", str(tmp_path / "dtd"), "--archive", str(archive)]) == 1
    line = one_error_line(capsys, "download")
    assert str(error) in line and ("corrupt" in line or "truncated" in line), line


@pytest.mark.slow
def test_disk_full_while_saving_a_checkpoint(tiny_demo, tmp_path, capsys, monkeypatch):
    """torch.save on a full disk: the real torch error, provoked by writing to /dev/full."""
    import torch

    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    run = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:  # the first checkpoint is saved, the second meets a full disk
            return real_save(obj, "/dev/full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    argv = train_args(tiny_demo, run, "--checkpoint-every", "1", steps=3)
    argv[argv.index("--val-every") + 1] = "100"
    assert cli(argv) == 1
    line = one_error_line(capsys, "train")
    checkpoint = run / "checkpoint.pt"
    assert f"no space left on device while writing {checkpoint}" in line, line
    assert f"the previous checkpoint {checkpoint} is kept" in line and "--resume" in line, line
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(checkpoint)["step"] == 1, "the older checkpoint survives"
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")], "no temporary file left"
    assert cli([*argv, "--resume"]) == 0
    assert [r["step"] for r in read_log(run)[0]] == [1, 2, 3]


@pytest.mark.parametrize("existing", [False, True])
def test_save_checkpoint_on_a_full_disk_names_the_file_and_keeps_the_old_one(existing, tmp_path, monkeypatch):
    import torch

    from memseg_lite.core.checkpoint import CheckpointWriteError, save_checkpoint

    path = tmp_path / "checkpoint.pt"
    payload = {"model_config": {}, "model": {"w": torch.arange(4.0)}, "step": 1}
    if existing:
        save_checkpoint(payload, path)
    old = path.read_bytes() if existing else None

    def full(obj, f, *args, **kwargs):  # what a file object on a full disk answers
        with open(f, "wb") as handle:
            handle.write(b"PK")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointWriteError, match=f"no space left on device while writing {path}") as caught:
        save_checkpoint({**payload, "step": 2}, path)
    message = str(caught.value)
    if existing:
        assert f"the previous checkpoint {path} is kept" in message and "--resume" in message
        assert path.read_bytes() == old
    else:
        assert "no earlier checkpoint.pt existed" in message and not path.exists()
    assert [p.name for p in tmp_path.iterdir()] == (["checkpoint.pt"] if existing else [])
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="not a write failure"):  # other errors pass through unchanged
        monkeypatch.setattr(torch, "save", _raise(RuntimeError("not a write failure")))
        save_checkpoint(payload, path)


@pytest.mark.parametrize(
    ("name", "text"),
    [("config.json", "{not json"), ("config.json", "[1, 2]"), ("config.json", ""),
     ("split.json", "{not json"), ("split.json", "[1, 2]")],
)
def test_corrupt_run_files_on_resume(tiny_demo, run_copy, capsys, name, text):
    (run_copy / name).write_text(text)
    assert cli(["train", "--out", str(run_copy), "--resume", "--no-progress", "--data-root", str(tiny_demo)]) == 1
    line = one_error_line(capsys, "train")
    assert str(run_copy / name) in line and "--restart" in line, line


# ---- 10. --resume without a run; a truncated checkpoint -----------------------------------------
def test_resume_without_a_run_says_so_before_loading_data(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default data root data/demo does not exist here
    assert cli(["train", "--out", "runs/typo", "--resume", "--no-progress"]) == 1
    line = one_error_line(capsys, "train")
    assert "no run at runs/typo to resume" in line and "data root" not in line, line
    assert not Path("runs/typo").exists()


def test_resume_of_a_folder_without_checkpoint_suggests_restart(tiny_demo, run_copy, capsys):
    (run_copy / "checkpoint.pt").unlink()
    assert cli(["train", "--out", str(run_copy), "--resume", "--no-progress"]) == 1
    line = one_error_line(capsys, "train")
    assert "checkpoint.pt" in line and "--restart" in line, line


def test_truncated_checkpoint_then_restart(tiny_demo, run_copy, capsys):
    checkpoint = run_copy / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    assert cli(["train", "--out", str(run_copy), "--resume", "--no-progress", "--data-root", str(tiny_demo)]) == 1
    line = one_error_line(capsys, "train")
    assert str(checkpoint) in line and "truncated" in line and "--restart" in line, line
    assert cli(train_args(tiny_demo, run_copy)) == 1  # without a flag: refused, and says how
    assert "--restart" in one_error_line(capsys, "train")
    assert cli(train_args(tiny_demo, run_copy, "--restart")) == 0
    assert load_checkpoint(checkpoint)["step"] == 2


# ---- 11. --out that is a file; a data root that is a file ---------------------------------------
@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
def test_out_that_is_a_file(command, context, tmp_path, capsys, monkeypatch):
    import memseg_lite.evaluation.evaluate as evaluate

    monkeypatch.setattr(evaluate, "evaluate_checkpoint", _raise(AssertionError("the evaluation must not start")))
    target = tmp_path / "taken"
    target.write_text("a file")
    assert cli(OUTPUT_COMMANDS[command](target, context)) == 1
    line = one_error_line(capsys, command)
    assert f"{target} is a file, not a folder" in line, line
    assert target.read_text() == "a file"


def test_out_below_a_file(context, tmp_path, capsys, monkeypatch):
    target = tmp_path / "taken"
    target.write_text("a file")
    assert cli(OUTPUT_COMMANDS["evaluate"](target / "sub" / "evaluation", context)) == 1
    assert f"{target} is a file, not a folder" in one_error_line(capsys, "evaluate")


@pytest.mark.parametrize("command", ["train", "evaluate", "reproduce"])
def test_data_root_that_is_a_file(command, context, tmp_path, capsys):
    data = tmp_path / "data.zip"
    data.write_bytes(b"PK")
    argv = OUTPUT_COMMANDS[command](tmp_path / "out", {**context, "data": data})
    assert cli(argv) == 1
    line = one_error_line(capsys, command)
    assert f"{data} is a file, not a folder" in line, line


# ---- 12. SIGTERM saves like Ctrl-C -------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_saves_and_the_resumed_run_equals_an_uninterrupted_one(tiny_demo, tmp_path):
    def command(out):
        argv = train_args(tiny_demo, out, "--checkpoint-every", "1000", steps=16)
        argv[argv.index("--val-every") + 1] = "8"
        return [sys.executable, "-m", "memseg_lite.cli", *argv]

    env = {**os.environ, "MEMSEG_OFFLINE": "1"}
    run = tmp_path / "stopped"
    process = subprocess.Popen(command(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log = run / "log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "SIGTERM" in out and "continue with --resume" in out
    saved = load_checkpoint(run / "checkpoint.pt")["step"]
    assert 3 <= saved < 16 and len(read_log(run)[0]) == saved

    resumed = subprocess.run([*command(run), "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    whole = tmp_path / "whole"
    finished = subprocess.run(command(whole), capture_output=True, text=True, env=env, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert [r["loss"] for r in read_log(run)[0]] == [r["loss"] for r in read_log(whole)[0]]
    def timeless(records):  # the seconds a validation took differ between runs; every number else must not
        return [{k: v for k, v in record.items() if k != "seconds"} for record in records]

    assert timeless(read_log(run)[1]) == timeless(read_log(whole)[1]), "the same validation results"
    import torch

    a, b = load_checkpoint(run / "checkpoint.pt")["model"], load_checkpoint(whole / "checkpoint.pt")["model"]
    for name, tensor in a.items():
        torch.testing.assert_close(tensor, b[name], rtol=0, atol=0, msg=name)


# ---- cases that already worked: they must keep working ------------------------------------------
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["evaluate", "--checkpoint", "{tmp}/missing.pt", "--category", "button"], "does not exist"),
        (["train", "--data-root", "{tmp}/nowhere", "--out", "{tmp}/run", "--no-progress"], "does not exist"),
        (["train", "--data-root", "{data}", "--category", "nope", "--out", "{tmp}/run", "--no-progress"],
         "categories found there"),
        (["train", "--image-size", "100", "--out", "{tmp}/run", "--no-progress"], "multiple of 32"),
        (["download", "dtd", "--category", "bottle", "--dest", "{tmp}/dtd"], "--category only applies to mvtec"),
        (["predict", "{tmp}/missing.png", "--checkpoint", "{tmp}/missing.pt", "--out", "{tmp}/pred"], "missing"),
    ],
)
def test_cases_that_already_worked(argv, expected, tiny_demo, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, data=tiny_demo) for a in argv]
    assert cli(argv) == 1
    assert expected in one_error_line(capsys, argv[0])


def test_changed_settings_on_resume_still_refused(tiny_demo, run_copy, capsys):
    assert cli(["train", "--out", str(run_copy), "--resume", "--lr", "0.1", "--no-progress"]) == 1
    assert "lr: 0.003 -> 0.1" in one_error_line(capsys, "train")


# ---- sub-commands whose output is a file (export --out, grade --csv) ----------------------------
FILE_COMMANDS = {
    "export": lambda out, ctx: ["export", "--checkpoint", str(ctx["run"] / "best.pt"), "--out", str(out)],
    "grade": lambda out, ctx: ["grade", str(ctx["image"]), "--csv", str(out)],
}


@pytest.mark.parametrize("command", sorted(FILE_COMMANDS))
def test_output_file_options_are_checked_first(command, context, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert cli(FILE_COMMANDS[command](folder, context)) == 1
    assert f"{folder} is a folder, not a file" in one_error_line(capsys, command)
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert cli(FILE_COMMANDS[command](taken / "result.out", context)) == 1
    assert f"{taken} is a file, not a folder" in one_error_line(capsys, command)
    assert taken.read_text() == "a file"
    monkeypatch.setattr(tempfile, "mkstemp", _raise(OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))))
    assert cli(FILE_COMMANDS[command](folder / "result.out", context)) == 1
    assert f"read-only file system: {folder}" in one_error_line(capsys, command)


class _RunsCodeWhenLoaded:
    """Pickles as a call of ``os.system``: what a malicious checkpoint holds."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_malicious_checkpoint_is_refused_as_unsafe_in_one_short_line(tiny_demo, tmp_path, capsys):
    import torch

    marker = tmp_path / "code_ran"
    checkpoint = tmp_path / "evil.pt"
    torch.save({"format": "memseg-lite", "model_config": {}, "model": _RunsCodeWhenLoaded(f"touch {marker}")},
               checkpoint)
    image = next((tiny_demo / "button" / "test" / "good").iterdir())
    assert cli(["predict", str(image), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 1
    line = one_error_line(capsys, "predict")
    assert str(checkpoint) in line and "unsafe" in line
    assert "weights_only" not in line and "trusted source" not in line, "no advice to load it unsafely"
    assert len(line) < 300 and not marker.exists()


@pytest.mark.parametrize("option", [["--backbone-weights", "missing_weights.pt"], ["--seed", "-1"]])
def test_a_failed_option_check_leaves_no_run_folder(tiny_demo, tmp_path, capsys, option):
    """Before: an option refused once the run folder was locked left it behind, empty but for the lock file."""
    out = tmp_path / "new" / "run"
    argv = train_args(tiny_demo, out)
    index = argv.index("--backbone-weights")
    del argv[index : index + 2]
    if option[0] == "--backbone-weights":
        option = [option[0], str(tmp_path / option[1])]
    else:
        argv += ["--backbone-weights", "none"]
    assert cli([*argv, *option]) == 1
    one_error_line(capsys, "train")
    assert not (tmp_path / "new").exists(), sorted(p.name for p in (tmp_path / "new").rglob("*"))


def test_a_failed_run_keeps_a_folder_that_existed(tiny_demo, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = train_args(tiny_demo, out)
    argv[argv.index("--backbone-weights") + 1] = str(tmp_path / "missing_weights.pt")
    assert cli(argv) == 1
    one_error_line(capsys, "train")
    assert (out / "notes.txt").read_text() == "mine"


def _corrupt_png(path: Path) -> Path:
    """A PNG with a valid header whose image data is damaged: libpng prints its own error line for it."""
    import cv2
    import numpy as np

    data = bytearray(cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))[1].tobytes())
    start = data.find(b"IDAT") + 6
    data[start : start + 6] = b"\xff" * 6
    path.write_bytes(bytes(data))
    return path


@pytest.mark.slow
def test_unreadable_images_are_named_rightly_with_no_decoder_noise(context, tmp_path, capfd):
    """A float32 TIFF is valid (not "corrupt"); a damaged PNG's libpng line is folded into our one line."""
    import cv2
    import numpy as np

    floating = tmp_path / "depth.tiff"
    assert cv2.imwrite(str(floating), np.random.default_rng(0).random((32, 40, 3)).astype(np.float32))
    damaged = _corrupt_png(tmp_path / "damaged.png")
    code = cli(["predict", str(floating), str(damaged), str(context["image"]), "--checkpoint",
                str(context["run"] / "best.pt"), "--out", str(tmp_path / "out")])
    assert code == 3
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert not [line for line in lines if not line.startswith("memseg-lite predict: skipped")], err
    tiff_line, png_line = lines
    assert str(floating) in tiff_line and "float32" in tiff_line and "corrupt" not in tiff_line
    assert str(damaged) in png_line and "cannot decode" in png_line and "IDAT" in png_line


def test_a_binary_simulation_file_is_named(tiny_demo, tmp_path, capsys):
    settings = tmp_path / "settings.json"
    settings.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    assert cli([*train_args(tiny_demo, tmp_path / "run"), "--simulation", str(settings)]) == 1
    line = one_error_line(capsys, "train")
    assert str(settings) in line and "not a text file" in line and "codec" not in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("seed", ["-1", "-20"])
def test_an_out_of_range_seed_names_the_option(tiny_demo, tmp_path, capsys, seed):
    assert cli([*train_args(tiny_demo, tmp_path / "run"), "--seed", seed]) == 1
    line = one_error_line(capsys, "train")
    assert "--seed" in line and seed in line
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not Path("/proc/sys").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", ["train", "predict"])
def test_out_in_a_folder_that_takes_no_files_is_not_called_missing(command, tiny_demo, tmp_path, capsys):
    argv = (train_args(tiny_demo, "/proc/sys/memseg-run") if command == "train" else
            ["predict", str(tiny_demo), "--checkpoint", str(tmp_path / "none.pt"), "--out", "/proc/sys/memseg-run"])
    assert cli(argv) == 1
    line = one_error_line(capsys, command)
    assert "/proc/sys" in line and "does not exist" not in line and "no such file" not in line.lower()
    assert "cannot be created" in line


@pytest.mark.slow
def test_disk_full_at_the_first_checkpoint_says_to_restart(tiny_demo, tmp_path, capsys, monkeypatch):
    """Before: "run again", which is then refused (the folder holds config.json, log.jsonl, ...)."""
    import torch

    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    run = tmp_path / "run"
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *args, **kwargs: real_save(obj, "/dev/full"))
    argv = train_args(tiny_demo, run, "--checkpoint-every", "1", steps=2)
    argv[argv.index("--val-every") + 1] = "100"
    assert cli(argv) == 1
    line = one_error_line(capsys, "train")
    assert "no space left on device" in line and "--restart" in line, line
    monkeypatch.setattr(torch, "save", real_save)
    assert cli(argv) == 1, "a plain re-run is refused, so the message must not suggest it"
    capsys.readouterr()
    assert cli([*argv, "--restart"]) == 0


@pytest.mark.slow
def test_resume_with_another_memory_size_names_the_option_not_the_files(tiny_demo, run_copy, capsys):
    """Before: "files were added, removed or renamed" (the memory size changes the split too)."""
    argv = train_args(tiny_demo, run_copy, "--resume")
    argv[argv.index("--memory-size") + 1] = "5"
    before = snapshot(run_copy)
    assert cli(argv) == 1
    line = one_error_line(capsys, "train")
    assert "memory_size: 4 -> 5" in line and "renamed" not in line
    assert snapshot(run_copy) == before
