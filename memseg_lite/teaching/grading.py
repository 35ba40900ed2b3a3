"""Auto-grading of students' notebooks: run each one, read its self-check lines, tabulate.

:func:`grade_notebook` executes a notebook with papermill (kernel ``python3``, in the notebook's
own folder, on the CPU, with ``MEMSEG_PROFILE`` set and ``MEMSEG_OFFLINE=1``, within a time limit
for the whole notebook) and parses the lines that
:func:`memseg_lite.teaching.exercises.check` printed::

    [ok] Exercise 1 · fade derivatives: passed.
    [x] Exercise 2 · fractal noise: not solved yet: <reason>
    [ ] Exercise 3 · threshold ...: not attempted yet (...)

A notebook that stops with an error (or runs out of time) is reported as ``error`` with the
failing cell; the exercises it printed before count, and the chapter's exercises it never
reached (known from :mod:`memseg_lite.teaching.checks`) are listed as ``not run``.
:func:`format_table` and :func:`write_csv` present the results; ``memseg-lite grade`` is the
command line. papermill is imported only when a notebook is graded.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from memseg_lite.core.io import write_text_atomic

PASSED, FAILED, NOT_ATTEMPTED, NOT_RUN = "passed", "failed", "not attempted", "not run"
PROFILES = ("smoke", "demo", "full")

_LINE = re.compile(r"^\[(?P<mark>ok|x| )\] (?P<name>.+?): (?P<verdict>passed\.|not solved yet|not attempted yet)(?P<rest>.*)$")
_MARKS = {"ok": PASSED, "x": FAILED, " ": NOT_ATTEMPTED}
_NUMBER = re.compile(r"exercise\s+(\d+)", re.IGNORECASE)


class GradingUnavailableError(RuntimeError):
    """papermill, which runs the notebooks, is not installed."""


@dataclass
class ExerciseResult:
    """One exercise of a graded notebook: its name (as printed), status and, for a failure, the reason."""

    name: str
    status: str
    reason: str = ""


@dataclass
class NotebookGrade:
    """The grade of one notebook: its exercises, and the error that stopped it (if any)."""

    notebook: Path
    exercises: list[ExerciseResult] = field(default_factory=list)
    error: str | None = None
    error_cell: int | None = None  # the failing cell, counting every cell from 1
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(result.status == status for result in self.exercises)

    @property
    def status(self) -> str:
        if self.error is None:
            return "ok"
        where = f" in cell {self.error_cell}" if self.error_cell is not None else ""
        return f"error{where}: {self.error}"


def parse_check_lines(text: str) -> list[ExerciseResult]:
    """The exercise results in ``text`` (a notebook's printed output), in order; a repeated name keeps its last result."""
    results: dict[str, ExerciseResult] = {}
    for line in text.splitlines():
        match = _LINE.match(line.rstrip())
        if match is None:
            continue
        reason = match["rest"].removeprefix(": ").strip() if match["mark"] == "x" else ""
        name = match["name"].strip()
        results.pop(name, None)
        results[name] = ExerciseResult(name, _MARKS[match["mark"]], reason)
    return list(results.values())


def _printed_text(notebook: dict) -> str:
    """Everything the code cells printed to stdout, in cell order."""
    chunks = []
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                text = output.get("text", "")
                chunks.append("".join(text) if isinstance(text, list) else text)
    return "".join(chunks)


def expected_exercises(notebook: str | os.PathLike) -> list[int]:
    """The exercise numbers of ``notebook``'s chapter (``NN_...ipynb`` -> ``checks.chNN.exercise_N``); [] if unknown."""
    match = re.match(r"(\d\d)_", Path(notebook).name)
    if match is None:
        return []
    try:
        module = importlib.import_module(f"memseg_lite.teaching.checks.ch{match[1]}")
    except ImportError:
        return []
    return sorted(int(name.split("_")[1]) for name in dir(module) if re.fullmatch(r"exercise_\d+", name))


def _check_notebook_file(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"notebook not found: {path}; pass the path of a student's .ipynb file")
    if path.suffix != ".ipynb":
        raise ValueError(f"{path} is not a notebook (.ipynb); pass the student's .ipynb file")
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable notebook ({error}); ask for the .ipynb file again") from None
    if not isinstance(notebook, dict) or "cells" not in notebook:
        raise ValueError(f"{path} is not a Jupyter notebook (no 'cells'); ask for the .ipynb file again")
    return notebook


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the kernel papermill starts (it inherits ours), then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _error_summary(error: BaseException) -> tuple[str, int | None]:
    """(one line, 0-based cell index or None) for the exception that stopped a notebook."""
    cell = getattr(error, "cell_index", None)
    name, value = getattr(error, "ename", None), getattr(error, "evalue", None)
    if name:
        text = f"{name}: {value}" if value else str(name)
    elif isinstance(error, TimeoutError) or type(error).__name__ == "CellTimeoutError":
        text = "time limit reached"
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())[:300], cell


def grade_notebook(
    notebook: str | os.PathLike,
    *,
    timeout: float = 600.0,
    profile: str = "smoke",
    kernel: str = "python3",
    executed: str | os.PathLike | None = None,
) -> NotebookGrade:
    """Execute ``notebook`` and grade its exercises (see the module docstring).

    ``timeout``: seconds for the whole notebook; ``profile``: ``MEMSEG_PROFILE`` for the run;
    ``executed``: where to keep the executed copy (default: a temporary file, deleted).
    """
    path = Path(notebook)
    _check_notebook_file(path)
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if not (isinstance(timeout, int | float) and timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    try:
        import papermill
    except ImportError as error:
        raise GradingUnavailableError("grading needs papermill: pip install 'memseg-lite[workbook]' (or pip install papermill)") from error

    grade = NotebookGrade(path)
    deadline = time.monotonic() + timeout

    def cell_timeout(cell) -> int:  # nbclient's limit per cell: whatever is left of the notebook's time
        return max(1, math.ceil(deadline - time.monotonic()))

    with tempfile.TemporaryDirectory(prefix="memseg-grade-") as folder:
        output = Path(executed) if executed is not None else Path(folder) / path.name
        start = time.monotonic()
        env = {"MEMSEG_PROFILE": profile, "MEMSEG_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg"}
        try:
            with _environment(env), contextlib.redirect_stderr(io.StringIO()):
                papermill.execute_notebook(
                    str(path), str(output), kernel_name=kernel, cwd=str(path.resolve().parent),
                    progress_bar=False, log_output=False, timeout_func=cell_timeout,
                    execution_timeout=max(1, math.ceil(timeout)),
                )
        except Exception as error:  # a crash, a time-out, a kernel that died: report it, keep what ran
            grade.error, grade.error_cell = _error_summary(error)
        grade.seconds = time.monotonic() - start
        try:
            ran = json.loads(output.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            ran = {"cells": []}
    if grade.error is not None and grade.error_cell is None:  # e.g. a time-out: the interrupted cell shows an error
        grade.error_cell = next((index for index, cell in enumerate(ran.get("cells", []))
                                 if any(output.get("output_type") == "error" for output in cell.get("outputs", []))
                                 or cell.get("metadata", {}).get("papermill", {}).get("status") in ("running", "failed")), None)
    if grade.error_cell is not None:
        grade.error_cell += 1  # reported counting every cell (markdown too) from 1, as an instructor reads the notebook
    grade.exercises = parse_check_lines(_printed_text(ran))
    if grade.error is not None:
        seen = {int(m[1]) for result in grade.exercises if (m := _NUMBER.search(result.name))}
        grade.exercises += [ExerciseResult(f"Exercise {n}", NOT_RUN) for n in expected_exercises(path) if n not in seen]
    return grade


def grade_notebooks(notebooks: Sequence[str | os.PathLike], **options) -> list[NotebookGrade]:
    """:func:`grade_notebook` for each of ``notebooks`` (all files are checked before the first runs)."""
    for notebook in notebooks:
        _check_notebook_file(Path(notebook))
    return [grade_notebook(notebook, **options) for notebook in notebooks]


def _marks(grade: NotebookGrade) -> str:
    symbols = {PASSED: "ok", FAILED: "x", NOT_ATTEMPTED: "-", NOT_RUN: "?"}
    parts = []
    for result in grade.exercises:
        number = _NUMBER.search(result.name)
        parts.append(f"{number[1] if number else result.name}:{symbols[result.status]}")
    return " ".join(parts)


def format_table(grades: Sequence[NotebookGrade]) -> str:
    """A plain-text table: one row per notebook with the counts, the per-exercise marks and the status."""
    header = ("notebook", "passed", "failed", "not attempted", "exercises", "status")
    rows = [
        (grade.notebook.name, str(grade.count(PASSED)), str(grade.count(FAILED)),
         str(grade.count(NOT_ATTEMPTED) + grade.count(NOT_RUN)), _marks(grade), grade.status)
        for grade in grades
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append("marks: ok passed, x failed, - not attempted, ? not run (the notebook stopped before it)")
    return "\n".join(lines)


CSV_COLUMNS = ("notebook", "exercise", "status", "reason")


def csv_rows(grades: Sequence[NotebookGrade]) -> list[dict[str, str]]:
    """One row per exercise, and one ``error`` row (exercise: the failing cell) per notebook that stopped."""
    rows = []
    for grade in grades:
        for result in grade.exercises:
            rows.append({"notebook": str(grade.notebook), "exercise": result.name, "status": result.status,
                         "reason": result.reason})
        if grade.error is not None:
            cell = f"cell {grade.error_cell}" if grade.error_cell is not None else ""
            rows.append({"notebook": str(grade.notebook), "exercise": cell, "status": "error", "reason": grade.error})
    return rows


def write_csv(grades: Sequence[NotebookGrade], path: str | os.PathLike) -> Path:
    """Write :func:`csv_rows` to ``path`` (atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(grades))
    return write_text_atomic(path, buffer.getvalue())
