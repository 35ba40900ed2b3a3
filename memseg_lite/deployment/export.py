r"""Deploying a trained model: an inference-only network, batch norms folded, ONNX export.

:class:`DeployedMemSeg` is the network a deployment runs: normalised images ``[B, 3, H, W]`` in,
``(anomaly_map [B, H, W], score [B])`` out, the memory bank built in as constants. It computes
exactly what :class:`~memseg_lite.network.model.MemSeg` does in eval mode, written with operations
every ONNX runtime has (``torch.cdist`` is replaced by an explicit broadcast
$\sum_j |m_{ij} - x_j|$; the legacy ONNX exporter translates ``cdist`` wrongly).
Its stages are methods, so a backend can step in between: :meth:`~DeployedMemSeg.encode`
(features), :meth:`~DeployedMemSeg.select` (the closest memory sample, and whether that choice
is a near tie within rounding: :func:`near_ties`) and :meth:`~DeployedMemSeg.decode` (DI*,
MSFF, decoder, map and score).

:func:`fold_batchnorms` merges each eval-mode batch norm into the convolution before it. A batch
norm in eval mode is an affine map per channel,
$\mathrm{BN}(z) = \gamma (z - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta$, so with
$s = \gamma / \sqrt{\sigma^2 + \epsilon}$ the pair ``conv -> BN`` is one convolution with weights
$s \cdot W$ and bias $s \cdot (b - \mu) + \beta$: the same numbers (up to rounding) with one pass
over the feature map fewer.

:func:`export_onnx` (``memseg-lite export --format onnx``) writes :class:`DeployedPipeline`: the
preprocessing and the decision inside the graph, so a runtime only fits the image to the network
size (docs/deployment.md, ``examples/onnx_runner.py``). Input ``images`` uint8 ``[batch, H, W, 3]``
RGB, letterboxed (or stretched) to ``memseg.image_size``; outputs ``anomaly_map`` float32
``[batch, H, W]``, ``score`` and ``normalised_score`` float32 ``[batch]``, ``mask`` uint8
``[batch, H, W]`` and ``defective`` bool ``[batch]``; thresholds and memory bank as constants.
Its metadata (``onnx`` ``metadata_props``, all strings, ``memseg.*``): ``image_size``, ``resize``,
``letterbox`` (the fitting rule in words), ``center_crop``, ``mean`` / ``std``, ``top_k``,
``selection_rule``, ``memory_size``, ``step``, ``checkpoint_sha256``, ``image_threshold`` /
``pixel_threshold`` and ``thresholds`` (JSON, absolute paths reduced to their last part).

:func:`trace_to_onnx` writes the graph the ONNX Runtime / OpenVINO backends run: normalised float32
``[batch, 3, H, W]`` in, ``anomaly_map``, ``score`` and ``near_tie`` out.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import io
import itertools
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from memseg_lite.core.checkpoint import input_size, load_checkpoint, resize_mode
from memseg_lite.core.io import atomic_output
from memseg_lite.core.sizes import parse_size
from memseg_lite.core.transforms import IMAGENET_MEAN, IMAGENET_STD
from memseg_lite.network.attention import spatial_attention_maps
from memseg_lite.network.memory import memory_distances, select_indices
from memseg_lite.network.model import MemSeg, memseg_from_state

EXPORT_FORMATS = ("onnx", "openvino")
ONNX_OPSET = 17
INPUT_NAME = "images"
#: The exported file's outputs (:class:`DeployedPipeline`).
OUTPUT_NAMES = ("anomaly_map", "score", "normalised_score", "mask", "defective")
#: The graph the ONNX Runtime / OpenVINO backends run (:func:`trace_to_onnx`).
BACKEND_OUTPUT_NAMES = ("anomaly_map", "score", "near_tie")
METADATA_PREFIX = "memseg."

# Attribute pairs (convolution, batch norm) outside nn.Sequential: torchvision's BasicBlock and the
# coordinate-attention block.
_CONV_BN_ATTRIBUTES = (("conv1", "bn1"), ("conv2", "bn2"), ("shared", "norm"))


# --------------------------------------------------------------------------------------------
# Batch-norm folding
# --------------------------------------------------------------------------------------------
def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(norm, nn.BatchNorm2d)
        and norm.track_running_stats
        and norm.running_mean is not None
        and conv.out_channels == norm.num_features
    )


@torch.no_grad()
def fold_batchnorms(module: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that follows a ``Conv2d`` into it, in place.

    Pairs are adjacent entries of an ``nn.Sequential`` and the attribute pairs ``conv1/bn1``,
    ``conv2/bn2`` (ResNet blocks) and ``shared/norm`` (coordinate attention); each folded batch
    norm becomes ``nn.Identity``. The module must be in eval mode (a batch norm in training mode
    normalises with the batch's statistics, which no folded convolution can). Returns the number
    of batch norms folded.
    """
    if any(m.training for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
        raise ValueError("fold_batchnorms needs the model in eval mode (call model.eval() first)")
    folded = 0
    for parent in list(module.modules()):
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for first, second in itertools.pairwise(names):
                conv, norm = parent._modules[first], parent._modules[second]
                if _foldable(conv, norm):
                    parent._modules[first] = fuse_conv_bn_eval(conv, norm)
                    parent._modules[second] = nn.Identity()
                    folded += 1
        for conv_name, norm_name in _CONV_BN_ATTRIBUTES:
            conv, norm = getattr(parent, conv_name, None), getattr(parent, norm_name, None)
            if conv is not None and norm is not None and _foldable(conv, norm):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(parent, norm_name, nn.Identity())
                folded += 1
    return folded


# --------------------------------------------------------------------------------------------
# The inference-only network
# --------------------------------------------------------------------------------------------
# The ablation switches (memseg_lite.network.model) at the values of the paper's network: the only
# network the inference-only rebuild below implements.
PAPER_SWITCHES = {"use_memory": True, "use_attention": True, "fusion": "msff", "feature_smoothing": "none",
                  "di_scale": 1.0, "feature_scale": 1.0}


def ablation_switches(model: MemSeg) -> dict:
    """The switches of ``model`` that differ from the paper's network (empty for a deployable model)."""
    config = model.config()
    return {name: config[name] for name, value in PAPER_SWITCHES.items() if config.get(name, value) != value}


#: Relative margin under which the two closest memory samples count as a near tie (see :func:`near_ties`).
TIE_RTOL = 1e-4


def near_ties(
    distances: list[torch.Tensor], features: list[torch.Tensor], rule: str, rtol: float = TIE_RTOL
) -> torch.Tensor:
    r"""``bool [B]``: inputs whose closest and second-closest memory samples are too close to call.

    A deployed network computes the features with folded batch norms and in another memory order,
    so its distances differ from the eager model's by rounding, and where the two smallest
    distances are that close the choice of memory sample could differ. For the L1 rules the
    rounding is bounded by the feature error,
    $|D^{\mathrm{fast}}_i - D^{\mathrm{eager}}_i| \le \lVert f^{\mathrm{fast}} - f^{\mathrm{eager}} \rVert_1$,
    which is about $10^{-6} \lVert f \rVert_1$. A gap is a near tie when
    $D_{(2)} - D_{(1)} \le \mathrm{rtol} \cdot (s + D_{(1)})$ with $s = \sum_l \lVert f_l \rVert_1$
    (``"tootouch"``: $s = \sum_l \mathrm{mean}(f_l^2)$; ``"official"``: per level), so ``rtol = 1e-4``
    leaves a wide margin. The fast backends recompute a batch with a near tie with the eager model.

    Args:
        distances: 3 tensors ``float [B, N]`` (per level, as the rule defines them).
        features: the 3 input feature levels ``[B, C_l, h_l, w_l]``.
        rule: ``"paper"``, ``"official"`` or ``"tootouch"``.
    """
    batch = features[0].shape[0]
    if distances[0].shape[1] < 2:  # one memory sample: nothing to choose
        return torch.zeros(batch, dtype=torch.bool, device=features[0].device)
    if rule == "tootouch":
        sizes = [feature.square().mean(dim=(1, 2, 3)) for feature in features]
    else:
        sizes = [feature.abs().sum(dim=(1, 2, 3)) for feature in features]
    if rule == "official":
        pairs = [(distance, size) for distance, size in zip(distances, sizes, strict=True)]
    else:
        pairs = [(distances[0] + distances[1] + distances[2], sizes[0] + sizes[1] + sizes[2])]
    tie = torch.zeros(batch, dtype=torch.bool, device=features[0].device)
    for distance, size in pairs:
        two = distance.topk(2, dim=1, largest=False).values
        tie = tie | ((two[:, 1] - two[:, 0]) <= rtol * (size + two[:, 0]))  # not |=: no in-place op in ONNX
    return tie


class DeployedMemSeg(nn.Module):
    """MemSeg for inference: ``images -> (anomaly_map [B, H, W], score [B])``, eval mode only.

    Built from a trained :class:`~memseg_lite.network.model.MemSeg` (deep-copied, so the original
    is untouched); ``fold=True`` folds the batch norms into the convolutions. The memory bank is
    kept as buffers and so becomes constants of an exported graph. Inputs must have the size of
    the memory images.
    """

    def __init__(self, model: MemSeg, fold: bool = True):
        super().__init__()
        if not isinstance(model, MemSeg):
            raise TypeError(f"model must be a MemSeg, got {type(model).__name__}")
        switches = ablation_switches(model)
        if switches:
            raise ValueError(
                f"export and the fast backends rebuild the paper's network only; this model was trained with the "
                f"ablation switches {switches}. Predict with backend='eager' (memseg-lite predict --backend eager)"
            )
        if len(model.memory) == 0:
            raise ValueError("the model's memory bank is empty: build it (build_memseg) or load a trained checkpoint")
        model = copy.deepcopy(model).eval()
        self.encoder = model.encoder
        self.msff = model.msff
        self.decoder = model.decoder
        self.selection_rule = model.selection_rule
        self.top_k = int(model.top_k)
        for name, stored in zip(("memory1", "memory2", "memory3"), model.memory.features, strict=True):
            self.register_buffer(name, stored.detach().float().contiguous())
        self.image_size = model.memory.image_size
        self.folded = fold_batchnorms(self) if fold else 0
        self.report_ties = False
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DeployedMemSeg:
        if mode:
            raise ValueError("DeployedMemSeg is for inference only; train the MemSeg model instead")
        return super().train(False)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """``(stem, [level1, level2, level3], level4)`` encoder features of normalised images."""
        encoder = self.encoder
        stem = encoder.stem(images)
        level1 = encoder.layer1(encoder.pool(stem))
        level2 = encoder.layer2(level1)
        level3 = encoder.layer3(level2)
        return stem, [level1, level2, level3], encoder.layer4(level3)

    def select(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices, near_tie)``: the closest memory sample(s) by the model's selection rule, computed by
        :func:`~memseg_lite.network.memory.memory_distances` and :func:`~memseg_lite.network.memory.select_indices`
        (``int64 [B]``, ``[B, 3]`` for ``"official"``), and ``bool [B]``, the inputs where that choice
        is within rounding (:func:`near_ties`)."""
        memory = [self.memory1, self.memory2, self.memory3]
        distances = memory_distances(features, memory, self.selection_rule)  # [B, N, 3]
        indices = select_indices(distances, self.selection_rule)
        per_level = [distances[..., level] for level in range(3)]
        return indices, near_ties(per_level, features, self.selection_rule)

    def decode(self, stem: torch.Tensor, features: list[torch.Tensor], level4: torch.Tensor,
               indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(anomaly_map [B, H, W], score [B])`` from the encoder features and the chosen memory samples."""
        memory = [self.memory1, self.memory2, self.memory3]
        di_star = []
        for level, (feature, stored) in enumerate(zip(features, memory, strict=True)):
            index = indices[:, level] if self.selection_rule == "official" else indices
            difference = stored.index_select(0, index) - feature
            di_star.append(difference.square() if self.selection_rule == "tootouch" else difference.abs())
        concatenated = [torch.cat([ii, di], dim=1) for ii, di in zip(features, di_star, strict=True)]
        fused = self.msff(concatenated, spatial_attention_maps(di_star))
        logits = self.decoder(level4, fused, stem)
        maps = torch.softmax(logits, dim=1)[:, 1]
        flat = maps.flatten(1)
        scores = flat.topk(min(self.top_k, flat.shape[1]), dim=1).values.mean(dim=1)
        return maps, scores

    def forward(self, images: torch.Tensor):
        """``float [B, 3, H, W]`` normalised images -> ``(anomaly_map [B, H, W], score [B])``, and
        ``near_tie bool [B]`` third when ``self.report_ties`` (the graph the ONNX Runtime / OpenVINO
        backends run, so that they can hand such images back to the eager model)."""
        stem, features, level4 = self.encode(images)
        indices, near_tie = self.select(features)
        maps, scores = self.decode(stem, features, level4, indices)
        return (maps, scores, near_tie) if self.report_ties else (maps, scores)


def deployed_from_checkpoint(
    checkpoint: str | os.PathLike | dict, fold: bool = True
) -> tuple[DeployedMemSeg, dict]:
    """``(DeployedMemSeg on the CPU, checkpoint payload)`` from a checkpoint file or payload."""
    payload = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    for key in ("model_config", "model"):
        if key not in payload:
            raise ValueError(
                f"{checkpoint}: not a memseg-lite model checkpoint (no {key!r} entry); pass RUN_DIR/best.pt"
            )
    model = memseg_from_state(payload["model_config"], payload["model"])
    return DeployedMemSeg(model, fold=fold), payload


# --------------------------------------------------------------------------------------------
# The deployed graph: uint8 pixels in, the decision out
# --------------------------------------------------------------------------------------------
class DeployedPipeline(nn.Module):
    r"""What an exported file computes: ``uint8 [B, H, W, 3]`` RGB images already fitted to the network
    size (the one step a runtime does itself: :func:`fitted_size`, README / docs/deployment.md) ->

    - ``anomaly_map`` float32 ``[B, H, W]`` in [0, 1] (zeros outside a center crop);
    - ``score`` float32 ``[B]``, the mean of the ``top_k`` largest map values;
    - ``normalised_score`` float32 ``[B]``, the score with the image threshold moved to 0.5
      (:func:`memseg_lite.evaluation.thresholds.normalise_scores`): defective when ``>= 0.5``;
    - ``mask`` uint8 ``[B, H, W]``, 255 where ``anomaly_map >= pixel threshold``;
    - ``defective`` bool ``[B]``, ``score >= image threshold`` (the verdict; ``normalised_score``
      can round to 0.5 just below the threshold).

    Inside: ``(pixels / 255 - mean) / std`` in float32 (exactly :func:`memseg_lite.core.transforms.image_to_tensor`),
    the checkpoint's center crop, the network, the thresholds as constants.
    """

    def __init__(self, network: DeployedMemSeg, fit_size: tuple[int, int], center_crop: int | None,
                 image_threshold: float, pixel_threshold: float):
        super().__init__()
        if not 0 < image_threshold < 1:
            raise ValueError(f"image threshold {image_threshold} must be in (0, 1)")
        self.network = network
        self.fit_size = (int(fit_size[0]), int(fit_size[1]))
        self.center_crop = int(center_crop) if center_crop else None
        self.image_threshold, self.pixel_threshold = float(image_threshold), float(pixel_threshold)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.eval()

    def forward(self, pixels: torch.Tensor):
        images = (pixels.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        height, width = self.fit_size
        if self.center_crop:
            top, left = (height - self.center_crop) // 2, (width - self.center_crop) // 2
            images = images[:, :, top : top + self.center_crop, left : left + self.center_crop]
        maps, scores = self.network(images)[:2]
        if self.center_crop:
            maps = nn.functional.pad(
                maps, (left, width - left - self.center_crop, top, height - top - self.center_crop)
            )
        threshold = self.image_threshold
        clipped = scores.clamp(0.0, 1.0)
        normalised = torch.where(clipped < threshold, 0.5 * clipped / threshold,
                                 0.5 + 0.5 * (clipped - threshold) / (1.0 - threshold))
        mask = (maps >= self.pixel_threshold).to(torch.uint8) * 255
        return maps, scores, normalised, mask, scores >= threshold


def checkpoint_thresholds(payload: dict, checkpoint=None, thresholds=None):
    """The thresholds an export builds in: ``thresholds`` (a :class:`~memseg_lite.evaluation.thresholds.Thresholds`
    or a file), else the checkpoint's, else ``thresholds.json`` beside it (as
    :class:`~memseg_lite.deployment.inferencer.Inferencer`)."""
    from memseg_lite.evaluation.thresholds import THRESHOLDS_NAME, Thresholds, load_thresholds, thresholds_of

    if isinstance(thresholds, Thresholds):
        return thresholds
    if thresholds is not None:
        return load_thresholds(thresholds)
    stored = thresholds_of(payload)
    if stored is not None:
        return stored
    if checkpoint is not None and not isinstance(checkpoint, dict):
        beside = Path(checkpoint).parent / THRESHOLDS_NAME
        if beside.is_file():
            return load_thresholds(beside)
    return None


def fitted_size(payload: dict) -> tuple[int, int]:
    """``(H, W)`` an image is letterboxed (or stretched) to before the exported graph: the input size."""
    fit_size, _ = input_size(payload)
    height, width = parse_size(fit_size)
    return int(height), int(width)


def pipeline_from_checkpoint(checkpoint, thresholds=None, fold: bool = True) -> tuple[DeployedPipeline, dict, object]:
    """``(DeployedPipeline, payload, Thresholds)``; a clear error when no thresholds can be found."""
    deployed, payload = deployed_from_checkpoint(checkpoint, fold=fold)
    found = checkpoint_thresholds(payload, checkpoint, thresholds)
    if found is None:
        raise ValueError(f"{checkpoint if not isinstance(checkpoint, dict) else 'the checkpoint'} has no thresholds "
                         "(the exported graph builds the decision in): run memseg-lite calibrate first, or pass "
                         "--thresholds FILE")
    _, center_crop = input_size(payload)
    pipeline = DeployedPipeline(deployed, fitted_size(payload), center_crop, found.image, found.pixel)
    return pipeline, payload, found


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------
def _without_paths(value):
    """``value`` with every absolute path replaced by its last component (no host's folders in a model file)."""
    if isinstance(value, dict):
        return {key: _without_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_paths(item) for item in value]
    if isinstance(value, str) and (value.startswith("/") or (len(value) > 2 and value[1] == ":" and value[2] in "\\/")):
        return Path(value.replace("\\", "/")).name
    return value


def deployment_metadata(payload: dict, deployed: DeployedMemSeg, thresholds=None) -> dict[str, str]:
    """The preprocessing, scoring and thresholds of a checkpoint as ``metadata_props`` strings."""
    height, width = fitted_size(payload)
    _, center_crop = input_size(payload)
    network_height, network_width = deployed.image_size
    metadata = {
        "format_version": "2",
        "image_size": f"{height}x{width}",
        "network_size": f"{int(network_height)}x{int(network_width)}",
        "resize": resize_mode(payload),
        "letterbox": "scale min(H/h, W/w); content round(h*scale) x round(w*scale), at least 1; centred, "
                     "top = (H - content_h) // 2, left = (W - content_w) // 2; padding 0 (black); "
                     "cv2.INTER_AREA when the content has fewer pixels than the image, else cv2.INTER_LINEAR",
        "center_crop": json.dumps(center_crop),
        "mean": json.dumps(list(IMAGENET_MEAN)),
        "std": json.dumps(list(IMAGENET_STD)),
        "input": f"{INPUT_NAME}: uint8 [batch, H, W, 3], RGB, fitted to image_size by resize (normalised inside)",
        "outputs": "anomaly_map float32 [batch, H, W] in [0, 1]; score float32 [batch] (mean of the top_k map values); "
                   "normalised_score float32 [batch] (image threshold at 0.5); mask uint8 [batch, H, W] "
                   "(255 where anomaly_map >= pixel_threshold); defective bool [batch] (score >= image_threshold)",
        "top_k": str(deployed.top_k),
        "selection_rule": deployed.selection_rule,
        "memory_size": str(int(deployed.memory1.shape[0])),
        "step": str(payload.get("step", "")),
    }
    if thresholds is not None:
        metadata["image_threshold"] = repr(float(thresholds.image))
        metadata["pixel_threshold"] = repr(float(thresholds.pixel))
        metadata["thresholds"] = json.dumps(_without_paths(thresholds.to_dict()), default=str)
    return {METADATA_PREFIX + key: value for key, value in metadata.items()}


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``memseg.*`` metadata of an exported ONNX file, without the prefix."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {
        prop.key[len(METADATA_PREFIX) :]: prop.value
        for prop in model.metadata_props
        if prop.key.startswith(METADATA_PREFIX)
    }


# --------------------------------------------------------------------------------------------
# ONNX export
# --------------------------------------------------------------------------------------------
def _require_onnx() -> None:
    if importlib.util.find_spec("onnx") is None:  # pragma: no cover - depends on the installation
        raise ImportError(
            "ONNX export needs the 'onnx' package: pip install 'memseg-lite[deploy]' (or pip install onnx onnxruntime)"
        )


def _declare_shapes(model, shapes: dict[str, list]) -> None:
    """Write each output's shape (``"batch"`` or an int per axis) into the graph: the tracer's own names
    for dynamic axes can come out wrong (``[batch, batch, ...]``)."""
    for output in model.graph.output:
        if output.name not in shapes:
            continue
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        for size in shapes[output.name]:
            dim = dims.add()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = int(size)


def _trace(module: nn.Module, example: torch.Tensor, destination, input_name: str, output_names, opset: int) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter (dynamo=False) needs no extra package; its deprecation
        # notice and the tracer's notes about the argument checks are expected here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            destination if not isinstance(destination, Path) else str(destination),
            dynamo=False,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes={name: {0: "batch"} for name in (input_name, *output_names)},
            opset_version=int(opset),
            do_constant_folding=True,
        )


def trace_to_onnx(deployed: DeployedMemSeg, destination, opset: int = ONNX_OPSET) -> None:
    """The backends' graph (``destination``: a path or a binary stream): normalised float32
    ``[batch, 3, H, W]`` -> ``anomaly_map [batch, H, W]``, ``score [batch]``, ``near_tie bool [batch]``."""
    import onnx

    height, width = (int(side) for side in deployed.image_size)
    example = torch.zeros(2, 3, height, width, device=deployed.memory1.device)
    deployed.report_ties = True
    buffer = io.BytesIO()
    try:
        _trace(deployed, example, buffer, INPUT_NAME, BACKEND_OUTPUT_NAMES, opset)
    finally:
        deployed.report_ties = False
    model = onnx.load_from_string(buffer.getvalue())
    _declare_shapes(model, {"anomaly_map": ["batch", height, width], "score": ["batch"], "near_tie": ["batch"]})
    _save_onnx(model, destination)


def _save_onnx(model, destination) -> None:
    import onnx

    if isinstance(destination, (str, os.PathLike)):
        onnx.save(model, str(destination))
    else:
        destination.write(model.SerializeToString())


def pipeline_to_onnx(pipeline: DeployedPipeline, metadata: dict[str, str] | None = None, opset: int = ONNX_OPSET):
    """The exported graph of ``pipeline`` as an ``onnx.ModelProto`` (shapes declared, ``metadata`` added)."""
    import onnx

    height, width = pipeline.fit_size
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8, device=pipeline.mean.device)
    buffer = io.BytesIO()
    _trace(pipeline, example, buffer, INPUT_NAME, OUTPUT_NAMES, opset)
    model = onnx.load_from_string(buffer.getvalue())
    _declare_shapes(model, {"anomaly_map": ["batch", height, width], "score": ["batch"],
                            "normalised_score": ["batch"], "mask": ["batch", height, width], "defective": ["batch"]})
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "memseg-lite"
    return model


def exported_model(checkpoint, thresholds=None, opset: int = ONNX_OPSET, fold: bool = True):
    """``(onnx.ModelProto of the checkpoint's pipeline with metadata, DeployedPipeline, payload)``."""
    _require_onnx()
    pipeline, payload, found = pipeline_from_checkpoint(checkpoint, thresholds, fold=fold)
    metadata = deployment_metadata(payload, pipeline.network, found)
    if not isinstance(checkpoint, dict):
        metadata[METADATA_PREFIX + "checkpoint_sha256"] = file_sha256(checkpoint)
    return pipeline_to_onnx(pipeline, metadata, opset), pipeline, payload


def _default_out(checkpoint, out, suffix: str) -> Path:
    if out is None:
        if isinstance(checkpoint, dict):
            raise ValueError(f"out is required when checkpoint is a payload dict; pass out='model{suffix}'")
        out = Path(checkpoint).with_suffix(suffix)
    out = Path(out)
    if out.suffix.lower() != suffix:
        raise ValueError(f"--out {out}: a {suffix[1:].upper()} file name must end in {suffix}")
    return out


def export_onnx(
    checkpoint: str | os.PathLike | dict,
    out: str | os.PathLike | None = None,
    opset: int = ONNX_OPSET,
    fold: bool = True,
    thresholds=None,
) -> Path:
    """Write the checkpoint's :class:`DeployedPipeline` as ONNX (memory bank and thresholds inside,
    dynamic batch axis, metadata).

    ``out``: the file to write (default: the checkpoint's path with ``.onnx``; required when
    ``checkpoint`` is a payload). ``thresholds``: see :func:`checkpoint_thresholds`. Returns the
    path written (atomically).
    """
    import onnx

    out = _default_out(checkpoint, out, ".onnx")
    model, _, _ = exported_model(checkpoint, thresholds, opset, fold)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as temporary:
        onnx.save(model, str(temporary))
    return out
