"""Reading and writing images with errors that name the file and say what to do."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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
    data = np.fromfile(str(path), dtype=np.uint8)  # works for non-ASCII paths too
    image = cv2.imdecode(data, flag) if data.size else None
    if image is None:
        raise ValueError(
            f"cannot decode image file {path} (corrupt, truncated or not an image); "
            "replace or delete it and try again"
        )
    # IMREAD_COLOR / IMREAD_GRAYSCALE already give 8 bits: 16-bit files are shifted right by 8,
    # the same scale for every image.
    if image.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype} in {path}; convert it to an 8-bit or 16-bit PNG")
    if grayscale:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


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
