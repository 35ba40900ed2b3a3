"""Reading and writing images and masks with errors that name the file and say what to do."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MASK_RULE = (
    "a mask is a single-channel image with 0 for the background and one non-zero value (1 or 255) "
    "for the defect, or a palette PNG whose index 0 is the background"
)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    An interruption (Ctrl-C, a crash, a full disk) leaves either the old file or the new one,
    never a truncated mix; the temporary file is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def write_csv_atomic(path: str | os.PathLike, rows: Iterable[Mapping[str, object]], fieldnames: Sequence[str]) -> Path:
    """Write ``rows`` as a CSV table with a header of ``fieldnames``, atomically (see :func:`atomic_output`).

    Exactly what :class:`csv.DictWriter` writes with its defaults (commas, ``\r\n`` line ends,
    quotes only where needed): a field a row lacks is left empty, and a key that is not one of
    ``fieldnames`` raises ``ValueError``. Values are written with ``str``: format numbers first.
    """
    with atomic_output(path) as temporary, temporary.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def missing_folders(folder: str | os.PathLike) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, outermost first."""
    missing = []
    for candidate in (Path(folder), *Path(folder).parents):
        if candidate.exists():
            break
        missing.append(candidate)
    return missing[::-1]


def remove_empty_folders(folders: Iterable[Path]) -> None:
    """Remove ``folders`` (a :func:`missing_folders` list: innermost last) where they are still empty."""
    for folder in reversed(list(folders)):
        with contextlib.suppress(OSError):
            folder.rmdir()


class StagingFolder:
    """The scratch folder of :func:`staging_folder`; ``path`` is where the new content is built."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._moved = 0

    def swap_in(self, pairs: Iterable[tuple[Path, Path]]) -> None:
        """Rename each ``(source, target)`` pair's finished ``source`` to ``target``, all or nothing.

        ``source`` is a file or folder built (under :attr:`path`, or anywhere on the same file
        system); ``target`` may be missing, a file or a non-empty folder. A target that exists is
        first renamed into :attr:`path` (so it is deleted with the scratch folder, never in place),
        then the source takes its name: every step is one rename, nothing is copied. If any rename
        fails, the pairs already swapped are undone (new content moved out, old content back,
        parent folders created here removed again) and the error is raised: the targets end up
        exactly as they were.
        """
        swapped: list[tuple[Path, Path | None]] = []
        created: list[Path] = []
        try:
            for source, target in pairs:
                created += missing_folders(target.parent)
                target.parent.mkdir(parents=True, exist_ok=True)
                retired = None
                if target.exists() or target.is_symlink():
                    retired = self._aside("replaced", target)
                    os.replace(target, retired)
                try:
                    os.replace(source, target)
                except BaseException:
                    if retired is not None:
                        os.replace(retired, target)
                    raise
                swapped.append((target, retired))
        except BaseException:
            for target, retired in reversed(swapped):
                os.replace(target, self._aside("undone", target))
                if retired is not None:
                    os.replace(retired, target)
            remove_empty_folders(created)
            raise

    def _aside(self, why: str, target: Path) -> Path:
        """A fresh name in the scratch folder for ``target``'s content (deleted with the scratch folder)."""
        self._moved += 1
        return self.path / f".{why}-{self._moved}-{target.name}"


@contextlib.contextmanager
def staging_folder(parent: str | os.PathLike, prefix: str = ".memseg-staging-") -> Iterator[StagingFolder]:
    """A fresh hidden scratch folder in ``parent`` for building content that then replaces what is there.

    The way to write a folder (or several) so that an interruption (Ctrl-C, a crash, a full disk,
    a bad input found half-way) never leaves a half-written result::

        with staging_folder(out.parent, prefix=f".{out.name}.partial-") as staging:
            build(staging.path / "new")                      # write everything here first
            staging.swap_in([(staging.path / "new", out)])   # then rename it into place

    ``parent`` is the folder that will hold the targets. The scratch folder is made there, or in
    its nearest existing ancestor when ``parent`` does not exist yet (nothing is created outside
    it before the swap), so it is on the targets' file system and moving out of it is a rename.
    It is removed on exit, whether the block succeeds or fails, together with whatever is left in
    it: half-built content, and the old content that :meth:`StagingFolder.swap_in` replaced.
    A caller can also move files out of ``staging.path`` its own way (``os.replace`` per file).
    """
    missing = missing_folders(parent)
    anchor = missing[0].parent if missing else Path(parent)
    scratch = Path(tempfile.mkdtemp(dir=anchor, prefix=prefix))
    try:
        yield StagingFolder(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (sorted by name; hidden files skipped)."""
    folder = Path(folder)
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )


def read_image(path: str | os.PathLike, grayscale: bool = False) -> np.ndarray:
    """Read an image as ``uint8``: RGB ``H x W x 3`` (grey-level files are expanded), or ``H x W``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file
    that exists but cannot be decoded (corrupt, truncated or not an image).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    image = _decode(path, np.fromfile(str(path), dtype=np.uint8), flag)  # fromfile: non-ASCII paths too
    # IMREAD_COLOR / IMREAD_GRAYSCALE already give 8 bits: 16-bit files are shifted right by 8,
    # the same scale for every image.
    if image.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype} in {path}; convert it to an 8-bit or 16-bit PNG")
    if grayscale:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@contextlib.contextmanager
def _decoder_messages() -> Iterator[list[str]]:
    """Catch what the C decoders print on stderr (``libpng error: ...``, OpenCV TIFF warnings).

    They write to file descriptor 2 directly, before our own one-line error; the text is kept
    (the yielded list gets it) so the error can quote it instead.
    """
    import sys

    caught: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to silence
        yield caught
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield caught
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            caught += [line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip()]


def _decoder_detail(lines: list[str]) -> str:
    """The decoder's own words, short: ``libpng error: IDAT: invalid block type`` -> ``libpng: IDAT: ...``."""
    if not lines:
        return ""
    text = lines[-1].replace("libpng error:", "libpng:").strip()
    if "] " in text and text.startswith("["):  # OpenCV's "[ WARN:0@0.1] global file.cpp:811 ... " prefix
        text = text.split("] ", 1)[1]
    return f"; the decoder said: {text[:160]}"


def _decode(path: Path, data: np.ndarray, flag: int) -> np.ndarray:
    """``cv2.imdecode`` with one clear ``ValueError`` for anything it cannot read (and nothing else on stderr)."""
    with _decoder_messages() as messages:
        try:
            image = cv2.imdecode(data, flag) if data.size else None
            unchanged = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if image is None and data.size else None
        except cv2.error as error:  # some malformed headers make opencv throw instead of returning None
            raise ValueError(
                f"cannot decode image file {path} ({error.err}); replace or delete it and try again"
            ) from None
    if image is None and unchanged is not None and unchanged.size and unchanged.dtype not in (np.uint8, np.uint16):
        # A valid file, with pixels opencv reads only as they are (float32 TIFFs, say).
        raise ValueError(
            f"image file {path} holds {unchanged.dtype} pixels, which memseg-lite does not read (8- and 16-bit "
            "images only); convert it to an 8-bit or 16-bit PNG or TIFF"
        )
    if image is None or image.size == 0:
        raise ValueError(
            f"cannot decode image file {path} (corrupt, truncated or not an image{_decoder_detail(messages)}); "
            "replace or delete it and try again"
        )
    return image


def png_palette(data: bytes) -> list[tuple[int, int, int]] | None:
    """The colours (RGB) of a palette PNG's ``PLTE`` chunk; ``None`` for any other file.

    Walks the chunks up to the first image data; a palette PNG without a readable palette is
    reported as ``[]`` (the decoder then refuses it).
    """
    if not data.startswith(PNG_SIGNATURE) or len(data) < 26 or data[12:16] != b"IHDR" or data[25] != 3:
        return None
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"PLTE":
            return [tuple(body[i : i + 3]) for i in range(0, len(body) - len(body) % 3, 3)]
        if kind in (b"IDAT", b"IEND") or len(body) < length:
            break
        offset += 12 + length  # length, type, body, CRC
    return []


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a ground-truth mask as ``uint8`` ``H x W`` with 1 where the defect is and 0 elsewhere.

    Non-zero pixels mark the defect, whatever their value: 0/1 and 0/255 masks, 8 or 16 bits,
    grey or RGB (any non-zero channel) all read the same. Palette PNGs are read by palette index:
    index 0 (its colour) is the background, every other index marks the defect, whatever the
    colours are (pixels of another index with exactly the colour of index 0 count as background).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the mask and its
    values) for a file that cannot be decoded, a grey / RGB mask with more than two distinct
    values (a JPEG-compressed or smoothly resized mask: which pixels are defect is a guess), and a
    mask without a single background pixel (most likely inverted: a dark defect on white).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    palette = png_palette(data.tobytes()) if data.size else None
    image = _decode(path, data, cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        image = image[..., :3]  # an alpha channel does not mark anything
        if image.shape[2] == 1:
            image = image[..., 0]
    if palette is not None:
        if not palette:
            raise ValueError(f"mask {path} is a palette PNG without a readable palette; {MASK_RULE}")
        background = np.asarray(palette[0][::-1], dtype=image.dtype)  # opencv decodes to BGR
        colour = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        defect = (colour != background).any(axis=2)
        values = None
    else:
        if image.ndim == 3 and (image == image[..., :1]).all():
            image = image[..., 0]  # grey stored as RGB
        if image.ndim == 3:
            values = np.unique(image.reshape(-1, image.shape[2]), axis=0)
            shown = [tuple(int(c) for c in v[::-1]) for v in values[:6]]  # as RGB
            defect = (image != 0).any(axis=2)
        else:
            values = np.unique(image)
            shown = [v.item() for v in values[:8]]
            defect = image != 0
        if len(values) > 2:
            more = ", ..." if len(values) > len(shown) else ""
            raise ValueError(
                f"mask {path} is not binary: it holds {len(values)} distinct values "
                f"({', '.join(str(v) for v in shown)}{more}); {MASK_RULE}. JPEG compression and smooth "
                "resizing make such masks: save it as PNG, resized with nearest-neighbour"
            )
    if defect.all():
        found = "" if values is None else f" (values: {', '.join(str(v.tolist()) for v in np.atleast_1d(values)[:4])})"
        raise ValueError(
            f"mask {path} has no background pixel: every pixel is marked as defect{found}; {MASK_RULE}. "
            "Is it inverted (dark defect on white)?"
        )
    return defect.astype(np.uint8)


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a ``uint8`` RGB or grey-level image atomically (temporary file + rename)."""
    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"write_image expects uint8 pixels, got {image.dtype} for {path}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim != 2:
        raise ValueError(f"write_image expects H x W or H x W x 3, got shape {image.shape} for {path}")
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ValueError(f"opencv cannot encode an image with suffix {path.suffix!r} ({path})")
    with atomic_output(path) as temporary:
        temporary.write_bytes(encoded.tobytes())
    return path
