"""Image sizes: ``S`` or ``H x W`` (parse_size) and the ways of fitting an image to one (RESIZE_MODES).

Light on purpose (no numpy, torch or OpenCV), so the configuration and the command line can use it
without slowing ``memseg-lite --help``. The fitting itself is in :mod:`memseg_lite.core.transforms`.
"""

from __future__ import annotations

import numbers
import re

RESIZE_MODES = ("letterbox", "stretch")


def parse_size(value) -> tuple[int, int]:
    """``(height, width)`` from ``256``, ``"256"``, ``"256x512"`` (height x width), ``(256, 512)`` or ``[256, 512]``.

    Raises ``ValueError`` for anything else, or for a side below 1.
    """
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*(?:[xX*]\s*(\d+)\s*)?", value)
        if match is None:
            raise ValueError(f"image size {value!r} is not S or HxW (e.g. 256 or 256x512)")
        height = int(match.group(1))
        width = int(match.group(2)) if match.group(2) else height
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        height = width = int(value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
    ):
        height, width = int(value[0]), int(value[1])
    else:
        raise ValueError(f"image size {value!r} is not S or HxW (e.g. 256 or 256x512)")
    if height < 1 or width < 1:
        raise ValueError(f"image size {value!r} must be positive")
    return height, width


def size_label(size) -> str:
    """``"256 x 512"`` for a size in any form :func:`parse_size` accepts."""
    height, width = parse_size(size)
    return f"{height} x {width}"
