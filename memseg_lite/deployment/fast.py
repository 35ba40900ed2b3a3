"""Inference backends: the one registry of what turns a preprocessed batch into anomaly maps and scores.

Every backend has the signature of the Inferencer's seam (:mod:`memseg_lite.deployment.inferencer`):
``factory(model, payload, device, checkpoint=None, threads=None)``, then ``backend(batch)`` with a
normalised float batch ``[B, 3, H, W]`` returns ``(anomaly_maps [B, H, W], scores [B])``, float32
on the CPU. :data:`BACKENDS` holds them all (:func:`register_backend` adds one):

- ``"eager"`` (:class:`EagerBackend`): the MemSeg module as trained (autocast on GPUs): the
  reference, and the only backend for networks with ablation switches.
- ``"folded"`` (:class:`FoldedTorchBackend`): PyTorch fp32 with public APIs only: the
  inference-only network of :mod:`memseg_lite.deployment.export` with every batch norm folded into
  its convolution, ``channels_last``, ``torch.inference_mode``, a batch of several images split
  over parallel streams (one thread each). No extra package.
- ``"onnx"`` (:class:`OnnxBackend`): ONNX Runtime on the graph of
  :func:`~memseg_lite.deployment.export.trace_to_onnx` (exported in memory: seconds).
- ``"openvino"`` / ``"openvino-int8"`` (:class:`OpenVinoBackend`):
  OpenVINO on the same graph, fp32, or post-training INT8 quantized by NNCF on the run's good
  images (an approximation: its accuracy cost is measured in docs/deployment.md).
- ``"fast"`` (:func:`fast_backend`, the default): on the CPU ``"folded"`` (:func:`default_backend`
  says why); on GPUs the eager model with autocast as trained. The fastest path, INT8, is an
  approximation and so never the default.

Same maps, same memory sample: the fp32 backends compute the eager model's numbers up to float
rounding (max abs map difference about 1e-7). The choice of memory sample is an ``argmin``, which
rounding can flip where two memory samples are almost equally close; every fp32 backend gets the
near-tie flag of :func:`~memseg_lite.deployment.export.near_ties` with its result (an output of the
ONNX / OpenVINO graph) and hands those images to the eager model (:func:`eager_selection` for the
folded network, the whole image otherwise), so its choice is always the eager model's.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from memseg_lite.core.runtime import autocast_for, resolve_device
from memseg_lite.deployment.export import (
    BACKEND_OUTPUT_NAMES,
    INPUT_NAME,
    DeployedMemSeg,
    ablation_switches,
    trace_to_onnx,
)
from memseg_lite.network.memory import memory_distances, select_indices
from memseg_lite.network.model import load_model

Backend = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: Every backend by name (the Inferencer, ``predict``, ``evaluate`` and the CLI use this one registry).
BACKENDS: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Make ``backend=name`` use ``factory(model, payload, device, checkpoint=path, threads=None)``."""
    BACKENDS[name] = factory


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` for a positive count; ``None`` leaves torch's setting."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1 (or None: torch's default), got {threads!r}")
    torch.set_num_threads(threads)


class EagerBackend:
    """The eager PyTorch model (autocast as in training): the reference."""

    def __init__(self, model, payload: dict, device: torch.device, checkpoint=None, threads: int | None = None):
        set_threads(threads)
        self.model, self.payload, self.device = model.eval(), payload, device

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast_for(self.payload, self.device):
            logits = self.model(batch.to(self.device))
        maps = torch.softmax(logits.float(), dim=1)[:, 1]
        return maps.float().cpu(), self.model.image_score(maps).float().cpu()


@torch.no_grad()
def eager_selection(model, images: torch.Tensor) -> torch.Tensor:
    """The memory sample(s) the eager ``model`` picks for ``images``: its own frozen encoder and
    :func:`~memseg_lite.network.memory.memory_distances`, exactly as its forward pass computes them."""
    frozen = model.encoder.frozen_features(images)
    features = [frozen.level1, frozen.level2, frozen.level3]
    return select_indices(memory_distances(features, model.memory.features, model.selection_rule), model.selection_rule)


class FoldedTorchBackend:
    """PyTorch fp32, public APIs only: batch norms folded, ``channels_last``, ``inference_mode``, a
    batch run in chunks of ``chunk_size`` images (``None``: whole batches), the chunks of a larger
    batch in parallel streams on the CPU (``streams``: at most that many; default torch's thread count).

    The choice of memory sample is always the eager model's: where the two closest samples are
    within rounding (:func:`~memseg_lite.deployment.export.near_ties`), the eager model's frozen
    encoder recomputes the choice for those images (:func:`eager_selection`);
    ``exact_selections`` counts such images, ``last_indices`` holds the last batch's choice.
    """

    def __init__(self, model, payload: dict | None, device: torch.device, checkpoint=None, threads: int | None = None,
                 channels_last: bool = True, chunk_size: int | None = 2, streams: int | None = None):
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be an integer >= 1 or None (whole batches), got {chunk_size!r}")
        if streams is not None and (isinstance(streams, bool) or not isinstance(streams, int) or streams < 1):
            raise ValueError(f"streams must be an integer >= 1 or None (torch's thread count), got {streams!r}")
        set_threads(threads)
        self.streams = streams
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self.payload, self.device = payload, resolve_device(device)
        self.channels_last, self.chunk_size = bool(channels_last), chunk_size
        self.model = model.eval()
        network = DeployedMemSeg(model, fold=True).to(self.device)
        if self.channels_last:  # the bank too: compared flat in the same (NHWC) order, without copies
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self.exact_selections = 0
        self.last_indices: torch.Tensor | None = None

    def _run(self, original: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """``(maps, scores, indices, near ties recomputed)`` of one chunk."""
        images = original.to(self.device, dtype=torch.float32)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        stem, features, level4 = self.network.encode(images)
        indices, near_tie = self.network.select(features)
        ties = int(near_tie.sum())
        if ties:
            exact = eager_selection(self.model, original[near_tie.cpu()].to(self.device))
            indices = indices.clone()
            indices[near_tie] = exact.to(indices.device)
        maps, scores = self.network.decode(stem, features, level4, indices)
        return maps, scores, indices, ties

    def _run_part(self, part: torch.Tensor, threads: int | None = None) -> list[tuple]:
        """One stream's images in chunks; ``threads``: this (worker) thread's intra-op threads."""
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            return [self._run(chunk) for chunk in part.split(self.chunk_size or max(1, part.shape[0]))]

    def close(self) -> None:
        """Stop the stream threads (started again by the next batch that needs them)."""
        pool = getattr(self, "_pool", None)  # None also when __init__ stopped early
        if pool is not None:
            pool.shutdown(wait=False)
        self._pool, self._pool_size = None, 0

    def __del__(self):
        self.close()

    def streams_for(self, batch_size: int) -> int:
        """How many parallel streams a batch of ``batch_size`` images runs in (see ``__call__``)."""
        threads = torch.get_num_threads()
        chunks = -(-batch_size // (self.chunk_size or max(1, batch_size)))  # each stream runs whole chunks
        if self.device.type != "cpu" or chunks < 2 or threads < 2:
            return 1
        return max(1, min(self.streams if self.streams is not None else threads, chunks, threads))

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps and scores of ``batch``. On the CPU a batch of several images is split into
        :meth:`streams_for` parts that run at the same time, each on its own thread with its share
        of torch's threads (one image on two threads leaves them waiting for each other in the
        small layers). Each image gets the same numbers either way (the chunks stay the same)."""
        streams = self.streams_for(batch.shape[0])
        if streams == 1:
            outputs = self._run_part(batch)
        else:
            threads = torch.get_num_threads()
            if self._pool is None or self._pool_size != streams:
                self.close()
                self._pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="memseg-stream")
                self._pool_size = streams
            step = self.chunk_size or 1  # whole chunks per stream: every image sees one stream's chunking
            chunks = -(-batch.shape[0] // step)
            bounds = [min(batch.shape[0], step * (k * chunks // streams)) for k in range(1, streams)]
            parts = batch.tensor_split(bounds)
            try:
                results = list(self._pool.map(lambda part: self._run_part(part, max(1, threads // streams)), parts))
            finally:
                torch.set_num_threads(threads)  # set_num_threads in a worker also changes the process default
            outputs = [output for result in results for output in result]
        with torch.inference_mode():
            maps = torch.cat([output[0] for output in outputs]).float().cpu()
            scores = torch.cat([output[1] for output in outputs]).float().cpu()
            indices = torch.cat([output[2] for output in outputs]).cpu()
        self.exact_selections += sum(output[3] for output in outputs)
        self.last_indices = indices.clone()
        # Clones made outside inference mode are ordinary tensors (callers may change them in place).
        return maps.contiguous().clone(), scores.clone()


def backend_graph(model) -> bytes:
    """The ONNX graph the ONNX Runtime and OpenVINO backends run (:func:`~memseg_lite.deployment.export.trace_to_onnx`),
    built from a copy of ``model`` on the CPU (the caller's model stays where it is)."""
    deployed = DeployedMemSeg(model, fold=True).cpu()
    buffer = io.BytesIO()
    trace_to_onnx(deployed, buffer)
    return buffer.getvalue()


class TieFallback:
    """Shared by the graph backends: images whose memory choice is a near tie go to the eager model."""

    def _init_fallback(self, model, payload, exact_ties: bool) -> None:
        self.model, self.payload = model, payload
        self.exact_ties = bool(exact_ties) and model is not None
        self.exact_selections = 0

    def _resolve_ties(self, batch: torch.Tensor, maps: torch.Tensor, scores: torch.Tensor, near_tie) -> None:
        tied = torch.from_numpy(near_tie).bool().reshape(-1)
        if self.exact_ties and bool(tied.any()):
            device = next(self.model.parameters()).device
            exact_maps, exact_scores = EagerBackend(self.model, self.payload or {}, device)(batch[tied])
            maps[tied], scores[tied] = exact_maps, exact_scores
            self.exact_selections += int(tied.sum())


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "the 'onnx' backend needs ONNX Runtime: pip install 'memseg-lite[deploy]' (or pip install onnx onnxruntime)"
        ) from error
    return onnxruntime


class OnnxBackend(TieFallback):
    """ONNX Runtime on the CPU (see the module docstring); ``threads``: intra-op threads (default
    torch's). ``graph``: ONNX bytes of :func:`backend_graph` (default: exported from ``model``)."""

    def __init__(
        self,
        model=None,
        payload: dict | None = None,
        device=None,
        checkpoint=None,
        threads: int | None = None,
        graph: bytes | None = None,
        exact_ties: bool = True,
    ):
        ort = _onnxruntime()
        if graph is None and model is None:
            raise ValueError("OnnxBackend needs a model or graph (bytes of backend_graph(model))")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads) if threads is not None else torch.get_num_threads()
        self.session = ort.InferenceSession(graph if graph is not None else backend_graph(model), options,
                                            providers=["CPUExecutionProvider"])
        self._init_fallback(model, payload, exact_ties)

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        array = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        maps, scores, near_tie = self.session.run(list(BACKEND_OUTPUT_NAMES), {INPUT_NAME: array})
        maps, scores = torch.from_numpy(maps).float(), torch.from_numpy(scores).float()
        self._resolve_ties(batch, maps, scores, near_tie)
        return maps, scores


class OpenVinoBackend(TieFallback):
    """OpenVINO on the CPU, fp32 or INT8 (:mod:`memseg_lite.deployment.openvino_runtime`).

    ``calibration`` (INT8 only): a float tensor of normalised images ``[N, 3, H, W]``, a folder or a
    list of files; default the run's good images. ``exact_ties`` (fp32 only): near ties go to the
    eager model, as for the other exact backends; INT8 is an approximation and keeps its own choice.
    """

    def __init__(self, model, payload: dict | None, device=None, checkpoint=None, threads: int | None = None,
                 int8: bool = False, calibration=None, exact_ties: bool = True):
        if threads is not None:
            set_threads(threads)  # validates; OpenVINO gets the same count
        from memseg_lite.deployment.openvino_runtime import (
            calibration_batches,
            compile_model,
            convert_onnx,
            quantize_int8,
        )

        converted = convert_onnx(backend_graph(model))
        if int8:
            converted = quantize_int8(converted, calibration_batches(payload or {}, calibration))
        self.int8 = bool(int8)
        self.name = "OpenVinoInt8Backend" if int8 else "OpenVinoBackend"  # what metrics.json records
        self.compiled = compile_model(converted, threads, int8)
        self.request = self.compiled.create_infer_request()
        self._init_fallback(model, payload, exact_ties and not int8)

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        array = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        results = self.request.infer({INPUT_NAME: array})
        outputs = {output.get_any_name(): value for output, value in results.items()}
        maps = torch.from_numpy(np.array(outputs[BACKEND_OUTPUT_NAMES[0]])).float()
        scores = torch.from_numpy(np.array(outputs[BACKEND_OUTPUT_NAMES[1]])).float()
        self._resolve_ties(batch, maps, scores, np.asarray(outputs[BACKEND_OUTPUT_NAMES[2]]))
        return maps, scores


def default_backend(device: str | torch.device = "auto", checkpoint=None) -> str:
    """The backend of the ``"fast"`` choice: on the CPU ``"folded"`` (exact, no extra package; in
    ``benchmarks/bench_inference.py`` within the run-to-run noise of ONNX Runtime and OpenVINO fp32,
    and the fastest of them at batch 8 with 2 threads, its streams keeping both cores busy); on GPUs
    ``"eager"`` (the model with autocast as trained). ``checkpoint`` does not change the choice."""
    return "eager" if resolve_device(device).type != "cpu" else "folded"


def fast_backend(model, payload: dict, device: torch.device, checkpoint=None, threads: int | None = None):
    """The ``"fast"`` factory: :func:`default_backend`'s backend (the eager model for a network with
    ablation switches, which only it implements)."""
    name = "eager" if ablation_switches(model) else default_backend(device, checkpoint)
    return BACKENDS[name](model, payload, device, checkpoint=checkpoint, threads=threads)


def _openvino_int8(model, payload, device, checkpoint=None, threads=None, **options):
    return OpenVinoBackend(model, payload, device, checkpoint=checkpoint, threads=threads, int8=True, **options)


for _name, _factory in (("fast", fast_backend), ("eager", EagerBackend), ("folded", FoldedTorchBackend),
                        ("onnx", OnnxBackend), ("openvino", OpenVinoBackend), ("openvino-int8", _openvino_int8)):
    register_backend(_name, _factory)

def load_fast_model(checkpoint, device: str | torch.device = "auto", backend: str = "auto", **options):
    """Load ``checkpoint`` once and wrap it in a backend: ``backend(batch) -> (maps, scores)``.

    ``backend``: ``"auto"`` (:func:`default_backend`) or a name of :data:`BACKENDS` (``options`` go
    to the backend, e.g. ``threads=``, ``chunk_size=``). The checkpoint payload is ``.payload``.
    """
    if backend == "auto":
        backend = default_backend(device, checkpoint)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {['auto', *BACKENDS]}")
    graph_backend = backend in ("onnx", "openvino", "openvino-int8")
    target = resolve_device(device) if not graph_backend else torch.device("cpu")
    model, payload = load_model(checkpoint, target)
    runner = BACKENDS[backend](model, payload, target, checkpoint=checkpoint, **options)
    runner.payload = payload
    return runner
