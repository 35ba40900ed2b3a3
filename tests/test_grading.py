"""``memseg-lite grade``: students' notebooks executed in a throwaway copy, graded by the hidden tests.

The sample notebooks are built here with nbformat from chapter 00's real exercises: correct,
wrong and missing answers, a forged pass line, a self-check replaced by ``lambda: None``, a
notebook that crashes part-way and one that is not a notebook at all.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nbformat
import pytest

from memseg_lite.cli import main
from memseg_lite.teaching.grading import (
    FAILED,
    NOT_ATTEMPTED,
    PASSED,
    chapter_of,
    default_tests_folder,
    grade_notebook,
    grade_notebooks,
    gradebook,
    hidden_exercises,
    load_hidden_tests,
    student_names,
)

ROOT = Path(__file__).resolve().parents[1]
SETUP = "from memseg_lite.teaching.checks import ch00\nfrom memseg_lite.teaching.exercises import check"
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
# Cheats: the pass line printed by hand, and a self-check that checks nothing.
FORGED_PRINT = '''
def defective_pixel_fraction(data_root, category):
    return 0.5


print("[ok] Exercise 1 · defective pixels: passed.")
'''
EMPTY_CHECK = '''
def blended_values():
    return 0.0, 0.0


check("Exercise 3 · the blend", lambda: None);
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


def statuses(grade) -> dict[int, tuple[str, float]]:
    return {result.number: (result.status, result.points) for result in grade.exercises}


def test_the_hidden_tests_cover_every_chapter_with_exercises():
    tests = default_tests_folder()
    assert tests == ROOT / "instructor" / "hidden_tests"
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        chapter = notebook.name[:2]
        stubs = notebook.read_text(encoding="utf-8").count("raise NotImplementedError")
        if stubs:
            assert len(hidden_exercises(load_hidden_tests(tests, chapter))) >= 2, chapter
    assert hidden_exercises(load_hidden_tests(tests, "00")) == {1: 1.0, 2: 1.0, 3: 1.0}


def test_chapter_and_student_names(tmp_path):
    assert chapter_of({"metadata": {"memseg_lite": {"chapter": "04"}}}, Path("homework.ipynb")) == "04"
    assert chapter_of({}, Path("alice_01_perlin_noise.ipynb")) == "01"
    assert chapter_of({}, Path("homework.ipynb")) is None
    one = [
        tmp_path / "alice" / "00_overview.ipynb",
        tmp_path / "bob" / "00_overview.ipynb",
        tmp_path / "bob" / "01_perlin_noise.ipynb",
    ]
    assert student_names(one) == ["alice", "bob", "bob"]
    flat = [tmp_path / "inbox" / "alice_00_overview.ipynb", tmp_path / "inbox" / "bob_00_overview.ipynb"]
    assert student_names(flat) == ["alice_00_overview", "bob_00_overview"]


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
    unnamed = student_notebook(tmp_path / "ok", CORRECT_BLEND, name="homework.ipynb")
    with pytest.raises(ValueError, match="which chapter"):
        grade_notebook(unnamed)
    assert main(["grade", str(student), "--tests", str(tmp_path / "no-tests")]) == 1
    with pytest.raises(SystemExit):
        main(["grade", str(student), "--track", "core"])  # worked or assignment
    with pytest.raises(ValueError, match="track"):
        grade_notebooks([student], track="core")


def test_a_batch_gives_unreadable_notebooks_an_error_row_without_running_anything(tmp_path):
    (tmp_path / "carol").mkdir()
    (tmp_path / "carol" / "00_overview.ipynb").write_text("{not json")
    grades = grade_notebooks([tmp_path / "carol" / "00_overview.ipynb", tmp_path / "dave" / "00_overview.ipynb"])
    assert [(g.student, g.error is not None) for g in grades] == [("carol", True), ("dave", True)]
    assert "not a readable notebook" in grades[0].error and "not found" in grades[1].error
    header, rows = gradebook(grades)
    assert header == ["student", "total", "out of", "status"]
    assert [row[0] for row in rows] == ["carol", "dave"] and all(row[1] == "0" for row in rows)


@pytest.mark.slow
def test_forged_prints_and_empty_checks_earn_nothing_and_a_batch_survives_a_bad_notebook(tmp_path, capsys):
    honest = student_notebook(tmp_path / "alice", CORRECT_BLEND, WRONG_OBJECT_FRACTION, MISSING_PIXELS)
    cheat = student_notebook(tmp_path / "bob", FORGED_PRINT, EMPTY_CHECK)
    crashed = student_notebook(tmp_path / "erin", CORRECT_BLEND, "1 / 0", WRONG_OBJECT_FRACTION)
    (tmp_path / "carol").mkdir()
    (tmp_path / "carol" / "00_overview.ipynb").write_text('{"cells": "no list"}')
    table_csv = tmp_path / "grades" / "grades.csv"
    assert main(["grade", str(honest), str(cheat), str(tmp_path / "carol" / "00_overview.ipynb"), str(crashed),
                 "--csv", str(table_csv), "--timeout", "120"]) == 0
    printed = capsys.readouterr().out

    with table_csv.open(newline="") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["alice", "bob", "carol", "erin"]
    columns = ("00.1", "00.2", "00.3", "total", "out of", "status")
    assert [rows["alice"][c] for c in columns] == ["0", "0", "1", "1", "3", "ok"]
    # The forged "[ok]" line and check(..., lambda: None) are ignored: the hidden tests fail both answers.
    assert [rows["bob"][c] for c in ("00.1", "00.2", "00.3", "total")] == ["0", "0", "0", "0"]
    assert rows["carol"]["total"] == "0" and "not a Jupyter notebook" in rows["carol"]["status"]
    # The crash is reported, and the cells after it still ran: the blend before it and the fraction after it are graded.
    assert rows["erin"]["00.3"] == "1" and "error in cell 4: ZeroDivisionError" in rows["erin"]["status"]
    table = printed.splitlines()
    assert table[0].split() == ["student", "00.1", "00.2", "00.3", "total", "out", "of", "status"]
    assert table[2].split()[:5] == ["alice", "0", "0", "1", "1"]
    assert "bob 00.1: failed" in printed and "bob 00.2: not attempted: object_fraction not defined" in printed
    assert "alice 00.2: failed" in printed and "dim disc on a dark background" in printed

    grades = grade_notebooks([cheat], timeout=120)
    assert statuses(grades[0]) == {1: (FAILED, 0.0), 2: (NOT_ATTEMPTED, 0.0), 3: (FAILED, 0.0)}


@pytest.mark.slow
def test_two_students_two_rows_with_points(tmp_path):
    first = student_notebook(tmp_path / "alice", CORRECT_BLEND)
    second = student_notebook(tmp_path / "bob", CORRECT_BLEND, MISSING_PIXELS)
    grades = grade_notebooks([first, second], timeout=120)
    header, rows = gradebook(grades)
    assert header == ["student", "00.1", "00.2", "00.3", "total", "out of", "status"]
    assert rows == [["alice", "0", "0", "1", "1", "3", "ok"], ["bob", "0", "0", "1", "1", "3", "ok"]]
    assert statuses(grades[1])[1] == (NOT_ATTEMPTED, 0.0) and statuses(grades[1])[3] == (PASSED, 1.0)


@pytest.mark.slow
def test_grade_runs_in_a_throwaway_copy_with_a_scrubbed_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADER_SECRET_TOKEN", "do-not-leak")
    report = tmp_path / "seen.txt"
    probe = f'''
import os, subprocess
from pathlib import Path
Path("left-behind.txt").write_text("in the working copy")
child = subprocess.Popen(["sleep", "300"])
Path({str(report)!r}).write_text("\\n".join([
    os.environ.get("GRADER_SECRET_TOKEN", "-"), os.environ["HOME"], os.getcwd(), os.environ["MEMSEG_PROFILE"],
    os.environ["MEMSEG_OFFLINE"], repr(os.environ["CUDA_VISIBLE_DEVICES"]), str(Path("../data/demo").is_dir()),
    str(child.pid)]))
'''
    student = student_notebook(tmp_path / "frank", CORRECT_BLEND, probe)
    grade = grade_notebook(student, timeout=120, profile="demo")
    assert statuses(grade)[3] == (PASSED, 1.0)
    secret, home, cwd, profile, offline, gpus, has_data, pid = report.read_text().splitlines()
    assert secret == "-" and home != os.environ.get("HOME") and Path(home).name == "home"
    assert Path(cwd) != student.parent and not Path(cwd).exists()  # the throwaway copy is gone
    assert not (student.parent / "left-behind.txt").exists()
    assert (profile, offline, gpus, has_data) == ("demo", "1", "''", "True")
    status = Path(f"/proc/{pid}/status")  # the background process went with the kernel's process group
    assert not status.exists() or "zombie" in status.read_text()


@pytest.mark.slow
def test_grade_stops_the_students_cells_at_the_time_limit_and_still_grades(tmp_path):
    slow = student_notebook(tmp_path / "grace", CORRECT_BLEND, "import time\ntime.sleep(60)", WRONG_OBJECT_FRACTION)
    grade = grade_notebook(slow, timeout=15)
    assert grade.seconds < 50
    assert grade.error == "time limit reached" and grade.error_cell == 4
    assert statuses(grade) == {1: (NOT_ATTEMPTED, 0.0), 2: (NOT_ATTEMPTED, 0.0), 3: (PASSED, 1.0)}


# The assignment track: chapter 01's core pieces, written by the student and guarded by use_core.
CORE_SETUP = '''
import numpy as np
from memseg_lite.simulation import perlin
from memseg_lite.teaching.exercises import use_core
probe = (np.linspace(0, 3.9, 7)[:, None], np.linspace(0, 2.9, 5)[None, :],
         perlin.random_gradients((5, 4), np.random.default_rng(1)))
'''
CORRECT_FADE = '''
def my_fade(t):
    return t**3 * (10 - 15 * t + 6 * t**2)


my_fade = use_core(my_fade, perlin.fade, np.linspace(0, 1, 11))
'''
WRONG_PERLIN = '''
def my_perlin_at(u, v, gradients):
    return 0.5 * perlin.perlin_at(u, v, gradients)  # half the amplitude: wrong


my_perlin_at = use_core(my_perlin_at, perlin.perlin_at, *probe)
'''
MISSING_PERLIN = '''
def my_perlin_at(u, v, gradients):
    raise NotImplementedError


my_perlin_at = use_core(my_perlin_at, perlin.perlin_at, *probe)
'''
# A later cell that needs the core: it runs on the fallback and writes what it saw.
USES_THE_CORE = '''
noise = my_perlin_at(*probe)
assert np.allclose(noise, perlin.perlin_at(*probe)), "the later cells must run on a correct core"
print("later cell ran:", noise.shape)
'''


@pytest.mark.slow
def test_the_assignment_track_grades_the_students_core_and_the_notebook_runs_on_the_fallback(tmp_path):
    good = student_notebook(tmp_path / "alice", CORE_SETUP, CORRECT_FADE, WRONG_PERLIN, USES_THE_CORE,
                            name="01_perlin_noise_assignment.ipynb")
    empty = student_notebook(tmp_path / "bob", CORE_SETUP, MISSING_PERLIN, USES_THE_CORE,
                             name="01_perlin_noise_assignment.ipynb")
    grades = grade_notebooks([good, empty], timeout=120, track="assignment")
    assert [g.error for g in grades] == [None, None]  # the later cell ran in both: no error
    core = [{r.number: (r.status, r.points) for r in g.exercises if r.kind == "core"} for g in grades]
    assert core[0] == {1: (PASSED, 1.0), 2: (FAILED, 0.0)}  # the wrong core is graded, not the fallback
    assert core[1] == {1: (NOT_ATTEMPTED, 0.0), 2: (NOT_ATTEMPTED, 0.0)}
    header, rows = gradebook(grades)
    assert header == ["student", "01.1", "01.2", "01.3", "01.c1", "01.c2", "total", "out of", "status"]
    assert rows[0][4:] == ["1", "0", "1", "6", "ok"] and rows[1][4:] == ["0", "0", "0", "6", "ok"]
    worked = grade_notebook(good, timeout=120)  # the worked track grades the exercises only
    assert {r.kind for r in worked.exercises} == {"exercise"}
    with pytest.raises(ValueError, match="track"):
        grade_notebook(good, track="core")


def core_tests(chapter):
    return load_hidden_tests(default_tests_folder(), chapter)


def test_the_core_hidden_tests_pass_the_package_and_fail_wrong_cores():
    import numpy as np

    from memseg_lite.evaluation.metrics import pro_curve
    from memseg_lite.network.attention import CoordinateAttention, spatial_attention_maps
    from memseg_lite.network.losses import focal_loss
    from memseg_lite.network.memory import memory_distances
    from memseg_lite.simulation import perlin
    from memseg_lite.simulation.foreground import otsu_between_class_variance

    def otsu(grey):
        curve = otsu_between_class_variance(grey)
        return int(np.argmax(curve)), curve

    right = {("01", 1): perlin.fade, ("01", 2): perlin.perlin_at, ("02", 1): otsu, ("04", 1): memory_distances,
             ("05", 1): spatial_attention_maps, ("06", 1): CoordinateAttention.gates, ("07", 1): focal_loss,
             ("09", 1): pro_curve}
    wrong = {("01", 1): lambda t: 3 * t**2 - 2 * t**3,  # smoothstep, not the quintic fade
             ("01", 2): lambda u, v, g: perlin.perlin_at(np.clip(u, 0, 4.5), v, g),
             ("02", 1): lambda grey: (int(grey.mean()), otsu_between_class_variance(grey)),  # the mean threshold
             ("04", 1): lambda features, memory: memory_distances(features, memory, rule="tootouch"),  # squared
             ("05", 1): lambda means: list(means),  # the channel means, without the cascade
             ("06", 1): lambda module, x: module.gates(x)[::-1],  # the gates swapped
             ("07", 1): lambda logits, target, gamma: focal_loss(logits, target, gamma + 1),
             ("09", 1): lambda maps, masks: pro_curve(maps, masks, max_points=10)}
    for (chapter, number), function in right.items():
        getattr(core_tests(chapter), f"core_{number}")(function)
    for (chapter, number), function in wrong.items():
        with pytest.raises(AssertionError):
            getattr(core_tests(chapter), f"core_{number}")(function)
    assert {c: hidden_exercises(core_tests(c), "core") for c in ("01", "02", "04", "05", "06", "07", "09")} == {
        "01": {1: 1.0, 2: 2.0}, "02": {1: 2.0}, "04": {1: 2.0}, "05": {1: 2.0}, "06": {1: 2.0}, "07": {1: 2.0},
        "09": {1: 2.0}}


def test_use_core_keeps_a_right_core_and_falls_back_with_a_warning(capsys):
    import numpy as np

    from memseg_lite.simulation import perlin
    from memseg_lite.teaching.exercises import use_core

    def my_fade(t):
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    def wrong_fade(t):
        return t

    def missing_fade(t):
        raise NotImplementedError

    probe = np.linspace(0, 1, 11)
    assert use_core(my_fade, perlin.fade, probe) is my_fade
    for student in (wrong_fade, missing_fade):
        guarded = use_core(student, perlin.fade, probe)
        assert guarded is not student and guarded.__memseg_student__ is student
        assert np.array_equal(guarded(probe), perlin.fade(probe))
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("[ok] core · my_fade")
    assert "wrong_fade gives another result" in printed[1] and "missing_fade is not written yet" in printed[2]
    assert use_core(lambda t: (t, t), lambda t: (t, 2 * t), probe).__memseg_student__  # tuples compared item by item


@pytest.mark.slow
def test_a_real_assignment_chapter_grades_the_core_and_runs_to_the_end_whatever_the_core(tmp_path):
    import json

    assignment = ROOT / "assignments" / "02_foreground_masks_assignment.ipynb"
    stub = "    raise NotImplementedError"
    answers = {"alice": '''    p = np.bincount(grey.ravel(), minlength=256) / grey.size
    omega, mu = np.cumsum(p), np.cumsum(np.arange(256) * p)
    between = np.zeros(256)
    valid = omega * (1 - omega) > 1e-12
    between[valid] = (mu[-1] * omega[valid] - mu[valid]) ** 2 / (omega[valid] * (1 - omega[valid]))
    return int(np.argmax(between)), between''',
               "bob": "    return int(grey.mean()), np.ones(256)",  # the mean threshold: wrong
               "carol": stub}  # not written
    paths = []
    for student, answer in answers.items():
        notebook = json.loads(assignment.read_text(encoding="utf-8"))
        cell = next(c for c in notebook["cells"] if "def my_otsu(" in "".join(c["source"]))
        text = "".join(cell["source"])
        assert text.count(stub) == 1
        cell["source"] = text.replace(stub, answer)
        (tmp_path / student).mkdir()
        paths.append(tmp_path / student / assignment.name)
        paths[-1].write_text(json.dumps(notebook), encoding="utf-8")
    grades = grade_notebooks(paths, timeout=300, track="assignment")
    assert [grade.error for grade in grades] == [None, None, None]  # every cell ran, also on the fallback
    core = [next(r for r in grade.exercises if r.kind == "core") for grade in grades]
    assert [(r.status, r.points) for r in core] == [(PASSED, 2.0), (FAILED, 0.0), (NOT_ATTEMPTED, 0.0)]
