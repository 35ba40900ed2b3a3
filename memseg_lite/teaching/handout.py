"""The student handout: a zip of the workbook without solutions, instructor material or tests.

:func:`write_handout` packs the student edition (``notebooks/``), the package, the student-facing
docs and the files that install it (``pyproject.toml``, ``constraints.txt``,
``environment.yml``, ``Makefile``, ``README.md``, ``LICENSE``). Left out: ``solutions/``,
``instructor/`` (the source notebooks and the hidden tests), ``tests/``, ``benchmarks/`` and the
instructor's pages of ``docs/``. It refuses to pack student editions that are not what
``instructor/source`` generates (run ``make editions`` first). The zip is written atomically,
with fixed timestamps, so the same tree gives the same bytes.
"""

from __future__ import annotations

import os
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


def handout_files(root: Path = ROOT) -> list[Path]:
    """The files (relative to ``root``) that go into the handout, sorted."""
    files = [Path(name) for name in TOP_LEVEL_FILES if (root / name).is_file()]
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            relative = path.relative_to(root)
            if not path.is_file() or _SKIPPED_PARTS & set(relative.parts) or path.suffix in (".pyc", ".pyo"):
                continue
            if relative.parts[0] == "docs" and relative.name in INSTRUCTOR_DOCS:
                continue
            files.append(relative)
    return sorted(files)


def write_handout(out: str | os.PathLike, root: Path = ROOT, prefix: str = "memseg-lite") -> Path:
    """Write the handout zip to ``out`` (every member under ``prefix/``); the path written."""
    out = Path(out)
    stale = build(root, check=True)
    if any(path.parent.name == "notebooks" for path in stale):
        names = ", ".join(path.name for path in stale if path.parent.name == "notebooks")
        raise ValueError(
            f"the student editions are not what instructor/source gives ({names}); run `make editions` first"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(handle)
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for relative in handout_files(root):
                info = zipfile.ZipInfo(f"{prefix}/{relative.as_posix()}", date_time=_FIXED_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, (root / relative).read_bytes())
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return out
