"""Fast inference: backends that turn a preprocessed batch into anomaly maps and image scores.

Every backend has the signature of the Inferencer's seam (:mod:`memseg_lite.deployment.inferencer`):
``Backend(model, payload, device, checkpoint=None)``, then ``backend(batch)`` with a normalised
float batch ``[B, 3, H, W]`` returns ``(anomaly_maps [B, H, W], scores [B])``, float32 on the CPU.

- ``"folded"`` (:class:`FoldedTorchBackend`): PyTorch, fp32, the inference-only network of
  :mod:`memseg_lite.deployment.export` with every batch norm folded into its convolution,
  ``channels_last`` memory layout, ``torch.inference_mode``. Nothing to export, no extra package.
- ``"onnx"`` (:class:`OnnxBackend`): ONNX Runtime on the CPU, from an exported ``.onnx`` file or
  from the model (exported in memory first: seconds at 256 x 256; pass ``onnx_path`` to reuse a
  file from ``memseg-lite export``). Needs the ``deploy`` extra (onnx, onnxruntime).

Measured on 2 shared CPU cores at 256 x 256 (``benchmarks/bench_inference.py``; medians of repeated
timings, against the eager model in the same run; README for the numbers): ONNX Runtime is the
fastest (about 6x at batch 1, 1.9x at batch 8); the folded model about 2.5x at batch 1 but close
to eager at batch 8. Hence the ``"fast"`` choice (:func:`fast_backend`, :func:`default_backend`):
on the CPU ONNX Runtime when ``memseg-lite export`` has written a current ``CHECKPOINT.onnx``
next to the checkpoint (nothing is exported behind the user's back: an export takes tens of
seconds at 256 x 256), else the folded model; on GPUs the eager model with autocast as trained.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from memseg_lite.core.runtime import resolve_device
from memseg_lite.deployment.export import (
    INPUT_NAME,
    DeployedMemSeg,
    ablation_switches,
    file_sha256,
    read_metadata,
    trace_to_onnx,
)
from memseg_lite.evaluation.evaluate import autocast_for, load_model

#: Backends defined here (name -> class); "torch" is the eager model of the Inferencer.
FAST_BACKENDS: dict[str, type] = {}


class EagerBackend:
    """The eager PyTorch model as ``predict`` ran it before (autocast as in training): the baseline."""

    def __init__(self, model, payload: dict, device: torch.device, checkpoint=None):
        self.model, self.payload, self.device = model.eval(), payload, device

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast_for(self.payload, self.device):
            logits = self.model(batch.to(self.device))
        maps = torch.softmax(logits.float(), dim=1)[:, 1]
        return maps.cpu(), self.model.image_score(maps).float().cpu()


class FoldedTorchBackend:
    """PyTorch fp32 with batch norms folded, ``channels_last`` and ``inference_mode`` (see the module docstring)."""

    def __init__(self, model, payload: dict | None, device: torch.device, checkpoint=None, channels_last: bool = True):
        self.payload, self.device = payload, resolve_device(device)
        self.channels_last = bool(channels_last)
        network = DeployedMemSeg(model, fold=True).to(self.device)
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)
            for name in ("memory1", "memory2", "memory3"):  # the bank is compared flat: keep it contiguous
                setattr(network, name, getattr(network, name).contiguous())
        self.network = network

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            batch = batch.to(self.device, dtype=torch.float32)
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            maps, scores = self.network(batch)
        # Clones made outside inference mode are ordinary tensors (callers may change them in place).
        return maps.float().cpu().contiguous().clone(), scores.float().cpu().clone()


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "the 'onnx' backend needs ONNX Runtime: pip install 'memseg-lite[deploy]' (or pip install onnx onnxruntime)"
        ) from error
    return onnxruntime


class OnnxBackend:
    """ONNX Runtime on the CPU (see the module docstring).

    ``onnx_path``: an exported model (``memseg-lite export``); without it the model is exported
    in memory. ``threads``: ONNX Runtime's intra-op threads (default: its own choice).
    """

    def __init__(
        self, model=None, payload: dict | None = None, device=None, checkpoint=None,
        onnx_path: str | os.PathLike | None = None, threads: int | None = None,
    ):
        ort = _onnxruntime()
        if onnx_path is None and model is None:
            raise ValueError("OnnxBackend needs a model or onnx_path (a file written by memseg-lite export)")
        if onnx_path is not None and not os.path.isfile(onnx_path):
            raise FileNotFoundError(f"ONNX model {onnx_path} not found; write it with memseg-lite export --checkpoint CKPT")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        if onnx_path is not None:
            source = str(onnx_path)
        else:
            buffer = io.BytesIO()
            trace_to_onnx(DeployedMemSeg(model.cpu() if hasattr(model, "cpu") else model, fold=True), buffer)
            source = buffer.getvalue()
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.payload = payload

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        array = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        maps, scores = self.session.run(None, {INPUT_NAME: array})
        return torch.from_numpy(maps), torch.from_numpy(scores)


def current_export(checkpoint) -> Path | None:
    """``CHECKPOINT.onnx`` (what ``memseg-lite export`` writes by default) if it was exported from this
    very checkpoint file (its ``memseg.checkpoint_sha256``) and ONNX Runtime is installed; else ``None``."""
    if checkpoint is None or isinstance(checkpoint, dict):
        return None
    candidate = Path(checkpoint).with_suffix(".onnx")
    if not candidate.is_file() or not Path(checkpoint).is_file():
        return None
    try:
        _onnxruntime()
        stored = read_metadata(candidate).get("checkpoint_sha256")
    except Exception:  # no onnx / onnxruntime, or an unreadable file: not usable
        return None
    return candidate if stored == file_sha256(checkpoint) else None


def default_backend(device: str | torch.device = "auto", checkpoint=None) -> str:
    """The fastest measured backend available: on the CPU ``"onnx"`` when a current export of
    ``checkpoint`` lies next to it (:func:`current_export`), else ``"folded"``; on GPUs ``"eager"``
    (the model with autocast as trained)."""
    if resolve_device(device).type != "cpu":
        return "eager"
    return "onnx" if current_export(checkpoint) is not None else "folded"


def fast_backend(model, payload: dict, device: torch.device, checkpoint=None):
    """The Inferencer-seam factory of the ``"fast"`` choice: :func:`default_backend`'s backend."""
    name = default_backend(device, checkpoint)
    if ablation_switches(model):  # an ablated network: only the eager model implements it
        name = "eager"
    if name == "onnx":
        return OnnxBackend(model, payload, device, checkpoint=checkpoint, onnx_path=current_export(checkpoint))
    return FAST_BACKENDS[name](model, payload, device, checkpoint=checkpoint)


FAST_BACKENDS.update({"eager": EagerBackend, "folded": FoldedTorchBackend, "onnx": OnnxBackend, "fast": fast_backend})


def load_fast_model(checkpoint, device: str | torch.device = "auto", backend: str = "auto", **options):
    """Load ``checkpoint`` once and wrap it in a backend: ``backend(batch) -> (maps, scores)``.

    ``backend``: ``"auto"`` (:func:`default_backend`), ``"eager"``, ``"folded"`` or ``"onnx"``
    (``options`` go to the backend, e.g. ``onnx_path=``). The checkpoint payload is ``.payload``.
    """
    if backend == "auto":
        backend = default_backend(device, checkpoint)
        if backend == "onnx":
            options.setdefault("onnx_path", current_export(checkpoint))
    if backend not in FAST_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {['auto', *FAST_BACKENDS]}")
    target = resolve_device(device) if backend != "onnx" else torch.device("cpu")
    model, payload = load_model(checkpoint, target)
    return FAST_BACKENDS[backend](model, payload, target, checkpoint=checkpoint, **options)
