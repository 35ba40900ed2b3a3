"""Bad input on the data side (issue 10): one test per case, table-driven, plus property-based tests.

Each row of ``CASES`` is one fault a user met: what it does to the data, and what must happen
instead. The property-based tests feed arbitrary bytes to the image reader, the mask reader and
the archive extraction: they may only ever raise the documented error types.
"""

from __future__ import annotations

import io
import socket
import struct
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memseg_lite.core.io import read_image, read_mask, write_image
from memseg_lite.datasets.demo.writer import write_demo_dataset
from memseg_lite.datasets.download import (
    CorruptArchiveError,
    DownloadError,
    UnsafeArchiveError,
    download_dtd,
    download_mvtec,
    safe_extract,
)
from memseg_lite.datasets.mvtec import load_mask, scan_category
from memseg_lite.simulation.textures import TextureSource


# --------------------------------------------------------------------------------------------
# Helpers: archives, PNGs and categories built by the tests themselves
# --------------------------------------------------------------------------------------------
def make_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def png(value: int, size: int = 8) -> bytes:
    """A small RGB PNG of one grey value (encoded through the package's writer into memory)."""
    import cv2

    ok, data = cv2.imencode(".png", np.full((size, size, 3), value, np.uint8))
    assert ok
    return data.tobytes()


def category_files(name: str, value: int = 1) -> dict[str, bytes]:
    return {
        f"{name}/train/good/000.png": png(value),
        f"{name}/test/good/000.png": png(value + 1),
        f"{name}/test/broken/000.png": png(value + 2),
        f"{name}/ground_truth/broken/000_mask.png": png(255),
    }


def palette_png(indices: np.ndarray, palette: list[tuple[int, int, int]]) -> bytes:
    """An 8-bit palette PNG written byte by byte (independent of opencv's encoder)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    height, width = indices.shape
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    raw = b"".join(b"\x00" + indices[row].astype(np.uint8).tobytes() for row in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"PLTE", b"".join(bytes(colour) for colour in palette))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Hidden staging folders or files left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def defect_category(root: Path, mask_name: str = "000_mask.png", mask_bytes: bytes | None = None) -> Path:
    category = root / "widget"
    write_image(category / "train" / "good" / "000.png", np.zeros((16, 16, 3), np.uint8))
    write_image(category / "test" / "good" / "000.png", np.zeros((16, 16, 3), np.uint8))
    write_image(category / "test" / "crack" / "000.png", np.zeros((16, 16, 3), np.uint8))
    mask_path = category / "ground_truth" / "crack" / mask_name
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    if mask_bytes is None:
        mask = np.zeros((16, 16), np.uint8)
        mask[4:8, 2:10] = 255
        write_image(mask_path.with_suffix(".png"), mask)
        mask_path.with_suffix(".png").rename(mask_path)
    else:
        mask_path.write_bytes(mask_bytes)
    return category


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------
def case_import_installs_only_the_requested_category(tmp_path: Path):
    archive = make_tar(tmp_path / "A.tar.gz", {**category_files("bottle"), **category_files("cable", 50)})
    dest = tmp_path / "mvtec"
    (dest / "cable" / "train" / "good").mkdir(parents=True)
    (dest / "cable" / "train" / "good" / "extra.png").write_bytes(b"the user's own image")
    (dest / "MY_NOTES.txt").write_text("mine")
    before = tree(dest)
    download_mvtec(dest, category="bottle", archive=archive)
    after = tree(dest)
    assert {k: v for k, v in after.items() if not k.startswith("bottle/")} == before, "only bottle/ may change"
    assert after["bottle/train/good/000.png"] == png(1)
    assert leftovers(dest) == [] and leftovers(tmp_path) == []


def case_existing_category_needs_force_and_then_only_it_is_replaced(tmp_path: Path):
    archive = make_tar(tmp_path / "A.tar.gz", {**category_files("bottle"), **category_files("cable", 50)})
    dest = tmp_path / "mvtec"
    (dest / "bottle" / "train" / "good").mkdir(parents=True)
    (dest / "bottle" / "train" / "good" / "mine.png").write_bytes(b"old bottle image")
    (dest / "cable" / "train" / "good").mkdir(parents=True)
    (dest / "cable" / "train" / "good" / "extra.png").write_bytes(b"the user's own image")
    (dest / "MY_NOTES.txt").write_text("mine")
    before = tree(dest)
    with pytest.raises(FileExistsError, match=r"bottle.*--force"):
        download_mvtec(dest, category="bottle", archive=archive)
    assert tree(dest) == before, "a refused import changes nothing"
    download_mvtec(dest, category="bottle", archive=archive, force=True)
    after = tree(dest)
    assert "bottle/train/good/mine.png" not in after and after["bottle/train/good/000.png"] == png(1)
    assert {k: v for k, v in after.items() if not k.startswith("bottle/")} == {
        k: v for k, v in before.items() if not k.startswith("bottle/")
    }
    assert leftovers(dest) == [] and leftovers(tmp_path) == []


def case_dtd_over_an_existing_folder_needs_force_and_keeps_user_files(tmp_path: Path):
    archive = make_tar(
        tmp_path / "dtd.tar.gz",
        {"dtd/images/banded/banded_0001.jpg": png(3), "dtd/labels/train1.txt": b"banded/banded_0001.jpg\n"},
    )
    dest = tmp_path / "data" / "dtd"
    (dest / "images" / "striped").mkdir(parents=True)
    (dest / "images" / "striped" / "old.jpg").write_bytes(b"old texture")
    (dest / "MY_NOTES.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"images.*--force"):
        download_dtd(dest, archive=archive)
    assert (dest / "images" / "striped" / "old.jpg").read_bytes() == b"old texture"
    download_dtd(dest, archive=archive, force=True)
    assert tree(dest) == {
        "MY_NOTES.txt": b"mine",
        "images/banded/banded_0001.jpg": png(3),
        "labels/train1.txt": b"banded/banded_0001.jpg\n",
    }
    assert leftovers(dest) == [] and leftovers(dest.parent) == []


def case_a_failed_import_leaves_no_empty_folders(tmp_path: Path):
    wrong = make_tar(tmp_path / "wrong.tar.gz", {"something/else.txt": b"x"})
    with pytest.raises(DownloadError, match="MVTec AD layout"):
        download_mvtec(tmp_path / "new" / "mvtec", category="bottle", archive=wrong)
    with pytest.raises(DownloadError, match="DTD layout"):
        download_dtd(tmp_path / "new" / "dtd", archive=wrong)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.tar.gz"], "no folder may be left behind"


def case_masks_stored_as_0_1_are_read(tmp_path: Path):
    mask = np.zeros((16, 16), np.uint8)
    mask[3:9, 5:12] = 1
    category = defect_category(tmp_path)
    path = category / "ground_truth" / "crack" / "000_mask.png"
    write_image(path, mask)
    np.testing.assert_array_equal(load_mask(path, (16, 16), 16), mask)
    sixteen = tmp_path / "sixteen.png"
    import cv2

    cv2.imwrite(str(sixteen), mask.astype(np.uint16))  # 0/1 in 16 bits: the top 8 bits are all zero
    np.testing.assert_array_equal(load_mask(sixteen, (16, 16), 16), mask)


def case_palette_masks_use_their_index_not_their_colour(tmp_path: Path):
    indices = np.zeros((16, 16), np.uint8)
    indices[2:6, 2:14] = 1
    # index 0 = white background, index 1 = dark red defect: grey levels would say the opposite
    inverted = tmp_path / "inverted_mask.png"
    inverted.write_bytes(palette_png(indices, [(255, 255, 255), (60, 0, 0)]))
    np.testing.assert_array_equal(read_mask(inverted), indices)
    red = tmp_path / "red_mask.png"
    red.write_bytes(palette_png(indices, [(0, 0, 0), (255, 0, 0)]))  # grey level 76 < 128
    np.testing.assert_array_equal(load_mask(red, (16, 16), 16), indices)


def case_mask_extensions_ignore_case(tmp_path: Path):
    defect_category(tmp_path, mask_name="000_mask.PNG")
    files = scan_category(tmp_path, "widget")
    (defect,) = [item for item in files.test if item.label]
    assert defect.mask is not None and defect.mask.name == "000_mask.PNG"
    assert load_mask(defect.mask, (16, 16), 16).sum() == 4 * 8


def case_masks_that_are_not_binary_are_refused_naming_their_values(tmp_path: Path):
    gradient = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))  # 16 grey levels: anti-aliased or JPEG
    path = write_image(tmp_path / "blurred_mask.png", gradient)
    with pytest.raises(ValueError, match=r"blurred_mask\.png.*16 distinct values.*0, 16, 32"):
        load_mask(path, (16, 16), 16)
    everywhere = write_image(tmp_path / "white_mask.png", np.full((16, 16), 255, np.uint8))
    with pytest.raises(ValueError, match=r"white_mask\.png.*no background.*255"):
        load_mask(everywhere, (16, 16), 16)


def case_demo_force_keeps_files_the_user_added(tmp_path: Path):
    out = tmp_path / "demo"
    write_demo_dataset(out, categories=["mesh"], size=32, n_train=2, n_test_good=1, n_per_defect=1)
    (out / "MY_NOTES.txt").write_text("mine")
    (out / "mesh" / "train" / "good" / "extra.png").write_bytes(b"my own image")
    before = tree(out)
    with pytest.raises(FileExistsError) as error:
        write_demo_dataset(out, categories=["mesh"], size=32, n_train=2, n_test_good=1, n_per_defect=1, force=True)
    assert "MY_NOTES.txt" in str(error.value) and "mesh/train/good/extra.png" in str(error.value)
    assert tree(out) == before, "nothing was deleted"
    (out / "MY_NOTES.txt").unlink()
    (out / "mesh" / "train" / "good" / "extra.png").unlink()
    write_demo_dataset(out, categories=["mesh"], size=32, n_train=3, n_test_good=1, n_per_defect=1, force=True)
    assert (out / "mesh" / "train" / "good" / "002.png").is_file(), "demo data alone is replaced"


def case_offline_opens_no_socket(tmp_path: Path, network_attempts: list):
    with pytest.raises(DownloadError, match="MEMSEG_OFFLINE") as error:
        download_dtd(tmp_path / "dtd", progress=False)
    assert "--archive" in str(error.value)
    with pytest.raises(DownloadError, match="MEMSEG_OFFLINE"):
        download_mvtec(tmp_path / "mvtec", category="bottle", progress=False)
    assert network_attempts == [], f"network look-ups while MEMSEG_OFFLINE=1: {network_attempts}"
    assert not (tmp_path / "dtd").exists() and not (tmp_path / "mvtec").exists()


def case_the_offline_guard_catches_look_ups_and_connections(tmp_path: Path, network_attempts: list):
    with pytest.raises(OSError, match="MEMSEG_OFFLINE"):
        socket.getaddrinfo("example.com", 80)
    with pytest.raises(OSError, match="MEMSEG_OFFLINE"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)
    with socket.socket() as sock, pytest.raises(OSError, match="MEMSEG_OFFLINE"):
        sock.connect(("192.0.2.1", 80))
    assert [kind for kind, _ in network_attempts] == ["getaddrinfo", "create_connection", "connect"]
    network_attempts.clear()  # seen: the guard itself is what this case checks
    assert socket.getaddrinfo("127.0.0.1", 80)  # loopback literals stay allowed (local test servers)


def case_truncated_archives_say_to_download_again(tmp_path: Path, mode: str, suffix: str):
    rng = np.random.default_rng(0)
    files = {**category_files("bottle"), "bottle/train/good/001.png": rng.bytes(20_000)}
    archive = make_tar(tmp_path / f"bottle{suffix}", files, mode)
    data = archive.read_bytes()
    for cut in (len(data) // 2, 1536 if mode == "w" else len(data) - 30):
        archive.write_bytes(data[:cut])
        with pytest.raises(CorruptArchiveError) as error:
            download_mvtec(tmp_path / "new" / "mvtec", category="bottle", archive=archive)
        message = str(error.value)
        assert str(archive) in message and "download it again" in message
        assert isinstance(error.value, ValueError)
        assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name], "no folder may be left behind"
        with pytest.raises(CorruptArchiveError):
            safe_extract(archive, tmp_path / "plain")
        assert not (tmp_path / "plain").exists()


def case_explicit_texture_root_must_exist(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"texture root .*no_dtd_here does not exist"):
        TextureSource(tmp_path / "no_dtd_here")


def case_missing_default_texture_root_warns_once(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"procedural textures.*memseg-lite download dtd") as record:
        source = TextureSource()  # the default data/dtd, not there
    assert source.kind == "procedural" and len(record) == 1


CASES: dict[str, Callable] = {
    "1 import installs only the requested category": case_import_installs_only_the_requested_category,
    "1 existing category needs --force, then only it is replaced": (
        case_existing_category_needs_force_and_then_only_it_is_replaced
    ),
    "1 DTD over an existing folder needs --force, keeps user files": (
        case_dtd_over_an_existing_folder_needs_force_and_keeps_user_files
    ),
    "1 a failed import leaves no empty folders": case_a_failed_import_leaves_no_empty_folders,
    "4 masks stored as 0/1 are read": case_masks_stored_as_0_1_are_read,
    "4 palette masks use their index": case_palette_masks_use_their_index_not_their_colour,
    "4 mask extensions ignore case": case_mask_extensions_ignore_case,
    "4 non-binary masks are refused, naming their values": (
        case_masks_that_are_not_binary_are_refused_naming_their_values
    ),
    "5 demo-data --force keeps files the user added": case_demo_force_keeps_files_the_user_added,
    "6 MEMSEG_OFFLINE opens no socket": case_offline_opens_no_socket,
    "6 the offline guard catches look-ups and connections": case_the_offline_guard_catches_look_ups_and_connections,
    "7 an explicit texture root must exist": case_explicit_texture_root_must_exist,
    "7 a missing default texture root warns once": case_missing_default_texture_root_warns_once,
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_case(case, tmp_path, network_attempts, monkeypatch):
    function = CASES[case]
    names = function.__code__.co_varnames[: function.__code__.co_argcount]
    available = {"tmp_path": tmp_path, "network_attempts": network_attempts, "monkeypatch": monkeypatch}
    function(**{name: available[name] for name in names})


@pytest.mark.parametrize("mode,suffix", [("w:gz", ".tar.gz"), ("w:xz", ".tar.xz"), ("w", ".tar")])
def test_bad_input_case_8_truncated_archive(mode, suffix, tmp_path):
    case_truncated_archives_say_to_download_again(tmp_path, mode, suffix)


# --------------------------------------------------------------------------------------------
# Property-based: arbitrary bytes give only the documented errors
# --------------------------------------------------------------------------------------------
FUZZ = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
VALID_PNG = png(7, 4)
VALID_MASK = palette_png(np.eye(4, dtype=np.uint8), [(0, 0, 0), (255, 255, 255)])


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` with a few bytes replaced, cut short, or with bytes appended."""
    positions = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), max_size=4)

    def apply(edits, cut, tail):
        data = bytearray(valid)
        for where, value in edits:
            data[where] = value
        return bytes(data[:cut]) + tail

    return st.builds(apply, positions, st.integers(0, len(valid)), st.binary(max_size=16))


def fuzz_file(tmp_path: Path, data: bytes, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@FUZZ
@given(data=st.one_of(st.binary(max_size=256), mutated(VALID_PNG), mutated(VALID_MASK)))
def test_image_reader_gives_an_image_or_a_value_error(tmp_path, data):
    path = fuzz_file(tmp_path, data, "fuzz.png")
    for grayscale in (False, True):
        try:
            image = read_image(path, grayscale=grayscale)
        except ValueError as error:
            assert str(path) in str(error)
        else:
            assert image.dtype == np.uint8 and image.ndim == (2 if grayscale else 3)


@FUZZ
@given(data=st.one_of(st.binary(max_size=256), mutated(VALID_MASK), mutated(VALID_PNG)))
def test_mask_reader_gives_a_binary_mask_or_a_value_error(tmp_path, data):
    path = fuzz_file(tmp_path, data, "fuzz_mask.png")
    try:
        mask = read_mask(path)
    except ValueError as error:
        assert str(path) in str(error)
    else:
        assert mask.dtype == np.uint8 and mask.ndim == 2 and set(np.unique(mask)) <= {0, 1}


def small_archive(mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, body in (("cat/train/good/000.png", VALID_PNG), ("cat/readme.txt", b"hello" * 20)):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=512),
        mutated(small_archive("w:gz")),
        mutated(small_archive("w:xz")),
        mutated(small_archive("w")),
    )
)
def test_archive_extraction_gives_files_inside_dest_or_a_documented_error(tmp_path, data):
    archive = fuzz_file(tmp_path, data, "fuzz.tar.gz")
    dest = tmp_path / "fuzz-dest"
    try:
        safe_extract(archive, dest)
    except (CorruptArchiveError, UnsafeArchiveError) as error:
        assert str(archive) in str(error) or "archive member" in str(error)
        assert not dest.exists(), "a failed extraction leaves no folder behind"
    else:
        for path in dest.rglob("*"):
            assert path.resolve().is_relative_to(dest.resolve())
    finally:
        import shutil

        shutil.rmtree(dest, ignore_errors=True)
