"""Device selection, seeding and mixed precision (autocast), shared by the trainer, evaluation, deployment and the
notebooks."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

#: What ``device="auto"`` resolves to when set (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
DEVICE_VARIABLE = "MEMSEG_DEVICE"


def auto_device_setting() -> str:
    """What ``device="auto"`` stands for here: ``MEMSEG_DEVICE`` when it is set, else ``"auto"``."""
    return os.environ.get(DEVICE_VARIABLE, "").strip() or "auto"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into the best available device (cuda, then mps, then cpu).

    The environment variable ``MEMSEG_DEVICE`` (e.g. ``cpu``), when set, is what ``"auto"`` means
    instead: the test suite sets it so that it runs on the CPU on a GPU machine too. Any other
    value is passed to :class:`torch.device`; asking for CUDA on a machine without it raises a
    ``ValueError`` that says so instead of failing later.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto" and auto_device_setting() != "auto":
        try:
            return resolve_device(auto_device_setting())
        except ValueError as error:
            raise ValueError(f"environment variable {DEVICE_VARIABLE}: {error}") from None
    elif device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError as error:
            raise ValueError(
                f"device={device!r} is not a device name; use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'"
            ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available here; use device='auto' or 'cpu'")
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device={device!r} was requested but MPS is not available here; use device='auto' or 'cpu'")
    return resolved


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy and torch (all devices); return a fresh numpy Generator for ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def check_rng(rng: object) -> np.random.Generator:
    """``rng`` itself, or a ``TypeError`` naming what to pass when it is not a numpy Generator."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)), got {type(rng).__name__}"
        )
    return rng


def autocast_settings(device: torch.device, amp: str) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a gradient scaler is needed) for ``device`` and ``amp``.

    ``"auto"`` on CUDA: bf16 where the GPU computes it natively (Ampere and newer), else fp16 with a
    gradient scaler (T4, V100: their bf16 is emulated, slower than fp32). Off elsewhere.
    """
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None, False
    if amp == "bf16" or (amp == "auto" and _native_bf16()):
        return torch.bfloat16, False
    return torch.float16, device.type == "cuda"


def autocast_for(payload: dict, device: torch.device):
    """Autocast as in training (the checkpoint payload's ``train_config["amp"]``, default ``"auto"``) on ``device``.

    A context manager: :func:`torch.autocast` with the dtype :func:`autocast_settings` picks, or a
    no-op where mixed precision is off (always on the CPU with ``"auto"``).
    """
    dtype, _ = autocast_settings(device, payload.get("train_config", {}).get("amp", "auto"))
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _native_bf16() -> bool:
    """Whether the current CUDA device has bf16 in hardware; emulated support does not count."""
    return torch.cuda.is_bf16_supported(including_emulation=False)
