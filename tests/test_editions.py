"""One source per chapter (instructor/source): the committed editions are what it generates, and the
student edition and the handout hold no solution text."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from memseg_lite.cli import main
from memseg_lite.teaching.editions import MARKERS, build, edition, resolve_regions
from memseg_lite.teaching.handout import handout_files, write_handout

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "instructor" / "source").glob("[0-9][0-9]_*.ipynb"))
EXERCISE = '''def f(t):
    """Doc."""
    # BEGIN SOLUTION
    return 2 * t
    # END SOLUTION
    # BEGIN STUDENT
    raise NotImplementedError


check("Exercise 1", lambda: ch.exercise_1(f));
    # END STUDENT'''


def solution_lines(source: dict) -> set[str]:
    """The distinctive lines of every solution region: long, and not also in the chapter's shared cells."""
    lines, shared = set(), set()
    for cell in source["cells"]:
        text = "".join(cell["source"])
        if not any(line.strip() in MARKERS for line in text.splitlines()):
            shared |= {line.strip() for line in text.splitlines()}
            continue
        student = set(resolve_regions(text, "student").splitlines())
        lines |= {
            line.strip()
            for line in resolve_regions(text, "solutions").splitlines()
            if len(line.strip()) >= 24
            and line not in student
            and not line.strip().startswith(("#", '"""', "from ", "import "))
        }
    return lines - shared


def notebook_lines(text: str) -> set[str]:
    """Every line of every cell of a notebook (given as its JSON text), stripped."""
    return {line.strip() for cell in json.loads(text)["cells"] for line in "".join(cell["source"]).splitlines()}


def test_regions_go_to_their_edition():
    assert resolve_regions(EXERCISE, "solutions") == 'def f(t):\n    """Doc."""\n    return 2 * t'
    assert resolve_regions(EXERCISE, "student") == (
        'def f(t):\n    """Doc."""\n    raise NotImplementedError\n\n\ncheck("Exercise 1", lambda: ch.exercise_1(f));')
    assert resolve_regions("x = 1\n# BEGIN SOLUTION\ny = 2\n# END SOLUTION\nz = 3", "student") == "x = 1\nz = 3"
    with pytest.raises(ValueError, match="never closed"):
        resolve_regions("# BEGIN SOLUTION\nx = 1", "student")
    with pytest.raises(ValueError, match="inside a solution region"):
        resolve_regions("# BEGIN SOLUTION\n# BEGIN STUDENT\n# END STUDENT\n# END SOLUTION", "student")
    with pytest.raises(ValueError, match="without its BEGIN"):
        resolve_regions("x = 1\n# END STUDENT", "solutions")


def test_cells_are_routed_and_tagged_per_edition():
    source = {
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
        "cells": [
            {"cell_type": "markdown", "id": "0", "metadata": {}, "source": ["For everyone"]},
            {
                "cell_type": "markdown",
                "id": "1",
                "metadata": {"tags": ["solutions-edition"]},
                "source": ["Worked solution"],
            },
            {
                "cell_type": "code",
                "id": "2",
                "metadata": {"tags": ["solution"]},
                "source": EXERCISE,
                "outputs": [],
                "execution_count": None,
            },
        ],
    }
    student, solutions = edition(source, "student", "01_x.ipynb"), edition(source, "solutions", "01_x.ipynb")
    assert ["".join(c["source"])[:10] for c in student["cells"]] == ["For everyo", "def f(t):\n"]
    assert student["cells"][1]["metadata"] == {} and student["metadata"]["memseg_lite"] == {"chapter": "01"}
    assert ["".join(c["source"])[:10] for c in solutions["cells"]] == ["Worked sol", "def f(t):\n"]
    assert solutions["cells"][1]["metadata"] == {"tags": ["solution"]} and "memseg_lite" not in solutions["metadata"]
    assert [c["id"] for c in solutions["cells"]] == ["0", "1"]


def test_the_committed_editions_are_what_the_sources_generate():
    assert len(SOURCES) == 12
    assert build(ROOT, check=True) == [], "edit instructor/source/ and run `make editions`"


def test_student_editions_hold_no_solution_text():
    for source_path in SOURCES:
        source = json.loads(source_path.read_text(encoding="utf-8"))
        lines = solution_lines(source)
        assert lines, f"{source_path.name} has no solution region"
        leaked = lines & notebook_lines((ROOT / "notebooks" / source_path.name).read_text(encoding="utf-8"))
        assert not leaked, f"{source_path.name}: solution lines in the student edition: {leaked[:3]}"


def test_the_handout_has_no_solutions_instructor_files_or_tests(tmp_path):
    out = tmp_path / "handout.zip"
    assert main(["handout", "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        texts = {name: archive.read(name).decode("utf-8", errors="replace") for name in names}
    top = {name.split("/")[1] for name in names}
    assert {"notebooks", "memseg_lite", "pyproject.toml", "Makefile"} <= top
    assert not top & {"solutions", "instructor", "tests", "benchmarks"}
    assert "memseg-lite/docs/instructor.md" not in names and "memseg-lite/docs/grading.md" not in names
    assert sum(name.endswith(".ipynb") for name in names) == 12
    for source_path in SOURCES:
        text = texts[f"memseg-lite/notebooks/{source_path.name}"]
        assert not solution_lines(json.loads(source_path.read_text(encoding="utf-8"))) & notebook_lines(text), (
            source_path.name
        )
    for name, text in texts.items():
        if name.endswith(".ipynb"):
            assert "solutions-edition" not in text and "BEGIN SOLUTION" not in text, name
    assert not any("hidden_tests" in name for name in names)


def test_the_handout_refuses_stale_student_editions(tmp_path):
    for folder in ("instructor/source", "notebooks", "solutions"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    assert [p.name for p in handout_files(tmp_path)][:1] == ["00_overview.ipynb"]
    edited = tmp_path / "notebooks" / "01_perlin_noise.ipynb"
    edited.write_text(edited.read_text(encoding="utf-8").replace("Perlin", "Perlin!"), encoding="utf-8")
    with pytest.raises(ValueError, match="01_perlin_noise.ipynb.*make editions"):
        write_handout(tmp_path / "handout.zip", root=tmp_path)
    assert not (tmp_path / "handout.zip").exists()


CORE = '''def fade(t):
    """Doc."""
    # BEGIN CORE
    return 6 * t**5
    # END CORE
    # BEGIN ASSIGNMENT
    raise NotImplementedError


fade = use_core(fade, reference, t)
    # END ASSIGNMENT'''


def test_core_regions_go_to_the_assignment_edition_only_and_are_not_exercises():
    from memseg_lite.teaching.editions import CORE_MARKERS, has_core, has_regions

    cell = {"cell_type": "code", "id": "5", "metadata": {}, "source": CORE, "outputs": [], "execution_count": None}
    assert has_core(cell) and not has_regions(cell)
    assert resolve_regions(CORE, "core", markers=CORE_MARKERS) == 'def fade(t):\n    """Doc."""\n    return 6 * t**5'
    source = {"metadata": {}, "nbformat": 4, "nbformat_minor": 5, "cells": [
        {"cell_type": "markdown", "id": "0", "metadata": {"tags": ["solutions-edition"]}, "source": ["Worked"]},
        cell,
        {"cell_type": "code", "id": "2", "metadata": {"tags": ["solution"]}, "source": EXERCISE, "outputs": [],
         "execution_count": None}]}
    worked, solutions = edition(source, "student", "01_x.ipynb"), edition(source, "solutions", "01_x.ipynb")
    assignment = edition(source, "assignment", "01_x.ipynb")
    assert "".join(worked["cells"][0]["source"]).endswith("return 6 * t**5")
    assert [c for c in solutions["cells"] if "fade" in "".join(c["source"])] == []  # not an exercise cell
    texts = ["".join(c["source"]) for c in assignment["cells"]]
    assert len(texts) == 2 and "6 * t**5" not in texts[0] and texts[0].endswith("fade = use_core(fade, reference, t)")
    assert texts[1] == resolve_regions(EXERCISE, "student")  # the exercises as in the student edition
    assert assignment["metadata"]["memseg_lite"] == {"chapter": "01", "track": "assignment"}
    assert worked["metadata"]["memseg_lite"] == {"chapter": "01"}


def test_assignment_editions_hold_no_core_code_and_stale_ones_are_reported(tmp_path):
    from memseg_lite.teaching.editions import CORE_MARKERS, has_core

    with_core = [p for p in SOURCES if any(has_core(c) for c in json.loads(p.read_text(encoding="utf-8"))["cells"])]
    assert [p.name[:2] for p in with_core] >= ["01"]
    assert sorted(p.name for p in (ROOT / "assignments").glob("*.ipynb")) == sorted(
        f"{p.stem}_assignment.ipynb" for p in with_core)
    for source_path in with_core:
        cells = json.loads(source_path.read_text(encoding="utf-8"))["cells"]
        core, shared = set(), set()  # shared: lines also in the chapter's other cells (a worked comparison)
        for cell in cells:
            if not has_core(cell):
                shared |= {line.strip() for line in "".join(cell["source"]).splitlines()}
            else:
                text = "".join(cell["source"])
                given = set(resolve_regions(text, "assignment", markers=CORE_MARKERS).splitlines())
                core |= {line.strip() for line in resolve_regions(text, "core", markers=CORE_MARKERS).splitlines()
                         if len(line.strip()) >= 16 and line not in given and not line.strip().startswith("#")}
        core -= shared
        assert core, source_path.name
        assignment = ROOT / "assignments" / f"{source_path.stem}_assignment.ipynb"
        leaked = core & notebook_lines(assignment.read_text(encoding="utf-8"))
        assert not leaked, f"{source_path.name}: core code in the assignment edition: {sorted(leaked)[:3]}"
        assert core <= notebook_lines((ROOT / "notebooks" / source_path.name).read_text(encoding="utf-8"))
    for folder in ("instructor/source", "notebooks", "solutions", "assignments"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / "assignments" / "99_gone_assignment.ipynb").write_text("{}")
    edited = tmp_path / "assignments" / with_core[0].name.replace(".ipynb", "_assignment.ipynb")
    edited.write_text(edited.read_text(encoding="utf-8").replace("NotImplementedError", "NotImplemented"),
                      encoding="utf-8")
    assert sorted(p.name for p in build(tmp_path, check=True)) == sorted([edited.name, "99_gone_assignment.ipynb"])
    build(tmp_path)
    assert build(tmp_path, check=True) == [] and not (tmp_path / "assignments" / "99_gone_assignment.ipynb").exists()


def test_the_assignment_handout_ships_the_assignment_editions_instead_of_the_worked_core(tmp_path):
    from memseg_lite.teaching.handout import main as handout_main

    out = tmp_path / "assignment.zip"
    assert handout_main(["--track", "assignment", "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        worked_core = notebook_lines((ROOT / "notebooks" / "01_perlin_noise.ipynb").read_text(encoding="utf-8"))
        shipped = notebook_lines(archive.read("memseg-lite/notebooks/01_perlin_noise_assignment.ipynb").decode())
        texts = [archive.read(name).decode() for name in names if name.endswith(".ipynb")]
    assert "memseg-lite/notebooks/01_perlin_noise.ipynb" not in names
    assert "memseg-lite/notebooks/00_overview.ipynb" in names  # a chapter without a core keeps its student edition
    fade = "return 6 * t**5 - 15 * t**4 + 10 * t**3"
    assert fade in worked_core and fade not in shipped
    assert sum(name.endswith(".ipynb") for name in names) == 12
    assert not any(name.split("/")[1] in ("assignments", "solutions", "instructor", "tests") for name in names)
    assert not any(marker in text for text in texts for marker in ("BEGIN CORE", "BEGIN ASSIGNMENT", "BEGIN SOLUTION"))
    with pytest.raises(ValueError, match="track"):
        handout_files(ROOT, track="core")


def test_a_repository_file_gives_each_student_notebook_a_colab_badge_and_a_setup_cell(tmp_path):
    import os
    import subprocess
    import sys

    from memseg_lite.teaching.editions import COLAB_TAG, read_repository

    for folder in ("instructor/source", "notebooks", "solutions", "assignments"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    assert read_repository(tmp_path) is None
    (tmp_path / "instructor" / "repository.txt").write_text("https://github.com/acme/memseg-course@spring\n")
    assert read_repository(tmp_path) == ("https://github.com/acme/memseg-course", "spring")
    solutions_before = (tmp_path / "solutions" / "01_perlin_noise_solutions.ipynb").read_text(encoding="utf-8")
    changed = build(tmp_path)
    assert {p.parent.name for p in changed} == {"notebooks", "assignments"}
    assert len(changed) == len(SOURCES) + len(list((ROOT / "assignments").glob("*.ipynb")))
    assert (tmp_path / "solutions" / "01_perlin_noise_solutions.ipynb").read_text(encoding="utf-8") == solutions_before
    for path, link in ((tmp_path / "notebooks" / "01_perlin_noise.ipynb", "notebooks/01_perlin_noise.ipynb"),
                       (tmp_path / "assignments" / "01_perlin_noise_assignment.ipynb",
                        "assignments/01_perlin_noise_assignment.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        first = next(cell for cell in cells if cell["cell_type"] == "markdown")
        assert f"colab.research.google.com/github/acme/memseg-course/blob/spring/{link})" in "".join(first["source"])
        setup = cells[cells.index(first) + 1]
        assert setup["metadata"]["tags"] == [COLAB_TAG] and "--branch" in "".join(setup["source"])
    # Where the package is installed and the data exist, the setup cell does nothing (no clone, no install).
    (tmp_path / "run" / "notebooks").mkdir(parents=True)
    (tmp_path / "run" / "data" / "demo").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-c", "".join(setup["source"])], cwd=tmp_path / "run" / "notebooks",
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "PATH": ""})  # no git: a clone would fail
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["data", "notebooks"]
    assert build(tmp_path, check=True) == []
    (tmp_path / "instructor" / "repository.txt").write_text("git@github.com:acme/memseg-course.git")
    with pytest.raises(ValueError, match="repository.txt.*OWNER/NAME"):
        build(tmp_path, check=True)
