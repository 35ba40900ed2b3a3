"""The student handout: a zip of the workbook without solutions, instructor material or tests.

:func:`write_handout` packs the student edition (``notebooks/``), the package, the student-facing
docs and the files that install it (``pyproject.toml``, ``constraints.txt``,
``environment.yml``, ``Makefile``, ``README.md``, ``LICENSE``). Left out: ``solutions/``,
``instructor/`` (the source notebooks and the hidden tests), ``tests/``, ``benchmarks/`` and the
instructor's pages of ``docs/``. It refuses to pack student editions that are not what
``instructor/source`` generates (run ``make editions`` first). The zip is written atomically,
with fixed timestamps, so the same tree gives the same bytes.

``track="assignment"`` (``make handout-assignment``) ships the assignment track instead: for each
chapter with an assignment edition, ``assignments/NN_topic_assignment.ipynb`` goes into the zip's
``notebooks/`` in place of the worked ``NN_topic.ipynb`` (which holds the core worked); the other
chapters keep their student edition.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from pathlib import Path

from memseg_lite.teaching.editions import ROOT, build

TOP_LEVEL_FILES = ("README.md", "LICENSE", "pyproject.toml", "constraints.txt", "environment.yml", "Makefile")
FOLDERS = ("notebooks", "memseg_lite", "docs")
#: docs pages for instructors only
INSTRUCTOR_DOCS = ("instructor.md", "grading.md")
_SKIPPED_PARTS = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}
_FIXED_TIME = (2024, 1, 1, 0, 0, 0)
TRACKS = ("worked", "assignment")


def _assignment_editions(root: Path) -> dict[str, Path]:
    """{worked notebook's name: its assignment edition (relative to ``root``)}."""
    return {path.name.replace("_assignment.ipynb", ".ipynb"): path.relative_to(root)
            for path in sorted((root / "assignments").glob("[0-9][0-9]_*_assignment.ipynb"))}


def handout_files(root: Path = ROOT, track: str = "worked") -> list[Path]:
    """The files (relative to ``root``) that go into the handout, sorted (see the module docstring for ``track``)."""
    if track not in TRACKS:
        raise ValueError(f"track must be one of {', '.join(TRACKS)}, got {track!r}")
    replaced = _assignment_editions(root) if track == "assignment" else {}
    files = [Path(name) for name in TOP_LEVEL_FILES if (root / name).is_file()]
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            relative = path.relative_to(root)
            if not path.is_file() or _SKIPPED_PARTS & set(relative.parts) or path.suffix in (".pyc", ".pyo"):
                continue
            if relative.parts[0] == "docs" and relative.name in INSTRUCTOR_DOCS:
                continue
            if relative.parts[0] == "notebooks" and relative.name in replaced:
                continue
            files.append(relative)
    return sorted(files + list(replaced.values()))


def _member(relative: Path) -> str:
    """Where a file goes in the zip: an assignment edition sits in notebooks/ (its ../data paths resolve there)."""
    if relative.parts[0] == "assignments":
        return Path("notebooks", *relative.parts[1:]).as_posix()
    return relative.as_posix()


def write_handout(
    out: str | os.PathLike, root: Path = ROOT, prefix: str = "memseg-lite", track: str = "worked"
) -> Path:
    """Write the handout zip to ``out`` (every member under ``prefix/``); the path written."""
    out = Path(out)
    shipped = handout_files(root, track)
    stale = [path for path in build(root, check=True) if path.parent.name in ("notebooks", "assignments")]
    if stale:
        names = ", ".join(path.name for path in stale)
        raise ValueError(
            f"the student editions are not what instructor/source gives ({names}); run `make editions` first"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(handle)
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for relative in shipped:
                info = zipfile.ZipInfo(f"{prefix}/{_member(relative)}", date_time=_FIXED_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, (root / relative).read_bytes())
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m memseg_lite.teaching.handout", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/handout.zip"), help="zip to write [outputs/handout.zip]"
    )
    parser.add_argument(
        "--track",
        choices=TRACKS,
        default="worked",
        help="worked: the student editions; assignment: the assignment editions where a chapter has one",
    )
    args = parser.parse_args(argv)
    try:
        print(f"handout: {write_handout(args.out, track=args.track)}")
    except (OSError, ValueError) as error:
        print(f"handout: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
