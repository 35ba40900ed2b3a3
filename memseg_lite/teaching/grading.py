"""Auto-grading of students' notebooks with the instructor's hidden tests.

What the notebook prints does not count. :func:`grade_notebook`

1. copies the notebook into a throwaway working folder (with a copy of the data folder beside
   it, so ``../data/demo`` resolves as in the repository), under a private temporary folder;
2. executes it with nbclient (kernel ``python3``) in that folder, with a scrubbed environment
   (``PATH``, ``PYTHONPATH``, the locale, ``MEMSEG_PROFILE``, ``MEMSEG_OFFLINE=1``, no GPU, ``HOME`` and
   ``TMPDIR`` inside the throwaway folder), every cell run even after an error, within a time
   limit for the whole notebook;
3. appends a grader cell, run in the same kernel, which imports the hidden tests of the
   notebook's chapter from the instructor's folder (``instructor/hidden_tests/chNN.py``, never in
   the handout), calls each ``exercise_N`` on the student's functions, looked up by the test's
   parameter names, and writes the results with a one-time token to a file whose path only the
   grader knows;
4. kills the kernel's process group (whatever the student's code started in it goes too) and
   deletes the working folder.

A hidden test module holds one ``exercise_N(<student function names>...)`` per exercise (and, for
the assignment track, one ``core_N(...)`` per core piece the student writes), which
raises ``AssertionError`` for a wrong answer (``NotImplementedError`` from a stub: not
attempted), and optionally ``POINTS = {N: points}`` (1 point each by default), ``CORE_POINTS``
and ``TITLES``. ``track="assignment"`` (``memseg-lite grade --track assignment``) grades the core
tests as well as the exercises; a core function that fell back to the package's
(:func:`memseg_lite.teaching.exercises.use_core`) is graded as the student wrote it.
The grader sets the module's ``DATA_ROOT`` (the working copy's data folder) before the calls.

:func:`grade_notebooks` grades a batch: a notebook that cannot be read or run gets an error row
and the others are graded. :func:`format_table` prints one row per student (student x exercise,
points and total), :func:`write_csv` writes the same table for a gradebook. nbclient is
imported only when a notebook is graded.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import re
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from memseg_lite.core.io import write_text_atomic

PASSED, FAILED, NOT_ATTEMPTED, NOT_RUN = "passed", "failed", "not attempted", "not run"
PROFILES = ("smoke", "demo", "full")
#: seconds each hidden test may take (the student's function may loop forever)
TEST_TIMEOUT = 300
#: what ``track`` grades: the worked edition's exercises, or the assignment edition's core pieces too
TRACK_TESTS = {"worked": ("exercise",), "assignment": ("exercise", "core")}

_CHAPTER_IN_NAME = re.compile(r"(?:^|[^0-9])(\d\d)_[A-Za-z]")
_REPOSITORY = Path(__file__).resolve().parents[2]


class GradingUnavailableError(RuntimeError):
    """nbclient, which runs the notebooks, is not installed, or the hidden tests cannot be found."""


@dataclass
class ExerciseResult:
    """One exercise of a graded notebook: number, status, points earned of ``max_points``, and the reason."""

    number: int
    status: str
    points: float = 0.0
    max_points: float = 1.0
    reason: str = ""
    kind: str = "exercise"  # or "core" (the assignment track)

    @property
    def label(self) -> str:
        """``N`` for exercise N, ``cN`` for core piece N."""
        return f"c{self.number}" if self.kind == "core" else str(self.number)


@dataclass
class NotebookGrade:
    """The grade of one notebook: who, which chapter, its exercises and the first error (if any)."""

    notebook: Path
    student: str = ""
    chapter: str | None = None
    exercises: list[ExerciseResult] = field(default_factory=list)
    error: str | None = None
    error_cell: int | None = None  # the first failing cell, counting every cell from 1
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(result.status == status for result in self.exercises)

    @property
    def points(self) -> float:
        return sum(result.points for result in self.exercises)

    @property
    def max_points(self) -> float:
        return sum(result.max_points for result in self.exercises)

    @property
    def status(self) -> str:
        if self.error is None:
            return "ok"
        where = f" in cell {self.error_cell}" if self.error_cell is not None else ""
        return f"error{where}: {self.error}"


def default_tests_folder() -> Path | None:
    """The repository's ``instructor/hidden_tests`` when this package runs from a checkout, else None."""
    folder = _REPOSITORY / "instructor" / "hidden_tests"
    return folder if folder.is_dir() else None


def _resolve_tests_folder(tests: str | os.PathLike | None) -> Path:
    folder = Path(tests) if tests is not None else default_tests_folder()
    if folder is None:
        raise GradingUnavailableError("no hidden tests found: pass --tests DIR (the instructor's hidden_tests folder)")
    if not folder.is_dir():
        raise GradingUnavailableError(f"--tests {folder}: no such folder; pass the instructor's hidden_tests folder")
    return folder


def chapter_of(notebook: dict, path: Path) -> str | None:
    """The chapter ``NN`` of a notebook: its metadata (``memseg_lite.chapter``), else ``NN_`` in the file name."""
    metadata = notebook.get("metadata")
    chapter = metadata.get("memseg_lite", {}).get("chapter") if isinstance(metadata, dict) else None
    if isinstance(chapter, str) and re.fullmatch(r"\d\d", chapter):
        return chapter
    match = _CHAPTER_IN_NAME.search(path.name)
    return match[1] if match else None


def load_hidden_tests(folder: str | os.PathLike, chapter: str):
    """The hidden test module ``folder/chNN.py`` (loaded from its file, never from sys.path)."""
    path = Path(folder) / f"ch{chapter}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no hidden tests for chapter {chapter}: {path} is missing")
    spec = importlib.util.spec_from_file_location(f"memseg_hidden_tests_ch{chapter}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hidden_exercises(module, kind: str = "exercise") -> dict[int, float]:
    """{number: points} of a hidden test module's ``exercise_N`` (or with ``kind="core"``, ``core_N``) tests.

    1 point each unless ``POINTS`` (``CORE_POINTS``) says otherwise.
    """
    points = getattr(module, "CORE_POINTS" if kind == "core" else "POINTS", {})
    numbers = sorted(int(name.split("_")[1]) for name in dir(module) if re.fullmatch(rf"{kind}_\d+", name))
    return {number: float(points.get(number, 1)) for number in numbers}


def hidden_tests_of(module, track: str = "worked") -> dict[str, float]:
    """{test name (``exercise_N`` / ``core_N``): points} that ``track`` grades."""
    if track not in TRACK_TESTS:
        raise ValueError(f"track must be one of {', '.join(TRACK_TESTS)}, got {track!r}")
    return {f"{kind}_{number}": points for kind in TRACK_TESTS[track]
            for number, points in hidden_exercises(module, kind).items()}


def _read_notebook(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"notebook not found: {path}; pass the path of a student's .ipynb file")
    if path.suffix != ".ipynb":
        raise ValueError(f"{path} is not a notebook (.ipynb); pass the student's .ipynb file")
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable notebook ({error}); ask for the .ipynb file again") from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise ValueError(f"{path} is not a Jupyter notebook (no list of 'cells'); ask for the .ipynb file again")
    return notebook


# The grader cell, run in the student's kernel after the notebook. Everything it needs comes from
# the literals filled in below; the student's code ran before it and never saw them.
_GRADER_CELL = '''
def _memseg_grade(namespace, tests_file, data_root, names, results_file, token, limit):
    import importlib.util, inspect, json, signal, sys

    # Fresh copies of the check modules: patches the notebook made to the loaded ones do not count.
    loaded = [
        name for name in sys.modules if name == "memseg_lite.teaching" or name.startswith("memseg_lite.teaching.")
    ]
    for name in loaded:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location("memseg_hidden_tests", tests_file)
    hidden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hidden)
    hidden.DATA_ROOT = data_root

    def out_of_time(signum, frame):
        raise TimeoutError(f"the test took longer than {limit} s")

    results = []
    for test_name in names:
        number = test_name
        test = getattr(hidden, test_name)
        wanted = [p.name for p in inspect.signature(test).parameters.values() if p.default is inspect.Parameter.empty]
        missing = [name for name in wanted if name not in namespace]
        if missing:
            results.append({"number": number, "status": "not attempted", "reason": ", ".join(missing) + " not defined"})
            continue
        signal.signal(signal.SIGALRM, out_of_time)
        signal.alarm(limit)
        try:
            # a core piece that fell back to the package's keeps the student's own function: grade that
            test(*[getattr(namespace[name], "__memseg_student__", namespace[name]) for name in wanted])
            result = {"status": "passed", "reason": ""}
        except NotImplementedError:
            result = {"status": "not attempted", "reason": ""}
        except AssertionError as error:
            result = {"status": "failed", "reason": str(error)}
        except BaseException as error:  # the student's code may raise anything, SystemExit included
            result = {"status": "failed", "reason": f"{type(error).__name__}: {error}"}
        finally:
            signal.alarm(0)
        results.append({"number": number, **result})
    with open(results_file, "w", encoding="utf-8") as handle:
        json.dump({"token": token, "results": results}, handle)

'''


def _scrubbed_environment(home: Path, profile: str) -> dict[str, str]:
    """The kernel's whole environment: no credentials, tokens or paths of the grader leak in."""
    # PYTHONPATH: the kernel imports the same memseg_lite as the grader (a checkout run with PYTHONPATH)
    env = {name: os.environ[name] for name in ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ", "TORCH_HOME")
           if name in os.environ}
    env.update(HOME=str(home), TMPDIR=str(home / "tmp"), IPYTHONDIR=str(home / ".ipython"),
               MPLCONFIGDIR=str(home / ".matplotlib"), JUPYTER_RUNTIME_DIR=str(home / ".jupyter-runtime"),
               MEMSEG_PROFILE=profile, MEMSEG_OFFLINE="1", CUDA_VISIBLE_DEVICES="", MPLBACKEND="Agg",
               PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return env


def _kernel_process_group(client) -> int | None:
    provisioner = getattr(getattr(client, "km", None), "provisioner", None)
    return getattr(provisioner, "pgid", None)


def _kill_process_group(pgid: int | None) -> None:
    """SIGKILL a kernel's process group (jupyter_client starts the kernel in a session of its own)."""
    if pgid and hasattr(os, "killpg") and pgid != os.getpgid(0):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def default_data_folder(notebook: Path) -> Path | None:
    """The data folder the notebook reads as ``../data``: beside its folder, else the repository's."""
    for folder in (notebook.resolve().parent.parent / "data", _REPOSITORY / "data"):
        if folder.is_dir():
            return folder
    return None


def grade_notebook(
    notebook: str | os.PathLike,
    *,
    tests: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    timeout: float = 600.0,
    profile: str = "smoke",
    kernel: str = "python3",
    student: str | None = None,
    test_timeout: int = TEST_TIMEOUT,
    track: str = "worked",
) -> NotebookGrade:
    """Execute ``notebook`` and grade it with the hidden tests (see the module docstring).

    ``tests``: the hidden tests folder (default: the repository's ``instructor/hidden_tests``);
    ``data``: the folder copied as ``../data`` beside the working copy (default:
    :func:`default_data_folder`); ``timeout``: seconds for the student's cells; ``profile``:
    ``MEMSEG_PROFILE``; ``student``: the name in the table (default: the notebook's folder);
    ``track``: ``"worked"`` (the exercises) or ``"assignment"`` (the core pieces too).
    """
    path = Path(notebook)
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if not (isinstance(timeout, int | float) and timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if track not in TRACK_TESTS:
        raise ValueError(f"track must be one of {', '.join(TRACK_TESTS)}, got {track!r}")
    tests_folder = _resolve_tests_folder(tests)
    grade = NotebookGrade(path, student=student or path.resolve().parent.name)
    content = _read_notebook(path)
    grade.chapter = chapter_of(content, path)
    if grade.chapter is None:
        raise ValueError(f"{path}: which chapter is it? name it NN_topic.ipynb (NN: the chapter number)")
    points = hidden_tests_of(load_hidden_tests(tests_folder, grade.chapter), track)
    try:
        import nbformat
        from jupyter_core.utils import run_sync
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    except ImportError as error:
        raise GradingUnavailableError(
            "grading needs nbclient: pip install 'memseg-lite[workbook]' (or pip install nbclient)"
        ) from error
    try:
        parsed = nbformat.reads(json.dumps(content), as_version=4)
    except Exception as error:  # nbformat's own validation errors
        raise ValueError(
            f"{path} is not a valid notebook ({type(error).__name__}); ask for the .ipynb file again"
        ) from None

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="memseg-grade-") as private:
        private = Path(private)
        os.chmod(private, 0o700)
        work = private / "work"
        (work / "notebooks").mkdir(parents=True)
        data_folder = Path(data) if data is not None else default_data_folder(path)
        if data_folder is not None:
            shutil.copytree(data_folder, work / "data", symlinks=False)
        results_file = private / f"results-{secrets.token_hex(8)}.json"
        token = secrets.token_hex(16)
        arguments = (str((tests_folder / f"ch{grade.chapter}.py").resolve()), str(work / "data" / "demo"),
                     list(points), str(results_file), token, int(test_timeout))
        grader_source = _GRADER_CELL + "\n_memseg_grade(globals(), " + ", ".join(map(repr, arguments)) + ")\n"
        grader_cell = nbformat.v4.new_code_cell(grader_source)
        student_cells = list(parsed.cells)
        parsed.cells.append(grader_cell)
        client = NotebookClient(parsed, kernel_name=kernel, allow_errors=True, timeout=None,
                                resources={"metadata": {"path": str(work / "notebooks")}})
        env = _scrubbed_environment(private / "home", profile)
        deadline = start + timeout
        pgid = None
        try:
            with client.setup_kernel(env=env, cwd=str(work / "notebooks")):
                pgid = _kernel_process_group(client)
                try:
                    for index, cell in enumerate(student_cells):
                        if cell.cell_type != "code":
                            continue
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise CellTimeoutError.error_from_timeout_and_cell("time limit reached", left, cell)
                        client.timeout = max(1, math.ceil(left))
                        client.execute_cell(cell, index)
                        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
                        if grade.error is None and errors:
                            error = errors[0]
                            grade.error, grade.error_cell = _one_line(f"{error.ename}: {error.evalue}"), index + 1
                except CellTimeoutError:
                    grade.error, grade.error_cell = "time limit reached", index + 1
                    run_sync(client.km.interrupt_kernel)()  # the kernel is still in the cell: stop it
                client.timeout = len(points) * int(test_timeout) + 60
                client.execute_cell(grader_cell, len(student_cells))
        except (CellExecutionError, CellTimeoutError, DeadKernelError, RuntimeError, OSError) as error:
            if grade.error is None:
                grade.error = _one_line(f"{type(error).__name__}: {error}")
        finally:
            _kill_process_group(pgid)
        reported = _read_results(results_file, token)
    grade.seconds = time.monotonic() - start
    if reported is None:
        if grade.error is None:
            grade.error = "the grader cell did not report (the kernel died, or the notebook tampered with it)"
        grade.exercises = [_result(name, NOT_RUN, 0.0, p) for name, p in points.items()]
        return grade
    by_number = {result.get("number"): result for result in reported}
    for name, maximum in points.items():
        result = by_number.get(name, {"status": NOT_RUN, "reason": ""})
        status = result["status"] if result.get("status") in (PASSED, FAILED, NOT_ATTEMPTED) else NOT_RUN
        grade.exercises.append(_result(name, status, maximum if status == PASSED else 0.0, maximum,
                                       _one_line(str(result.get("reason", "")))))
    return grade


def _result(test_name: str, status: str, points: float, maximum: float, reason: str = "") -> ExerciseResult:
    kind, number = test_name.split("_")
    return ExerciseResult(int(number), status, points, maximum, reason, kind)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def _read_results(path: Path, token: str) -> list[dict] | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(payload, dict) or payload.get("token") != token or not isinstance(payload.get("results"), list):
        return None
    return [result for result in payload["results"] if isinstance(result, dict)]


def student_names(notebooks: Sequence[Path]) -> list[str]:
    """A student per notebook: its folder's name, or the file's name when a folder holds two notebooks of one
    chapter."""
    keys = [(Path(n).resolve().parent, chapter_of({}, Path(n))) for n in notebooks]
    shared = {key for key in keys if keys.count(key) > 1}
    return [
        Path(n).stem if key in shared else Path(n).resolve().parent.name for n, key in zip(notebooks, keys, strict=True)
    ]


def grade_notebooks(notebooks: Sequence[str | os.PathLike], **options) -> list[NotebookGrade]:
    """:func:`grade_notebook` for each notebook; one that cannot be read or run gets an error row."""
    paths = [Path(notebook) for notebook in notebooks]
    _resolve_tests_folder(options.get("tests"))  # a missing tests folder stops the batch before any run
    if options.get("track", "worked") not in TRACK_TESTS:
        raise ValueError(f"track must be one of {', '.join(TRACK_TESTS)}, got {options['track']!r}")
    grades = []
    for path, student in zip(paths, student_names(paths), strict=True):
        try:
            grades.append(grade_notebook(path, student=student, **options))
        except GradingUnavailableError:
            raise
        except (OSError, ValueError) as error:
            failed = NotebookGrade(path, student=student, chapter=chapter_of({}, path), error=_one_line(str(error)))
            grades.append(failed)
    return grades


def _columns(grades: Sequence[NotebookGrade]) -> list[tuple[str, str, int]]:
    return sorted({(grade.chapter, result.kind, result.number) for grade in grades for result in grade.exercises},
                  key=lambda column: (column[0], column[1] == "core", column[2]))


def gradebook(grades: Sequence[NotebookGrade]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per student, a column ``NN.k`` per exercise and ``NN.ck`` per core piece (points),
    total, out of, status."""
    columns = _columns(grades)
    header = ["student", *(f"{chapter}.{'c' if kind == 'core' else ''}{number}" for chapter, kind, number in columns),
              "total", "out of", "status"]
    students: dict[str, list[NotebookGrade]] = {}
    for grade in grades:
        students.setdefault(grade.student, []).append(grade)
    rows = []
    for student, own in students.items():
        earned = {(grade.chapter, r.kind, r.number): r for grade in own for r in grade.exercises}
        cells = [_number(earned[column].points) if column in earned else "" for column in columns]
        statuses = [f"{grade.notebook.name}: {grade.status}" for grade in own if grade.error is not None]
        rows.append([student, *cells, _number(sum(g.points for g in own)), _number(sum(g.max_points for g in own)),
                     "; ".join(statuses) or "ok"])
    return header, rows


def _number(value: float) -> str:
    return f"{value:g}"


def format_table(grades: Sequence[NotebookGrade]) -> str:
    """A plain-text student x exercise table (points per exercise, total) and the failure reasons below it."""
    header, rows = gradebook(grades)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    # every row has the header's cells, one per width
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    reasons = [f"  {grade.student} {grade.chapter}.{result.label}: {result.status}"
               f"{': ' + result.reason if result.reason else ''}"
               for grade in grades for result in grade.exercises if result.status != PASSED]
    if reasons:
        lines += ["", "not passed:", *reasons]
    return "\n".join(lines)


def write_csv(grades: Sequence[NotebookGrade], path: str | os.PathLike) -> Path:
    """Write the :func:`gradebook` table (one row per student) to ``path`` as CSV (atomically)."""
    header, rows = gradebook(grades)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())
