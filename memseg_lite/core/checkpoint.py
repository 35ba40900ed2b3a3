"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(..., weights_only=True)`` (no arbitrary code runs when a file is opened)::

    {"format": "memseg-lite", "format_version": 1,
     "model_config": {...}, "model": state_dict,          # always
     "train_config": {...}, "step": int,                   # training checkpoints
     "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": {...}, "best": {...}}
"""

from __future__ import annotations

import errno
import os
import pickle
import re
from pathlib import Path

import torch

from memseg_lite.core.io import atomic_output
from memseg_lite.core.sizes import parse_size

FORMAT = "memseg-lite"
FORMAT_VERSION = 1

# What torch's C++ zip writer says when a write comes back short (a full disk, a quota).
_TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed writing")


class UnsafeCheckpointError(ValueError):
    """A file asks to run code (or build objects) when loaded; ``weights_only=True`` refused it."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (no space left, most often); the previous file is kept."""


def _write_failure(path: Path, error: BaseException, rerun: str) -> CheckpointWriteError | None:
    """A clear error for a failed checkpoint write, or ``None`` when ``error`` is something else."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        detail = error.strerror or str(error)
    elif isinstance(error, RuntimeError) and any(text in str(error) for text in _TORCH_WRITE_FAILURES):
        detail = f"torch: {str(error).splitlines()[-1].strip()}"
    else:
        return None
    if path.is_file():
        kept, again = f"the previous checkpoint {path} is kept", "run again with --resume"
    else:
        kept, again = f"no earlier {path.name} existed", rerun
    return CheckpointWriteError(
        f"no space left on device while writing {path} ({detail}); {kept}; free space (or choose a folder "
        f"on another disk) and {again}"
    )


def save_checkpoint(payload: dict, path: str | os.PathLike, rerun: str = "run again") -> Path:
    """Save ``payload`` to ``path`` atomically: a temporary file in the same folder, then rename.

    ``rerun`` ends the full-disk message when no earlier file existed (what the user should run).

    An interruption (Ctrl-C, a full disk, a crash) leaves either the old file or the new one,
    never a truncated mix.
    """
    path = Path(path)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    try:
        with atomic_output(path) as temporary:
            torch.save(payload, temporary)
    except (OSError, RuntimeError) as error:
        failure = _write_failure(path, error, rerun)
        if failure is None:
            raise
        raise failure from error
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a memseg-lite checkpoint with ``weights_only=True``; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; train one with `memseg-lite train ... --out RUN_DIR` "
            "(it writes RUN_DIR/checkpoint.pt and RUN_DIR/best.pt)"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():
            raise ValueError(
                f"cannot read checkpoint {path}: {type(error).__name__}: {error}. "
                "The file is corrupt, truncated or not a memseg-lite checkpoint"
            ) from error
        # torch's own text suggests weights_only=False, which would run the file's code: not repeated.
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" ({found.group(1)})" if found else ""
        raise UnsafeCheckpointError(
            f"refused checkpoint {path} as unsafe: it holds code or objects{what} that are not plain tensors and "
            "numbers, so it was not opened; use a checkpoint written by memseg-lite"
        ) from None
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise ValueError(
            f"cannot read checkpoint {path}: {type(error).__name__}: {error}. "
            "The file is corrupt, truncated or not a memseg-lite checkpoint"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a memseg-lite checkpoint (no 'format': '{FORMAT}' entry)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer memseg-lite (format {payload['format_version']}); "
            "upgrade memseg-lite to read it"
        )
    for key in ("model_config", "model"):
        if key not in payload:
            raise ValueError(f"checkpoint {path} has no {key!r} entry")
    return payload


def input_size(payload: dict) -> tuple[int | tuple[int, int], int | None]:
    """(size images are fitted to: ``S`` or ``(H, W)``, center crop or None) the checkpoint's model was trained with."""
    train_config = payload.get("train_config", {})
    height, width = parse_size(train_config.get("image_size", 256))
    return (height if height == width else (height, width)), train_config.get("center_crop")


def resize_mode(payload: dict) -> str:
    """How the checkpoint's model saw other shapes: ``"letterbox"`` or ``"stretch"`` (older checkpoints)."""
    return payload.get("train_config", {}).get("resize", "stretch")
