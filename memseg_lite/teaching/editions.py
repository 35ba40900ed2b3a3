r"""The workbook's editions, generated from one source notebook per chapter.

``instructor/source/NN_topic.ipynb`` is the only copy that is edited. From it come

- the student edition ``notebooks/NN_topic.ipynb``: every cell not tagged ``solutions-edition``,
  solution regions cut out;
- the solutions edition ``solutions/NN_topic_solutions.ipynb``: the cells tagged
  ``solutions-edition`` and the exercise cells (those holding a region) with their solutions,
  in source order; exercise cells keep the ``solution`` tag there (the exercise-check tests run
  those cells).

Regions are whole lines (any indentation, matched after stripping)::

    def fade_derivatives(t):
        # BEGIN SOLUTION
        return 30 * t**2 * (t - 1) ** 2, 60 * t * (t - 1) * (2 * t - 1)
        # END SOLUTION
        # BEGIN STUDENT
        raise NotImplementedError


    check("Exercise 1 · fade derivatives", lambda: ch01.exercise_1(fade_derivatives));
    # END STUDENT

``SOLUTION`` lines go only to the solutions edition, ``STUDENT`` lines (the stub and its
self-check) only to the student edition; the lines outside regions go to both. When a region
ends the cell, the newline before its closing marker is not part of the edition's text. Cell ids
are renumbered 0, 1, ... in each edition; outputs are never stored. The student edition's
metadata names the chapter (``memseg_lite.chapter``), which the grader reads.

The assignment track: a chapter's core (what the worked editions hand over worked) sits between
``# BEGIN CORE`` and ``# END CORE``; what the student gets instead (a stub and
:func:`memseg_lite.teaching.exercises.use_core`, which falls back to the package's function with a
warning) sits between ``# BEGIN ASSIGNMENT`` and ``# END ASSIGNMENT``. The worked editions keep
the core and drop the assignment lines; the assignment edition
``assignments/NN_topic_assignment.ipynb`` (only for chapters with a core region) is the student
edition with the core cut and the assignment lines kept. Core regions are not exercises
(:func:`has_regions` ignores them).

Colab-like services (each notebook opens in a runtime of its own): when
``instructor/repository.txt`` names the course's copy of the repository (``https://github.com/OWNER/NAME``,
optionally ``@BRANCH``), the student and assignment editions get an "Open in Colab" badge in their
first markdown cell and, after it, a setup cell (tag ``colab-setup``) that installs the package
from that copy and generates the demo data; where ``memseg_lite`` is installed and the data exist
(a checkout, a JupyterHub image) it does nothing. Without the file the editions have neither.

``python -m memseg_lite.teaching.editions`` (``make editions``) rewrites the three folders;
``--check`` only reports editions that differ from what the source gives (the test suite runs it).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

from memseg_lite.core.io import write_text_atomic

SOLUTIONS_ONLY = "solutions-edition"
SOLUTION_TAG = "solution"
MARKERS = {"# BEGIN SOLUTION": ("solution", True), "# END SOLUTION": ("solution", False),
           "# BEGIN STUDENT": ("student", True), "# END STUDENT": ("student", False)}
CORE_MARKERS = {"# BEGIN CORE": ("core", True), "# END CORE": ("core", False),
                "# BEGIN ASSIGNMENT": ("assignment", True), "# END ASSIGNMENT": ("assignment", False)}
EDITIONS = ("student", "solutions", "assignment")
#: the metadata ``memseg_lite.track`` of each graded edition
TRACKS = {"student": "worked", "assignment": "assignment"}
ROOT = Path(__file__).resolve().parents[2]
COLAB_TAG = "colab-setup"
_SETUP_CELL = """# Setup on Colab-like services, where every notebook starts in a fresh runtime.
# It does nothing where memseg_lite is installed and the demo data exist (a checkout, a JupyterHub image).
import importlib.util, os, subprocess, sys

if importlib.util.find_spec("memseg_lite") is None:
    if not os.path.isdir("memseg-lite"):
        subprocess.run(["git", "clone", "--depth", "1", {branch}{url!r}, "memseg-lite"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "./memseg-lite[workbook]"], check=True)
    sys.path.insert(0, os.path.abspath("memseg-lite"))  # the running kernel sees the new install
    os.chdir({folder!r})  # the notebooks read ../data/demo and write ../runs
if not os.path.isdir("../data/demo"):  # deterministic, seconds; nothing is downloaded
    subprocess.run([sys.executable, "-m", "memseg_lite.cli", "demo-data", "--out", "../data/demo"], check=True)"""


def _text(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def has_regions(cell: dict) -> bool:
    """Whether a cell holds a solution or student region (an exercise cell)."""
    return any(line.strip() in MARKERS for line in _text(cell).splitlines())


def has_core(cell: dict) -> bool:
    """Whether a cell holds a core or assignment region (the assignment track)."""
    return any(line.strip() in CORE_MARKERS for line in _text(cell).splitlines())


def resolve_regions(text: str, edition: str, where: str = "cell", markers: dict | None = None) -> str:
    """``text`` as ``edition`` (``"student"`` or ``"solutions"``) sees it: markers dropped, the other
    edition's lines cut.

    With ``markers=CORE_MARKERS`` the same for the core regions: ``edition`` ``"core"`` (the
    worked editions) or ``"assignment"``.
    """
    markers = MARKERS if markers is None else markers
    keep = {"student": "student", "solutions": "solution", "core": "core", "assignment": "assignment"}[edition]
    lines, kept, inside = text.splitlines(keepends=True), [], None
    for number, line in enumerate(lines, 1):
        marker = markers.get(line.strip())
        if marker is None:
            if inside is None or inside == keep:
                kept.append(line)
            continue
        kind, opens = marker
        if opens and inside is not None:
            raise ValueError(f"{where}, line {number}: {line.strip()!r} inside a {inside} region; close it first")
        if not opens and inside != kind:
            raise ValueError(f"{where}, line {number}: {line.strip()!r} without its BEGIN line")
        inside = kind if opens else None
    if inside is not None:
        raise ValueError(f"{where}: the {inside} region is never closed (add its END line)")
    result = "".join(kept)
    if lines and lines[-1].strip() in markers and result.endswith("\n"):
        result = result[:-1]
    return result


def _split_source(text: str) -> list[str]:
    """A cell's source as Jupyter stores it: lines with their newlines, the last without."""
    return text.splitlines(keepends=True)


def _edition_cell(cell: dict, edition: str, where: str) -> dict:
    out = copy.deepcopy(cell)
    if has_regions(cell) or has_core(cell):  # other cells keep their stored lines exactly
        text = _text(cell)
        if has_core(cell):
            text = resolve_regions(text, "assignment" if edition == "assignment" else "core", where, CORE_MARKERS)
        if has_regions(cell):
            text = resolve_regions(text, "solutions" if edition == "solutions" else "student", where)
        out["source"] = _split_source(text)
    tags = [t for t in out.get("metadata", {}).get("tags", []) if t != SOLUTIONS_ONLY]
    if edition in TRACKS:
        tags = [t for t in tags if t != SOLUTION_TAG]
    if tags:
        out["metadata"]["tags"] = tags
    else:
        out.get("metadata", {}).pop("tags", None)
    if "outputs" in out:  # never stored (nbstripout); a cell without the keys keeps none
        out["outputs"] = []
    if "execution_count" in out:
        out["execution_count"] = None
    return out


def read_repository(root: Path = ROOT) -> tuple[str, str] | None:
    """(URL, branch) from ``instructor/repository.txt`` (``https://github.com/OWNER/NAME[@BRANCH]``), or None."""
    path = root / "instructor" / "repository.txt"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8").strip()
    url, _, branch = text.partition("@") if text.count("@") == 1 and "://" in text.split("@")[0] else (text, "", "")
    match = re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url.removesuffix(".git").rstrip("/"))
    if match is None:
        raise ValueError(f"{path}: expected one line https://github.com/OWNER/NAME[@BRANCH], got {text!r}")
    return match[0], branch or "main"


def add_colab_setup(notebook: dict, repository: tuple[str, str], path_in_repository: str) -> dict:
    """The badge (in the first markdown cell) and the setup cell (after it) for a notebook at ``path_in_repository``."""
    url, branch = repository
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/{branch}/"
             f"{path_in_repository})")
    cells = notebook["cells"]
    first = next((i for i, cell in enumerate(cells) if cell["cell_type"] == "markdown"), None)
    if first is None:
        raise ValueError(f"{path_in_repository}: no markdown cell for the Colab badge")
    cells[first]["source"] = _split_source(_text(cells[first]).rstrip("\n") + "\n\n" + badge)
    folder = "memseg-lite/" + path_in_repository.rsplit("/", 1)[0]
    setup = _SETUP_CELL.format(url=url, folder=folder, branch="" if branch == "main" else f"\"--branch\", {branch!r}, ")
    cells.insert(first + 1, {"cell_type": "code", "execution_count": None, "id": "", "metadata": {"tags": [COLAB_TAG]},
                             "outputs": [], "source": _split_source(setup)})
    for number, cell in enumerate(cells):
        cell["id"] = str(number)
    return notebook


def edition(source: dict, which: str, name: str = "source") -> dict:
    """The ``which`` edition (``"student"``, ``"solutions"``, ``"assignment"``) of a source notebook (parsed .ipynb)."""
    if which not in EDITIONS:
        raise ValueError(f"edition must be one of {', '.join(EDITIONS)}, got {which!r}")
    cells = []
    for index, cell in enumerate(source["cells"]):
        tags = cell.get("metadata", {}).get("tags", [])
        in_solutions = SOLUTIONS_ONLY in tags or has_regions(cell)
        if (which in TRACKS and SOLUTIONS_ONLY in tags) or (which == "solutions" and not in_solutions):
            continue
        cells.append(_edition_cell(cell, which, f"{name}, cell {index}"))
    for number, cell in enumerate(cells):
        cell["id"] = str(number)
    notebook = {key: copy.deepcopy(value) for key, value in source.items() if key != "cells"}
    notebook["cells"] = cells
    metadata = notebook.setdefault("metadata", {})
    chapter = re.match(r"(\d\d)_", name)
    if which in TRACKS and chapter:
        metadata.setdefault("memseg_lite", {})["chapter"] = chapter[1]
        if which == "assignment":
            metadata["memseg_lite"]["track"] = TRACKS[which]
    else:
        metadata.pop("memseg_lite", None)
    return notebook


def edition_paths(source_path: Path, root: Path = ROOT, assignment: bool = False) -> dict[str, Path]:
    """Where the editions of ``instructor/source/NN_topic.ipynb`` live (``assignment``: its assignment edition too)."""
    paths = {"student": root / "notebooks" / source_path.name,
             "solutions": root / "solutions" / f"{source_path.stem}_solutions.ipynb"}
    if assignment:
        paths["assignment"] = root / "assignments" / f"{source_path.stem}_assignment.ipynb"
    return paths


def dumps(notebook: dict) -> str:
    """A notebook as Jupyter and nbstripout write it (one-space indent, sorted keys, UTF-8, final newline)."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def build(root: Path = ROOT, check: bool = False) -> list[Path]:
    """Write (or with ``check``, only compare) every edition of ``root/instructor/source``; the paths that differed."""
    sources = sorted((root / "instructor" / "source").glob("[0-9][0-9]_*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no source notebooks in {root / 'instructor' / 'source'}")
    differed, written = [], set()
    repository = read_repository(root)
    for source_path in sources:
        source = json.loads(source_path.read_text(encoding="utf-8"))
        with_core = any(has_core(cell) for cell in source["cells"])
        for which, path in edition_paths(source_path, root, with_core).items():
            written.add(path)
            notebook = edition(source, which, source_path.name)
            if repository is not None and which in TRACKS:
                add_colab_setup(notebook, repository, path.relative_to(root).as_posix())
            text = dumps(notebook)
            if path.is_file() and path.read_text(encoding="utf-8") == text:
                continue
            differed.append(path)
            if not check:
                write_text_atomic(path, text)
    for stale in sorted((root / "assignments").glob("*.ipynb")):  # a chapter no longer with core regions
        if stale not in written:
            differed.append(stale)
            if not check:
                stale.unlink()
    return differed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m memseg_lite.teaching.editions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="only report editions that differ from the source")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository [this checkout]")
    args = parser.parse_args(argv)
    differed = build(args.root, check=args.check)
    for path in differed:
        print(f"{'out of date' if args.check else 'written'}: {path}")
    if args.check and differed:
        print(
            "edit instructor/source/ and run `make editions`; "
            "never edit notebooks/, solutions/ or assignments/ by hand",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
