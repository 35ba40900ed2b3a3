"""``memseg-lite grade``: students' notebooks executed with papermill, their self-check lines tabulated.

The sample notebooks are built here with nbformat from chapter 00's and 01's real exercises
(memseg_lite.teaching.checks): some answers correct, some wrong, some missing, and a notebook
that crashes part-way.
"""

from __future__ import annotations

import csv
from pathlib import Path

import nbformat
import pytest

from memseg_lite.cli import main
from memseg_lite.teaching.exercises import check
from memseg_lite.teaching.grading import (
    FAILED, NOT_ATTEMPTED, NOT_RUN, PASSED, expected_exercises, grade_notebook, parse_check_lines,
)

SETUP = "from memseg_lite.teaching.checks import ch00, ch01\nfrom memseg_lite.teaching.exercises import check"
CORRECT_BLEND = '''
def blended_values():
    return 0.75 * 0.8 + 0.25 * 0.2, 0.8


check("Exercise 3 · the blend", lambda: ch00.exercise_3(blended_values));
'''
WRONG_OBJECT_FRACTION = '''
import cv2


def object_fraction(image):
    return float((cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) > 128).mean())  # a fixed threshold: wrong


check("Exercise 2 · object fraction", lambda: ch00.exercise_2(object_fraction));
'''
MISSING_PIXELS = '''
def defective_pixel_fraction(data_root, category):
    raise NotImplementedError


check("Exercise 1 · defective pixels", lambda: ch00.exercise_1(defective_pixel_fraction, "."));
'''


def student_notebook(folder: Path, *cells: str, name: str = "00_overview.ipynb") -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_markdown_cell("# A student's notebook")]
    notebook.cells += [nbformat.v4.new_code_cell(source.strip()) for source in (SETUP, *cells)]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(notebook, path)
    return path


def test_parse_check_lines_reads_the_three_formats(capsys):
    check("Exercise 1 · a", lambda: None)
    check("Exercise 2 · b", lambda: (_ for _ in ()).throw(AssertionError("shape (3,), expected (4,)")))
    check("Exercise 3 · c", lambda: (_ for _ in ()).throw(NotImplementedError()))
    printed = "some other output\n" + capsys.readouterr().out + "[ok] Exercise 2 · b: passed.\n"  # re-run: the last counts
    results = parse_check_lines(printed)
    assert [(r.name, r.status) for r in results] == [
        ("Exercise 1 · a", PASSED), ("Exercise 3 · c", NOT_ATTEMPTED), ("Exercise 2 · b", PASSED)]
    (failed,) = parse_check_lines("[x] Exercise 2 · b: not solved yet: shape (3,), expected (4,)")
    assert failed.status == FAILED and failed.reason == "shape (3,), expected (4,)"


def test_expected_exercises_come_from_the_checks_package():
    assert expected_exercises("notebooks/00_overview.ipynb") == [1, 2, 3]
    assert expected_exercises("homework.ipynb") == []


def test_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ipynb"):
        grade_notebook(tmp_path / "missing.ipynb")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a notebook"):
        grade_notebook(tmp_path / "notes.txt")
    (tmp_path / "broken.ipynb").write_text("{not json")
    with pytest.raises(ValueError, match="broken.ipynb"):
        grade_notebook(tmp_path / "broken.ipynb")
    student = student_notebook(tmp_path / "ok", CORRECT_BLEND)
    with pytest.raises(ValueError, match="profile"):
        grade_notebook(student, profile="huge")
    assert main(["grade", str(tmp_path / "missing.ipynb")]) == 1


def test_without_papermill_the_command_says_what_to_install(tmp_path, monkeypatch, capsys):
    import sys

    from memseg_lite.teaching.grading import GradingUnavailableError

    student = student_notebook(tmp_path / "dave", CORRECT_BLEND)
    monkeypatch.setitem(sys.modules, "papermill", None)  # import papermill now raises ImportError
    with pytest.raises(GradingUnavailableError, match=r"memseg-lite\[workbook\]"):
        grade_notebook(student)
    assert main(["grade", str(student)]) == 1
    assert "pip install 'memseg-lite[workbook]'" in capsys.readouterr().err


@pytest.mark.slow
def test_grade_a_mixed_notebook_and_a_crashed_one(tmp_path, capsys):
    mixed = student_notebook(tmp_path / "alice", CORRECT_BLEND, WRONG_OBJECT_FRACTION, MISSING_PIXELS,
                             "def fade_derivatives(t):\n    return 30 * t**2 * (t - 1) ** 2, 60 * t * (t - 1) * (2 * t - 1)\n\n"
                             "check('Exercise 1 · fade derivatives', lambda: ch01.exercise_1(fade_derivatives));",
                             name="00_overview.ipynb")
    crashed = student_notebook(tmp_path / "bob", CORRECT_BLEND, "import os\nprint(os.environ['MEMSEG_PROFILE'], os.getcwd())\n1 / 0",
                               WRONG_OBJECT_FRACTION)
    table_csv = tmp_path / "grades" / "grades.csv"
    assert main(["grade", str(mixed), str(crashed), "--csv", str(table_csv), "--timeout", "120"]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = [line for line in table if line.startswith("00_overview.ipynb")]
    assert len(rows) == 2
    assert rows[0].split()[1:4] == ["2", "1", "1"] and rows[0].endswith("ok")  # passed, failed, not attempted
    assert "3:ok" in rows[0] and "2:x" in rows[0] and "1:-" in rows[0]
    assert rows[1].split()[1:4] == ["1", "0", "2"]  # the blend passed; exercises 1 and 2 never ran
    assert "error in cell 4: ZeroDivisionError: division by zero" in rows[1]

    with table_csv.open(newline="") as handle:
        records = [(Path(r["notebook"]).parent.name, r["exercise"], r["status"], r["reason"]) for r in csv.DictReader(handle)]
    assert records[:4] == [
        ("alice", "Exercise 3 · the blend", PASSED, ""),
        ("alice", "Exercise 2 · object fraction", FAILED, records[1][3]),
        ("alice", "Exercise 1 · defective pixels", NOT_ATTEMPTED, ""),
        ("alice", "Exercise 1 · fade derivatives", PASSED, ""),
    ]
    assert "dim disc on a dark background" in records[1][3]
    assert records[4:] == [
        ("bob", "Exercise 3 · the blend", PASSED, ""),
        ("bob", "Exercise 1", NOT_RUN, ""),
        ("bob", "Exercise 2", NOT_RUN, ""),
        ("bob", "cell 4", "error", "ZeroDivisionError: division by zero"),
    ]


@pytest.mark.slow
def test_grade_runs_offline_in_the_notebooks_folder_within_the_time_limit(tmp_path):
    probe = '''
import os, time
from pathlib import Path
Path("env.txt").write_text(os.environ["MEMSEG_PROFILE"] + " " + os.environ["MEMSEG_OFFLINE"] + " " + repr(os.environ["CUDA_VISIBLE_DEVICES"]))
'''
    slow = student_notebook(tmp_path / "carol", CORRECT_BLEND, probe, "time.sleep(60)", WRONG_OBJECT_FRACTION)
    grade = grade_notebook(slow, timeout=20, profile="demo")
    assert (tmp_path / "carol" / "env.txt").read_text() == "demo 1 ''"  # cwd = the notebook's folder; CPU only
    assert grade.seconds < 50
    assert grade.error == "time limit reached" and grade.error_cell == 5
    assert [(r.name, r.status) for r in grade.exercises] == [
        ("Exercise 3 · the blend", PASSED), ("Exercise 1", NOT_RUN), ("Exercise 2", NOT_RUN)]
