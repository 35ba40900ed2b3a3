"""Fast inference: backends that turn a preprocessed batch into anomaly maps and image scores.

Every backend has the signature of the Inferencer's seam (:mod:`memseg_lite.deployment.inferencer`):
``Backend(model, payload, device, checkpoint=None)``, then ``backend(batch)`` with a normalised
float batch ``[B, 3, H, W]`` returns ``(anomaly_maps [B, H, W], scores [B])``, float32 on the CPU.

- ``"folded"`` (:class:`FoldedTorchBackend`): PyTorch, fp32, the inference-only network of
  :mod:`memseg_lite.deployment.export` with every batch norm folded into its convolution; every
  convolution a oneDNN call with its weight reordered once ("prepacked") and its ReLU /
  hard-swish / residual addition fused in (:class:`PackedConv2d`, what ``torch.compile`` does,
  without its minutes of compiling); the wide 3x3 convolutions (at least 128 channels on maps of
  at least 16 x 16) by Winograd's F(4x4, 3x3) with 4x fewer multiplications
  (:mod:`memseg_lite.deployment.winograd`); ``channels_last``; ``torch.inference_mode``; a batch
  run in chunks of 2 images (large batches spill the caches), the chunks of a larger batch in
  parallel streams, one thread each. Nothing to export, no extra package.
- ``"onnx"`` (:class:`OnnxBackend`): ONNX Runtime on the CPU, from an exported ``.onnx`` file or
  from the model (exported in memory first: seconds at 256 x 256; pass ``onnx_path`` to reuse a
  file from ``memseg-lite export``). Needs the ``deploy`` extra (onnx, onnxruntime).

Same maps: both compute the eager model's numbers up to float rounding (max abs map difference
1e-7 to 1e-6). The choice of memory sample is an ``argmin``, which rounding can flip where two memory
samples are almost equally close; the folded backend detects such near ties
(:func:`~memseg_lite.deployment.export.near_ties`) and lets the eager model's own frozen encoder
make that choice (:func:`eager_selection`), so its choice is always the eager model's.

Speed (``benchmarks/bench_inference.py``, 256 x 256, N = 30, against the eager model in the same
run; README for the numbers). 85-90 % of the time goes into 3x3 convolutions, which the eager
model already runs near the CPU's fp32 peak, so prepacking and fusing alone give 1.2-1.5x; the
rest comes from doing fewer multiplications: Winograd on the wide layers (44 % of the
multiply-adds). On the quiet 2-core machine, 7 rounds: with torch's 2 threads folded 1.80x at
batch 1 and 1.67x at batch 8 (ONNX Runtime 1.56x and 1.63x); with 1 thread 1.38x and 1.68x (the
wide layers at batch 1 are bound by reading Winograd's 4x larger filters). Hence the ``"fast"``
choice (:func:`fast_backend`, :func:`default_backend`): on the CPU the folded model (faster than
ONNX Runtime, and it keeps the eager model's choice of memory sample), ONNX Runtime when asked
for; on GPUs the eager model with autocast as trained.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from memseg_lite.core.runtime import resolve_device
from memseg_lite.deployment.export import (
    INPUT_NAME,
    OUTPUT_NAMES,
    DeployedMemSeg,
    ablation_switches,
    file_sha256,
    read_metadata,
    trace_to_onnx,
)
from memseg_lite.evaluation.evaluate import autocast_for, load_model
from memseg_lite.deployment.winograd import MIN_SIDE, winograd_applies, winograd_conv2d, winograd_weights
from memseg_lite.network.memory import memory_distances, select_indices

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


# --------------------------------------------------------------------------------------------
# oneDNN convolutions with prepacked weights and fused activations
# --------------------------------------------------------------------------------------------
_ACTIVATIONS = {nn.ReLU: "relu", nn.Hardswish: "hardswish"}
_ONEDNN_OK: bool | None = None


def onednn_fusion_available() -> bool:
    """Whether this PyTorch build runs oneDNN convolutions with fused activations on the CPU
    (``torch.ops.mkldnn._convolution_pointwise``, the kernel ``torch.compile`` uses); checked once."""
    global _ONEDNN_OK
    if _ONEDNN_OK is None:
        try:
            x, w = torch.ones(1, 2, 4, 4), torch.ones(2, 2, 3, 3)
            packed = torch.ops.mkldnn._reorder_convolution_weight(w, [1, 1], [1, 1], [1, 1], 1, [1, 2, 4, 4])
            y = torch.ops.mkldnn._convolution_pointwise(x, packed, None, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
            _ONEDNN_OK = bool(torch.backends.mkldnn.is_available()) and torch.allclose(
                y, torch.relu(nn.functional.conv2d(x, w, padding=1))
            )
        except (AttributeError, RuntimeError):  # not built with oneDNN, or an op of another signature
            _ONEDNN_OK = False
    return _ONEDNN_OK


class PackedConv2d(nn.Module):
    """A ``Conv2d`` (its batch norm already folded in) plus its activation, as one oneDNN call.

    ``F.conv2d`` reorders the weight into oneDNN's blocked layout on every call and runs the
    activation as a second pass over the output; here the weight is reordered once per input
    shape and the activation (``"relu"``, ``"hardswish"`` or ``"none"``) runs inside the
    convolution. ``forward(x, residual)`` also adds ``residual`` before the activation (a ResNet
    block's ``relu(conv(x) + identity)``). Where oneDNN is not available (another device, another
    build) it computes the same with ``F.conv2d``.
    """

    _MAX_SHAPES = 8  # packed weights kept per layer (one per input shape seen)

    def __init__(self, conv: nn.Conv2d, activation: str = "none", winograd: bool = False):
        super().__init__()
        if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("PackedConv2d needs an nn.Conv2d with numeric zero padding")
        if activation not in ("none", *_ACTIVATIONS.values()):
            raise ValueError(f"activation must be 'none', 'relu' or 'hardswish', got {activation!r}")
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), int(conv.groups)
        self.activation = activation
        self._packed: dict[tuple, torch.Tensor] = {}
        # F(4x4, 3x3) for inputs where winograd_applies (checked per call: it depends on H x W). Its
        # filters (4x the direct weights) are transformed on first use, so layers whose maps are too
        # small at this input size (layer4 at 256 x 256) never hold them.
        self.winograd = bool(winograd) and winograd_applies(
            self.weight.shape, self.stride, self.padding, self.dilation, self.groups, (MIN_SIDE, MIN_SIDE))
        self.winograd_weight: torch.Tensor | None = None
        self.last_algorithm: str | None = None  # "winograd", "onednn" or "conv2d": what the last call ran

    def _use_onednn(self, x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and x.dtype == torch.float32 and self.weight.dtype == torch.float32 \
            and not torch.is_grad_enabled() and onednn_fusion_available()

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.is_contiguous(), self.weight.data_ptr())
        packed = self._packed.get(key)
        if packed is None:
            if len(self._packed) >= self._MAX_SHAPES:
                self._packed.clear()
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, self.padding, self.stride, self.dilation, self.groups, list(x.shape)
            )
            self._packed[key] = packed
        return packed

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.winograd and self._use_onednn(x) and winograd_applies(
                self.weight.shape, self.stride, self.padding, self.dilation, self.groups, x.shape):
            if self.winograd_weight is None:  # two streams may both compute it: the same values
                self.winograd_weight = winograd_weights(self.weight.detach())
            self.last_algorithm = "winograd"
            return winograd_conv2d(x, self.winograd_weight, self.bias, self.activation, residual)
        if self._use_onednn(x):
            self.last_algorithm = "onednn"
            weight = self._packed_weight(x)
            arguments = (self.padding, self.stride, self.dilation, self.groups)
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(x, weight, self.bias, *arguments, self.activation, [], "")
            if self.activation in ("relu", "none"):  # the fusions oneDNN offers after an addition
                unary = None if self.activation == "none" else self.activation
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, residual, weight, self.bias, *arguments, "add", None, unary, [], ""
                )
            y = torch.ops.mkldnn._convolution_pointwise(x, weight, self.bias, *arguments, "none", [], "") + residual
            return nn.functional.hardswish(y)
        self.last_algorithm = "conv2d"
        y = nn.functional.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            y = y + residual
        if self.activation == "relu":
            return torch.relu(y)
        return nn.functional.hardswish(y) if self.activation == "hardswish" else y

    def _apply(self, fn, recurse=True):
        self._packed.clear()  # moved or converted: pack (and transform) again from the new weight
        self.winograd_weight = None
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size={tuple(self.weight.shape[2:])}, "
                f"stride={tuple(self.stride)}, padding={tuple(self.padding)}, activation={self.activation}")


class PackedBasicBlock(nn.Module):
    """torchvision's ResNet ``BasicBlock`` with folded batch norms as two :class:`PackedConv2d`:
    ``relu(conv2(relu(conv1(x))) + identity)``, the addition and the last ReLU inside ``conv2``."""

    def __init__(self, block: nn.Module, winograd: bool = False):
        super().__init__()
        if not (isinstance(block.bn1, nn.Identity) and isinstance(block.bn2, nn.Identity)):
            raise ValueError("PackedBasicBlock needs a block whose batch norms are folded (fold_batchnorms)")
        self.conv1 = PackedConv2d(block.conv1, "relu", winograd=winograd)
        self.conv2 = PackedConv2d(block.conv2, "relu", winograd=winograd)
        self.downsample = pack_convolutions(block.downsample) if block.downsample is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.downsample(x) if self.downsample is not None else x
        return self.conv2(self.conv1(x), residual=identity)


def _following_activation(modules: list[nn.Module], start: int) -> int | None:
    """Index of the ReLU / Hardswish that follows position ``start`` across folded batch norms (Identity)."""
    for index in range(start + 1, len(modules)):
        if isinstance(modules[index], tuple(_ACTIVATIONS)):
            return index
        if not isinstance(modules[index], nn.Identity):
            return None
    return None


def pack_convolutions(module: nn.Module, winograd: bool = False) -> nn.Module:
    """Replace, in place, every ``Conv2d`` of a batch-norm-folded network by a :class:`PackedConv2d`:
    ``Conv2d -> (folded BN) -> ReLU/Hardswish`` in an ``nn.Sequential`` becomes one fused call,
    ResNet blocks become :class:`PackedBasicBlock`, the coordinate attention's shared convolution
    takes its hard-swish. Returns ``module`` (a lone ``Conv2d`` is returned packed).
    ``winograd``: the 3x3 convolutions that :func:`~memseg_lite.deployment.winograd.winograd_applies`
    to run by F(4x4, 3x3) (ResNet blocks never do)."""
    from torchvision.models.resnet import BasicBlock

    from memseg_lite.network.attention import CoordinateAttention

    if isinstance(module, nn.Conv2d):
        return PackedConv2d(module, winograd=winograd)
    if isinstance(module, BasicBlock):
        return PackedBasicBlock(module, winograd)
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        children = [module._modules[name] for name in names]
        for index, child in enumerate(children):
            if isinstance(child, nn.Conv2d):
                activation = _following_activation(children, index)
                if activation is not None:
                    module._modules[names[index]] = PackedConv2d(child, _ACTIVATIONS[type(children[activation])],
                                                                 winograd=winograd)
                    module._modules[names[activation]] = nn.Identity()
                    children[activation] = nn.Identity()
                    continue
            module._modules[names[index]] = pack_convolutions(child, winograd)
        return module
    if isinstance(module, CoordinateAttention) and isinstance(module.norm, nn.Identity):
        module.shared = PackedConv2d(module.shared, "hardswish")
        module.activation = nn.Identity()
    for name, child in list(module._modules.items()):
        if child is not None and not isinstance(child, PackedConv2d):
            module._modules[name] = pack_convolutions(child, winograd)
    return module


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def eager_selection(model, images: torch.Tensor) -> torch.Tensor:
    """The memory sample(s) the eager ``model`` picks for ``images``: its own frozen encoder and
    :func:`~memseg_lite.network.memory.memory_distances`, exactly as its forward pass computes them."""
    frozen = model.encoder.frozen_features(images)
    features = [frozen.level1, frozen.level2, frozen.level3]
    return select_indices(memory_distances(features, model.memory.features, model.selection_rule), model.selection_rule)


class FoldedTorchBackend:
    """PyTorch fp32: batch norms folded, oneDNN convolutions with prepacked weights and fused
    activations, ``channels_last``, ``inference_mode``, a batch run in chunks of ``chunk_size``
    images (``None``: whole batches); see the module docstring.

    The choice of memory sample is always the eager model's: where the two closest samples are
    within rounding (:func:`~memseg_lite.deployment.export.near_ties`), the eager model's frozen
    encoder recomputes the choice for those images (:func:`eager_selection`);
    ``exact_selections`` counts such images, ``last_indices`` holds the last batch's choice.
    ``packed=False`` keeps plain ``F.conv2d`` (the folded model of the first version).
    ``winograd``: the wide 3x3 convolutions (128 channels and more on maps of 16 x 16 and more:
    encoder layers 2-3, MSFF, the decoder's first two blocks) by F(4x4, 3x3)
    (:mod:`memseg_lite.deployment.winograd`; only with ``packed``). Its rounding moves the
    encoder features by about 6e-6 of their L1 norm (measured on a trained mesh model, against
    5e-6 for the direct folded convolutions), well inside :func:`~memseg_lite.deployment.export.near_ties`'
    1e-4, so the choice of memory sample stays the eager model's.
    """

    def __init__(self, model, payload: dict | None, device: torch.device, checkpoint=None, channels_last: bool = True,
                 packed: bool = True, chunk_size: int | None = 2, winograd: bool = True, streams: int | None = None):
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be an integer >= 1 or None (whole batches), got {chunk_size!r}")
        if streams is not None and (isinstance(streams, bool) or not isinstance(streams, int) or streams < 1):
            raise ValueError(f"streams must be an integer >= 1 or None (torch's thread count), got {streams!r}")
        self.streams = streams
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self.payload, self.device = payload, resolve_device(device)
        self.channels_last, self.chunk_size = bool(channels_last), chunk_size
        self.model = model.eval()
        network = DeployedMemSeg(model, fold=True).to(self.device)
        self.packed = bool(packed) and self.device.type == "cpu" and onednn_fusion_available()
        self.winograd = bool(winograd) and self.packed
        if self.packed:
            pack_convolutions(network, winograd=self.winograd)
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
        of torch's threads: one image per thread keeps every core busy where one image on two
        threads leaves them waiting for each other (small layers, memory-bound steps). Each image
        gets the same numbers either way (the chunks of ``chunk_size`` stay the same)."""
        streams = self.streams_for(batch.shape[0])
        if streams == 1:
            outputs = self._run_part(batch)
        else:
            threads = torch.get_num_threads()
            if self._pool is None or self._pool_size != streams:
                self.close()
                self._pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="memseg-stream")
                self._pool_size = streams
            # Whole chunks per stream, so every image sees the chunking of a single stream.
            step = self.chunk_size or 1
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
    in memory. ``threads``: ONNX Runtime's intra-op threads (default: torch's, ``torch.get_num_threads()``).
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
        options.intra_op_num_threads = int(threads) if threads is not None else torch.get_num_threads()
        if onnx_path is not None:
            source = str(onnx_path)
        else:
            buffer = io.BytesIO()
            trace_to_onnx(DeployedMemSeg(model.cpu() if hasattr(model, "cpu") else model, fold=True), buffer)
            source = buffer.getvalue()
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.source = str(onnx_path) if onnx_path is not None else "memory"  # where the graph came from
        self.payload = payload

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        array = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        maps, scores = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: array})
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
    """The backend of the ``"fast"`` choice: on the CPU ``"folded"``, on GPUs ``"eager"`` (the model
    with autocast as trained).

    ONNX Runtime is slower on the CPU (module docstring) and runs a fixed graph, which cannot
    hand a near tie between memory samples back to the eager model; it serves when asked for
    (``backend="onnx"``, using ``memseg-lite export``'s current ``CHECKPOINT.onnx`` when there is one,
    :func:`current_export`). ``checkpoint`` is accepted for that seam and does not change the choice.
    """
    return "eager" if resolve_device(device).type != "cpu" else "folded"


def fast_backend(model, payload: dict, device: torch.device, checkpoint=None):
    """The Inferencer-seam factory of the ``"fast"`` choice: :func:`default_backend`'s backend
    (the eager model for a network with ablation switches, which only it implements)."""
    name = "eager" if ablation_switches(model) else default_backend(device, checkpoint)
    return FAST_BACKENDS[name](model, payload, device, checkpoint=checkpoint)


FAST_BACKENDS.update({"eager": EagerBackend, "folded": FoldedTorchBackend, "onnx": OnnxBackend, "fast": fast_backend})


def load_fast_model(checkpoint, device: str | torch.device = "auto", backend: str = "auto", **options):
    """Load ``checkpoint`` once and wrap it in a backend: ``backend(batch) -> (maps, scores)``.

    ``backend``: ``"auto"`` (:func:`default_backend`), ``"eager"``, ``"folded"`` or ``"onnx"``
    (``options`` go to the backend, e.g. ``chunk_size=``, ``onnx_path=``; ``"onnx"`` uses a current
    ``CHECKPOINT.onnx`` when there is one). The checkpoint payload is ``.payload``.
    """
    if backend == "auto":
        backend = default_backend(device, checkpoint)
    if backend == "onnx" and options.get("onnx_path") is None:
        options["onnx_path"] = current_export(checkpoint)  # else exported in memory
    if backend not in FAST_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {['auto', *FAST_BACKENDS]}")
    target = resolve_device(device) if backend != "onnx" else torch.device("cpu")
    model, payload = load_model(checkpoint, target)
    return FAST_BACKENDS[backend](model, payload, target, checkpoint=checkpoint, **options)
