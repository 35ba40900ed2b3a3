"""core.io's folder staging (build beside the target, rename into place, all or nothing) and atomic CSV tables."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest

from memseg_lite.core.io import missing_folders, remove_empty_folders, staging_folder, write_csv_atomic


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` (relative path -> file bytes, ``None`` for a folder)."""
    return {
        path.relative_to(folder).as_posix(): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


def old_set(folder: Path) -> dict[str, bytes | None]:
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"old a")
    (folder / "sub" / "b.txt").write_bytes(b"old b")
    return tree(folder)


def test_a_built_folder_replaces_the_old_one_and_nothing_is_left_beside_it(tmp_path):
    out = tmp_path / "out"
    old_set(out)
    with staging_folder(tmp_path, prefix=".out.partial-") as staging:
        assert staging.path.parent == tmp_path and staging.path.name.startswith(".out.partial-")
        assert tree(out)["a.txt"] == b"old a", "nothing changes before the swap"
        built = staging.path / "new"
        built.mkdir()
        (built / "c.txt").write_bytes(b"new c")
        staging.swap_in([(built, out)])
    assert tree(out) == {"c.txt": b"new c"}, "the old content is gone, not merged"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no staging or retired folder left"


def test_files_and_missing_targets_are_swapped_in_with_their_parents_created(tmp_path):
    (tmp_path / "license.txt").write_text("old licence")
    with staging_folder(tmp_path) as staging:
        (staging.path / "license.txt").write_text("new licence")
        (staging.path / "cat").mkdir()
        (staging.path / "cat" / "x.png").write_bytes(b"x")
        staging.swap_in([
            (staging.path / "license.txt", tmp_path / "license.txt"),
            (staging.path / "cat", tmp_path / "deep" / "er" / "cat"),
        ])
    assert (tmp_path / "license.txt").read_text() == "new licence"
    assert (tmp_path / "deep" / "er" / "cat" / "x.png").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "license.txt"]


@pytest.mark.parametrize("interruption", [RuntimeError("bad input half-way"), KeyboardInterrupt()])
def test_a_failure_while_building_leaves_the_old_folder_and_no_staging_folder(tmp_path, interruption):
    out = tmp_path / "out"
    before = old_set(out)
    with pytest.raises(type(interruption)), staging_folder(tmp_path) as staging:
        (staging.path / "new").mkdir()
        (staging.path / "new" / "half.txt").write_bytes(b"half")
        raise interruption
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failing_rename_undoes_every_pair_already_swapped(tmp_path, monkeypatch):
    first, second, fresh = tmp_path / "first", tmp_path / "second", tmp_path / "new" / "fresh"
    before_first, before_second = old_set(first), old_set(second)
    real_replace = os.replace

    def full_disk_on_second(source, target):
        if Path(target) == second and Path(source).name == "second-new":
            raise OSError(28, "No space left on device")
        return real_replace(source, target)

    with pytest.raises(OSError, match="No space left"), staging_folder(tmp_path) as staging:
        for name in ("first-new", "fresh-new", "second-new"):
            (staging.path / name).mkdir()
            (staging.path / name / "n.txt").write_text(name)
        monkeypatch.setattr(os, "replace", full_disk_on_second)
        staging.swap_in([
            (staging.path / "first-new", first),  # replaced, then put back
            (staging.path / "fresh-new", fresh),  # did not exist: removed again, with its new parent
            (staging.path / "second-new", second),  # this rename fails
        ])
    monkeypatch.setattr(os, "replace", real_replace)
    assert tree(first) == before_first and tree(second) == before_second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "second"], "no new, staging or retired folder"


def test_a_new_parent_is_not_created_before_the_swap(tmp_path):
    parent = tmp_path / "a" / "b"
    with staging_folder(parent) as staging:
        assert staging.path.parent == tmp_path, "the scratch folder sits in the nearest existing folder"
        assert not (tmp_path / "a").exists()
        (staging.path / "set").mkdir()
        staging.swap_in([(staging.path / "set", parent / "set")])
    assert (parent / "set").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_missing_folders_and_remove_empty_folders(tmp_path):
    target = tmp_path / "x" / "y" / "z"
    missing = missing_folders(target)
    assert missing == [tmp_path / "x", tmp_path / "x" / "y", target], "outermost first"
    assert missing_folders(tmp_path) == []
    target.mkdir(parents=True)
    (tmp_path / "x" / "keep.txt").write_text("kept")
    remove_empty_folders(missing)
    assert not (tmp_path / "x" / "y").exists(), "the empty ones go, innermost first"
    assert (tmp_path / "x" / "keep.txt").read_text() == "kept", "a folder holding a file stays"


CSV_ROWS = [
    {"name": "plain", "value": "1.50", "note": ""},
    {"name": 'comma, and "quotes"', "value": "2", "note": "line\nbreak"},
    {"name": "short row"},  # missing fields are written empty
]


def test_write_csv_atomic_writes_what_the_csv_module_writes(tmp_path):
    expected = io.StringIO(newline="")
    writer = csv.DictWriter(expected, fieldnames=["name", "value", "note"])
    writer.writeheader()
    for row in CSV_ROWS:
        writer.writerow(row)
    path = write_csv_atomic(tmp_path / "sub" / "table.csv", iter(CSV_ROWS), ["name", "value", "note"])
    assert path == tmp_path / "sub" / "table.csv"
    assert path.read_bytes() == expected.getvalue().encode()
    assert path.read_bytes().startswith(b"name,value,note\r\nplain,1.50,\r\n")
    with path.open(newline="") as stream:
        assert [dict(r) for r in csv.DictReader(stream)][1] == {**CSV_ROWS[1]}


def test_write_csv_atomic_keeps_the_old_table_when_a_row_is_bad(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old table\n")
    with pytest.raises(ValueError, match="unknown"):
        write_csv_atomic(path, [{"name": "ok"}, {"name": "x", "unknown": 1}], ["name"])
    assert path.read_text() == "old table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"], "no temporary file left"
