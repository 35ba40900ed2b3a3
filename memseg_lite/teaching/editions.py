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

``python -m memseg_lite.teaching.editions`` (``make editions``) rewrites both folders;
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
EDITIONS = ("student", "solutions")
ROOT = Path(__file__).resolve().parents[2]


def _text(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def has_regions(cell: dict) -> bool:
    """Whether a cell holds a solution or student region (an exercise cell)."""
    return any(line.strip() in MARKERS for line in _text(cell).splitlines())


def resolve_regions(text: str, edition: str, where: str = "cell") -> str:
    """``text`` as ``edition`` (``"student"`` or ``"solutions"``) sees it: markers dropped, the other
    edition's lines cut."""
    keep = {"student": "student", "solutions": "solution"}[edition]
    lines, kept, inside = text.splitlines(keepends=True), [], None
    for number, line in enumerate(lines, 1):
        marker = MARKERS.get(line.strip())
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
    if lines and lines[-1].strip() in MARKERS and result.endswith("\n"):
        result = result[:-1]
    return result


def _split_source(text: str) -> list[str]:
    """A cell's source as Jupyter stores it: lines with their newlines, the last without."""
    return text.splitlines(keepends=True)


def _edition_cell(cell: dict, edition: str, where: str) -> dict:
    out = copy.deepcopy(cell)
    if has_regions(cell):  # other cells keep their stored lines exactly
        out["source"] = _split_source(resolve_regions(_text(cell), edition, where))
    tags = [t for t in out.get("metadata", {}).get("tags", []) if t != SOLUTIONS_ONLY]
    if edition == "student":
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


def edition(source: dict, which: str, name: str = "source") -> dict:
    """The ``which`` edition (``"student"`` or ``"solutions"``) of a source notebook (a parsed .ipynb dict)."""
    if which not in EDITIONS:
        raise ValueError(f"edition must be one of {', '.join(EDITIONS)}, got {which!r}")
    cells = []
    for index, cell in enumerate(source["cells"]):
        tags = cell.get("metadata", {}).get("tags", [])
        in_solutions = SOLUTIONS_ONLY in tags or has_regions(cell)
        if (which == "student" and SOLUTIONS_ONLY in tags) or (which == "solutions" and not in_solutions):
            continue
        cells.append(_edition_cell(cell, which, f"{name}, cell {index}"))
    for number, cell in enumerate(cells):
        cell["id"] = str(number)
    notebook = {key: copy.deepcopy(value) for key, value in source.items() if key != "cells"}
    notebook["cells"] = cells
    metadata = notebook.setdefault("metadata", {})
    chapter = re.match(r"(\d\d)_", name)
    if which == "student" and chapter:
        metadata.setdefault("memseg_lite", {})["chapter"] = chapter[1]
    else:
        metadata.pop("memseg_lite", None)
    return notebook


def edition_paths(source_path: Path, root: Path = ROOT) -> dict[str, Path]:
    """Where the editions of ``instructor/source/NN_topic.ipynb`` live."""
    return {"student": root / "notebooks" / source_path.name,
            "solutions": root / "solutions" / f"{source_path.stem}_solutions.ipynb"}


def dumps(notebook: dict) -> str:
    """A notebook as Jupyter and nbstripout write it (one-space indent, sorted keys, UTF-8, final newline)."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def build(root: Path = ROOT, check: bool = False) -> list[Path]:
    """Write (or with ``check``, only compare) every edition of ``root/instructor/source``; the paths that differed."""
    sources = sorted((root / "instructor" / "source").glob("[0-9][0-9]_*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no source notebooks in {root / 'instructor' / 'source'}")
    differed = []
    for source_path in sources:
        source = json.loads(source_path.read_text(encoding="utf-8"))
        for which, path in edition_paths(source_path, root).items():
            text = dumps(edition(source, which, source_path.name))
            if path.is_file() and path.read_text(encoding="utf-8") == text:
                continue
            differed.append(path)
            if not check:
                write_text_atomic(path, text)
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
            "edit instructor/source/ and run `make editions`; never edit notebooks/ or solutions/ by hand",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
