"""Downloading MVTec AD and DTD: resumable, checksum-verified, safely extracted.

Nothing in the workbook needs these (the demo data is generated offline); they are for users
with internet access. When a source cannot be reached, the error says how to get the archive by
hand and where to unpack it. Public links to MVTec AD have moved several times, so each source
lists mirrors and ``--url`` overrides them. With ``MEMSEG_OFFLINE=1`` nothing is fetched (no name
look-up, no connection), except from literal loopback addresses; ``--archive`` still works.

Imports are transactional and scoped: the archive is unpacked into a hidden staging folder on the
destination's file system and its layout checked; only then are the requested categories (or
DTD's own folders) renamed into place. Everything else in the destination (other categories,
your notes, extra files) is never touched; an existing category is replaced only with
``force=True`` (``--force``), and a failure leaves the destination as it was, with no empty folders.
"""

from __future__ import annotations

import hashlib
import http.client
import lzma
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from memseg_lite.core.io import missing_folders, remove_empty_folders, staging_folder
from memseg_lite.core.offline import is_loopback_url, network_allowed
from memseg_lite.datasets.mvtec import MVTEC_CATEGORIES

CHUNK = 1 << 20
#: The hidden scratch folder an archive is unpacked into, inside ``dest`` (see core.io.staging_folder).
UNPACK_PREFIX = ".memseg-unpack-"


class DownloadError(RuntimeError):
    """A source could not be fetched or verified; the message says what to do by hand."""


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the destination (or is a device / odd link)."""


class CorruptArchiveError(ValueError):
    """An archive is truncated or damaged (usually an interrupted download): download it again."""


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


class _OfflineAwareRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects like urllib does, but with ``MEMSEG_OFFLINE=1`` only to loopback addresses.

    urllib would otherwise follow a local mirror's redirect to another host and look its name up.
    """

    def __init__(self, first_url: str):
        super().__init__()
        self.first_url = first_url

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urllib.parse.urljoin(req.full_url, newurl)
        if not network_allowed(target):
            raise DownloadError(
                f"MEMSEG_OFFLINE=1 is set and {self.first_url} redirects (HTTP {code}) to {target}, which is not a "
                "loopback address, so it was not followed (no network access at all); fetch that URL by hand and "
                "pass the file with --archive, or unset MEMSEG_OFFLINE"
            )
        return super().redirect_request(req, fp, code, msg, headers, target)


def download_file(
    url: str, dest: str | os.PathLike, sha256: str | None = None, progress: bool = True, timeout: float = 30.0
) -> Path:
    """Fetch ``url`` to ``dest``, resuming a previous partial download, then verify ``sha256``.

    Bytes arrive in ``dest + ".part"``; an interrupted download continues from there with an
    HTTP Range request (a server that ignores it makes us start over). Only a complete, verified
    file is renamed to ``dest``. A checksum mismatch deletes the partial file and raises. With
    ``MEMSEG_OFFLINE=1`` only literal loopback URLs are fetched; others raise ``DownloadError``
    before any socket is opened.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    if not network_allowed(url):  # before any name look-up or connection
        raise DownloadError(
            f"MEMSEG_OFFLINE=1 is set, so {url} was not fetched (no network access at all); "
            "unset MEMSEG_OFFLINE (or set it to 0) to download"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "memseg-lite"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    # A loopback address never goes through a proxy (which would mean a name look-up elsewhere);
    # every redirect is checked against the offline switch before it is followed.
    handlers = [_OfflineAwareRedirects(url)] + ([urllib.request.ProxyHandler({})] if is_loopback_url(url) else [])
    try:
        response = urllib.request.build_opener(*handlers).open(request, timeout=timeout)
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


def _corrupt(archive: Path, error: BaseException | str) -> CorruptArchiveError:
    cause = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return CorruptArchiveError(
        f"archive {archive} is truncated or damaged, or not a tar archive ({cause}). This is usually an "
        "interrupted download: delete the file and download it again"
    )


def _is_read_error(error: BaseException) -> bool:
    """Errors that mean "the archive's bytes are bad", as opposed to a problem writing the files.

    tarfile, gzip (``BadGzipFile``, ``EOFError``), lzma and bz2 report bad data with these; an
    ``OSError`` with an ``errno`` (no space, permission, ...) is about the destination instead.
    """
    if isinstance(error, tarfile.FilterError):
        return False
    if isinstance(error, (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)):
        return True
    return isinstance(error, OSError) and error.errno is None


def _read_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """All members, checking that the archive is complete (its end marker and, compressed, its trailer)."""
    members = tar.getmembers()
    # tarfile stops without a word when a plain .tar is cut exactly between two members; a complete
    # archive has a zero block after the last member, which tarfile has just read in full.
    if tar.fileobj.tell() < tar.offset + tarfile.BLOCKSIZE:
        raise _corrupt(archive, "it ends before its end-of-archive marker")
    # Read what is left (padding): gzip / xz check their own end marker and checksum on the way.
    while tar.fileobj.read(CHUNK):
        pass
    return members


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
                f"archive member {member.name!r} links to {member.linkname!r} outside the destination; refusing to "
                "extract"
            )


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a tar archive (.tar, .tar.gz, .tar.xz, ...) into ``dest``, refusing unsafe members.

    Every member is checked, and the archive read to its end, before anything is written, so an
    unsafe (:class:`UnsafeArchiveError`) or truncated / damaged archive (:class:`CorruptArchiveError`,
    a ``ValueError`` that says to download it again) leaves ``dest`` untouched. A ``dest`` created
    here is removed again when extraction fails. Python's own ``data`` filter is applied on top.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    created = missing_folders(dest)
    try:
        try:
            tar = tarfile.open(archive)
        except Exception as error:
            if _is_read_error(error):
                raise _corrupt(archive, error) from None
            raise
        with tar:
            try:
                members = _read_members(tar, archive)
            except Exception as error:
                if _is_read_error(error):
                    raise _corrupt(archive, error) from None
                raise
            for member in members:
                _check_member(member, dest)
            dest.mkdir(parents=True, exist_ok=True)
            try:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(dest, members=members, filter="data")
                else:  # pragma: no cover - Python without the extraction filters
                    tar.extractall(dest, members=members)
            except tarfile.FilterError as error:
                raise UnsafeArchiveError(f"archive {archive}: {error}; refusing to extract") from None
            except Exception as error:
                if _is_read_error(error):
                    raise _corrupt(archive, error) from None
                raise
    except BaseException:
        if created:
            shutil.rmtree(created[0], ignore_errors=True)
        raise
    return dest


# --------------------------------------------------------------------------------------------
# Transactional imports (the scratch folder and the all-or-nothing swap: core.io.staging_folder)
# --------------------------------------------------------------------------------------------
def _refuse_existing(existing: list[Path], what: str, dest: Path) -> None:
    if existing:
        names = ", ".join(str(path) for path in existing)
        raise FileExistsError(
            f"{names} already exist{'s' if len(existing) == 1 else ''}; pass --force (force=True) to replace "
            f"{what} (nothing else in {dest} is touched). Nothing was changed"
        )


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------
def _fetch(source: Source, urls: list[str], archive_dir: Path, sha256: str | None, dest: Path, progress: bool) -> Path:
    created = missing_folders(archive_dir)
    failures = []
    for url in urls:
        try:
            return download_file(url, archive_dir / source.filename, sha256=sha256, progress=progress)
        except DownloadError as error:
            failures.append(str(error))
    remove_empty_folders(created)  # a partial file (kept to resume) keeps its folder
    tried = "\n  ".join(failures)
    raise DownloadError(
        f"could not download {source.name}. Tried:\n  {tried}\n{source.manual.format(dest=dest)}"
    )


def _single_top_folder(folder: Path) -> Path | None:
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else None


def _check_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"destination {dest} is a file, not a folder; choose another --dest")


def _unpack(archive_path: Path, scratch: Path, downloaded: bool) -> Path:
    """Extract into ``scratch``; a truncated archive we downloaded ourselves is deleted (so a rerun fetches it)."""
    try:
        return safe_extract(archive_path, scratch / "archive")
    except CorruptArchiveError as error:
        if not downloaded:
            raise
        archive_path.unlink(missing_ok=True)
        raise CorruptArchiveError(f"{error}. The downloaded file was deleted: run the same command again") from None


def download_mvtec(
    dest: str | os.PathLike = "data/mvtec",
    category: str | None = None,
    archive: str | os.PathLike | None = None,
    url: str | None = None,
    sha256: str | None = MVTEC.sha256,
    keep_archive: bool = False,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Download (or take ``archive``) and unpack MVTec AD, or one ``category``, into ``dest``.

    ``sha256`` checks the full archive (the official checksum by default). Single-category
    archives have no published checksum: they are checked by their folder layout, and their
    sha256 is printed so it can be recorded.

    Only ``dest/<category>`` folders are written: with ``category``, that one alone (an archive
    holding more categories installs only it); without, every category in the archive (plus its
    top-level files such as ``license.txt`` where ``dest`` has none). A category that already
    exists raises ``FileExistsError`` unless ``force``, which replaces that category's folder
    and nothing else. Nothing is changed until the archive was fully read and its layout checked.
    """
    dest = Path(dest)
    _check_dest(dest)
    if category is not None and (not category or category in {".", ".."} or Path(category).name != category):
        raise ValueError(f"category {category!r} is not a folder name; give a category such as 'bottle'")
    if category is not None and not force:  # before a long download
        _refuse_existing([dest / category] if (dest / category).exists() else [], f"category {category}", dest)
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
    with staging_folder(dest, prefix=UNPACK_PREFIX) as staging:
        extracted = _unpack(archive_path, staging.path, downloaded=archive is None)
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
        existing = [dest / c for c in wanted if (dest / c).exists()]
        if not force:
            _refuse_existing(existing, "them" if len(existing) > 1 else "it", dest)
        pairs = [(extracted / c, dest / c) for c in wanted]
        if category is None:  # the full archive's license.txt / readme.txt, never over a file already there
            pairs += [
                (entry, dest / entry.name)
                for entry in sorted(extracted.iterdir())
                if entry.is_file() and not entry.name.startswith(".") and not (dest / entry.name).exists()
            ]
        staging.swap_in(pairs)
    if not keep_archive and archive is None:
        archive_path.unlink(missing_ok=True)
        remove_empty_folders([archive_dir])
    return dest


def download_dtd(
    dest: str | os.PathLike = "data/dtd",
    archive: str | os.PathLike | None = None,
    url: str | None = None,
    sha256: str | None = DTD.sha256,
    keep_archive: bool = False,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Download (or take ``archive``) and unpack DTD so that ``dest/images/<class>/*.jpg`` exists.

    ``sha256`` is the official archive's checksum; pass another for a repackaged mirror. Only
    DTD's own entries (``images/``, ``labels/``, ``imdb/``: whatever the archive's ``dtd/`` holds)
    are written; one that already exists in ``dest`` raises ``FileExistsError`` unless
    ``force``, which replaces those entries and leaves everything else in ``dest`` alone.
    """
    dest = Path(dest)
    _check_dest(dest)
    if not force:  # before a long download
        _refuse_existing([dest / "images"] if (dest / "images").exists() else [], "DTD's folders", dest)
    archive_dir = dest.parent / "downloads"
    if archive is not None:
        archive_path = Path(archive)
        if not archive_path.is_file():
            raise FileNotFoundError(f"archive {archive_path} does not exist")
    else:
        archive_path = _fetch(DTD, [url] if url else list(DTD.urls), archive_dir, sha256, dest, progress)
    with staging_folder(dest, prefix=UNPACK_PREFIX) as staging:
        extracted = _unpack(archive_path, staging.path, downloaded=archive is None)
        top = _single_top_folder(extracted)  # the DTD archive holds one folder "dtd/"
        source = top if top is not None and (top / "images").is_dir() else extracted
        if not (source / "images").is_dir():  # checked before dest is touched
            raise DownloadError(
                f"{archive_path} is not in the DTD layout (images/<class>/*.jpg); nothing in {dest} was changed"
            )
        entries = sorted(entry for entry in source.iterdir() if not entry.name.startswith("."))
        existing = [dest / entry.name for entry in entries if (dest / entry.name).exists()]
        if not force:
            _refuse_existing(existing, "DTD's folders", dest)
        staging.swap_in([(entry, dest / entry.name) for entry in entries])
    if not keep_archive and archive is None:
        archive_path.unlink(missing_ok=True)
        remove_empty_folders([archive_dir])
    return dest
