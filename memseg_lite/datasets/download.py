"""Downloading MVTec AD and DTD: resumable, checksum-verified, safely extracted.

Nothing in the workbook needs these (the demo data is generated offline); they are for users
with internet access. When a source cannot be reached, the error says how to get the archive by
hand and where to unpack it. Public links to MVTec AD have moved several times, so each source
lists mirrors and ``--url`` overrides them.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from memseg_lite.datasets.mvtec import MVTEC_CATEGORIES

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A source could not be fetched or verified; the message says what to do by hand."""


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the destination (or is a device / odd link)."""


@dataclass(frozen=True)
class Source:
    name: str
    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    manual: str  # what to do by hand when every URL fails


MVTEC_MANUAL = (
    "Get MVTec AD by hand: open https://www.mvtec.com/company/research/datasets/mvtec-ad, accept the "
    "licence (CC BY-NC-SA 4.0), download mvtec_anomaly_detection.tar.xz (about 4.9 GB) or single "
    "categories, and either pass the file with `memseg-lite download mvtec --archive FILE`, or unpack "
    "it so that {dest}/<category>/train/good exists."
)
MVTEC = Source(
    name="MVTec AD",
    filename="mvtec_anomaly_detection.tar.xz",
    urls=(
        "https://www.mydrive.ch/shares/150996/b52ecdcbf521176e9db9c731f2304b27/download/420938113-1629960298/mvtec_anomaly_detection.tar.xz",
        "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/420938113-1629952094/mvtec_anomaly_detection.tar.xz",
    ),
    sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
    manual=MVTEC_MANUAL,
)
# Single-category archives (no published checksums: verified by their folder layout instead).
MVTEC_CATEGORY_URLS = {
    "bottle": "420937370-1629951468", "cable": "420937413-1629951498", "capsule": "420937454-1629951595",
    "carpet": "420937484-1629951672", "grid": "420937487-1629951814", "hazelnut": "420937545-1629951845",
    "leather": "420937607-1629951964", "metal_nut": "420937637-1629952063", "screw": "420938130-1629953152",
    "tile": "420938133-1629953189", "toothbrush": "420938134-1629953256", "transistor": "420938166-1629953277",
    "wood": "420938383-1629953354", "zipper": "420938385-1629953449",
}
_MYDRIVE = "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download"
_PILL = "https://www.mydrive.ch/shares/43421/11a215a5749fcfb75e331ddd5f8e43ee/download/420938129-1629953099/pill.tar.xz"

DTD = Source(
    name="DTD (Describable Textures Dataset)",
    filename="dtd-r1.0.1.tar.gz",
    urls=(
        "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
        "https://thor.robots.ox.ac.uk/dtd/dtd-r1.0.1.tar.gz",
    ),
    sha256="e42855a52a4950a3b59612834602aa253914755c95b0cff9ead6d07395f8e205",
    manual=(
        "Get DTD by hand: download dtd-r1.0.1.tar.gz (about 600 MB) from "
        "https://www.robots.ox.ac.uk/~vgg/data/dtd/ and pass it with `memseg-lite download dtd --archive FILE`, "
        "or unpack it so that {dest}/images/<texture class>/*.jpg exists. Without DTD the anomaly "
        "simulation uses its built-in procedural textures."
    ),
)


def mvtec_category_url(category: str) -> str:
    if category not in MVTEC_CATEGORIES:
        raise ValueError(f"unknown MVTec AD category {category!r}; choose from {', '.join(MVTEC_CATEGORIES)}")
    if category == "pill":
        return _PILL
    return f"{_MYDRIVE}/{MVTEC_CATEGORY_URLS[category]}/{category}.tar.xz"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: str | os.PathLike, sha256: str | None = None, progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest``, resuming a previous partial download, then verify ``sha256``.

    Bytes arrive in ``dest + ".part"``; an interrupted download continues from there with an
    HTTP Range request (a server that ignores it makes us start over). Only a complete, verified
    file is renamed to ``dest``. A checksum mismatch deletes the partial file and raises.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    partial = dest.with_name(dest.name + ".part")
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "memseg-lite"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the partial file is already complete
            response = None
        else:
            raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"cannot reach {url} ({reason})") from error

    if response is not None:
        with response:
            resumed = have and response.status == 206
            if not resumed:
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name)
            try:
                with open(partial, "ab" if resumed else "wb") as stream:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        stream.write(block)
                        if bar is not None:
                            bar.update(len(block))
            except (OSError, urllib.error.URLError, http.client.HTTPException) as error:
                raise DownloadError(
                    f"the download of {url} broke off after {partial.stat().st_size} bytes ({error}); "
                    "run the same command again to resume"
                ) from error
            finally:
                if bar is not None:
                    bar.close()
            received = partial.stat().st_size
            if total is not None and received < total:  # the server closed the connection early
                raise DownloadError(
                    f"the download of {url} broke off after {received} of {total} bytes; "
                    "run the same command again to resume"
                )

    if sha256 is not None:
        actual = sha256_of(partial)
        if actual != sha256:
            partial.unlink()
            raise DownloadError(
                f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}. "
                "The partial file was deleted; try again or use another mirror (--url)"
            )
    os.replace(partial, dest)
    return dest


def _check_member(member: tarfile.TarInfo, root: Path) -> None:
    """Refuse members that would write outside ``root``: absolute paths, '..', escaping links, devices."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or member.name.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"archive member {member.name!r} points outside the destination; refusing to extract")
    if member.isdev() or member.isfifo():
        raise UnsafeArchiveError(f"archive member {member.name!r} is a device or FIFO; refusing to extract")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        base = PurePosixPath(member.name).parent if member.issym() else PurePosixPath()
        resolved = (root / base / target).resolve() if not target.is_absolute() else Path(target)
        if target.is_absolute() or not resolved.is_relative_to(root.resolve()):
            raise UnsafeArchiveError(
                f"archive member {member.name!r} links to {member.linkname!r} outside the destination; refusing to extract"
            )


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a tar archive (.tar, .tar.gz, .tar.xz, ...) into ``dest``, refusing unsafe members.

    Every member is checked before anything is written, so a bad archive leaves ``dest`` untouched.
    Python's own ``data`` filter is applied on top where available.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    try:
        handle = tarfile.open(archive)
    except tarfile.TarError as error:
        raise ValueError(f"{archive} is not a readable tar archive ({error})") from error
    with handle as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, dest)
        dest.mkdir(parents=True, exist_ok=True)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python without the extraction filters
            tar.extractall(dest, members=members)
    return dest


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------
def _fetch(source: Source, urls: list[str], archive_dir: Path, sha256: str | None, dest: Path, progress: bool) -> Path:
    failures = []
    for url in urls:
        try:
            return download_file(url, archive_dir / source.filename, sha256=sha256, progress=progress)
        except DownloadError as error:
            failures.append(str(error))
    tried = "\n  ".join(failures)
    raise DownloadError(
        f"could not download {source.name}. Tried:\n  {tried}\n{source.manual.format(dest=dest)}"
    )


def _single_top_folder(folder: Path) -> Path | None:
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else None


def _move_children(source: Path, dest: Path) -> None:
    """Move everything inside ``source`` into ``dest`` (replacing same-named entries)."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        target = dest / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        shutil.move(str(entry), str(target))


def download_mvtec(
    dest: str | os.PathLike = "data/mvtec",
    category: str | None = None,
    archive: str | os.PathLike | None = None,
    url: str | None = None,
    sha256: str | None = MVTEC.sha256,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Download (or take ``archive``) and unpack MVTec AD, or one ``category``, into ``dest``.

    ``sha256`` checks the full archive (the official checksum by default). Single-category
    archives have no published checksum: they are checked by their folder layout, and their
    sha256 is printed so it can be recorded.
    """
    dest = Path(dest)
    archive_dir = dest / "downloads"
    if archive is not None:
        archive_path = Path(archive)
        if not archive_path.is_file():
            raise FileNotFoundError(f"archive {archive_path} does not exist")
    elif category is not None:
        source = Source(f"MVTec AD ({category})", f"{category}.tar.xz", (), None, MVTEC_MANUAL)
        checksum = sha256 if sha256 != MVTEC.sha256 else None
        archive_path = _fetch(source, [url or mvtec_category_url(category)], archive_dir, checksum, dest, progress)
        print(f"{archive_path.name}: sha256 {sha256_of(archive_path)}")
    else:
        archive_path = _fetch(MVTEC, [url] if url else list(MVTEC.urls), archive_dir, sha256, dest, progress)
    dest.mkdir(parents=True, exist_ok=True)
    # Unpack next to the destination (same file system: moves are renames), check, then move.
    with tempfile.TemporaryDirectory(dir=dest, prefix=".unpack-") as scratch:
        extracted = Path(safe_extract(archive_path, scratch))
        # Unwrap a single wrapper folder (e.g. "mvtec_anomaly_detection/") that holds the categories.
        top = _single_top_folder(extracted)
        if top is not None and not (top / "train").is_dir() and any((c / "train").is_dir() for c in top.iterdir()):
            extracted = top
        # Check the layout BEFORE touching dest, so a wrong archive never replaces existing data.
        found = sorted(c.name for c in extracted.iterdir() if (c / "train" / "good").is_dir())
        wanted = [category] if category else found
        missing = [c for c in wanted if c not in found]
        if missing or not wanted:
            raise DownloadError(
                f"{archive_path} is not in the MVTec AD layout: no <category>/train/good inside for "
                f"{missing or 'any category'}; nothing in {dest} was changed"
            )
        _move_children(extracted, dest)
    if not keep_archive and archive is None:
        archive_path.unlink(missing_ok=True)
    return dest


def download_dtd(
    dest: str | os.PathLike = "data/dtd",
    archive: str | os.PathLike | None = None,
    url: str | None = None,
    sha256: str | None = DTD.sha256,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Download (or take ``archive``) and unpack DTD so that ``dest/images/<class>/*.jpg`` exists.

    ``sha256`` is the official archive's checksum; pass another for a repackaged mirror.
    """
    dest = Path(dest)
    archive_dir = dest.parent / "downloads"
    if archive is not None:
        archive_path = Path(archive)
        if not archive_path.is_file():
            raise FileNotFoundError(f"archive {archive_path} does not exist")
    else:
        archive_path = _fetch(DTD, [url] if url else list(DTD.urls), archive_dir, sha256, dest, progress)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-unpack-") as scratch:
        extracted = Path(safe_extract(archive_path, scratch))
        top = _single_top_folder(extracted)  # the DTD archive holds one folder "dtd/"
        source = top if top is not None and (top / "images").is_dir() else extracted
        if not (source / "images").is_dir():  # checked before dest is touched
            raise DownloadError(
                f"{archive_path} is not in the DTD layout (images/<class>/*.jpg); nothing in {dest} was changed"
            )
        _move_children(source, dest)
    if not keep_archive and archive is None:
        archive_path.unlink(missing_ok=True)
    return dest
