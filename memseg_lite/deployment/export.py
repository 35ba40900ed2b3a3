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

:func:`export_onnx` (``memseg-lite export --format onnx``) writes ``DeployedMemSeg`` as an ONNX
model with a dynamic batch axis; its metadata (``onnx`` ``metadata_props``, all strings) say how to
prepare the input and how to read the output:

- ``memseg.image_size`` ``"HxW"`` (the network input), ``memseg.fit_size`` ``"HxW"`` and
  ``memseg.resize`` (how an image is fitted: ``letterbox`` / ``stretch``), ``memseg.center_crop``
  (JSON: a side or ``null``, applied after the fit), ``memseg.mean`` / ``memseg.std`` (JSON lists, RGB, on pixels / 255);
- ``memseg.top_k``, ``memseg.selection_rule``, ``memseg.memory_size``, ``memseg.step`` and
  ``memseg.checkpoint_sha256`` (the checkpoint file it came from);
- ``memseg.image_threshold`` / ``memseg.pixel_threshold`` and ``memseg.thresholds`` (JSON) when the
  checkpoint has thresholds (:mod:`memseg_lite.evaluation.thresholds`): an image is *defective*
  when ``score >= image_threshold``.

Input ``images``: float32 ``[batch, 3, H, W]``, RGB, ``(pixels / 255 - mean) / std``. Outputs
``anomaly_map`` float32 ``[batch, H, W]`` in [0, 1] and ``score`` float32 ``[batch]``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from memseg_lite.core.checkpoint import load_checkpoint
from memseg_lite.core.io import atomic_output
from memseg_lite.core.sizes import parse_size
from memseg_lite.core.transforms import IMAGENET_MEAN, IMAGENET_STD
from memseg_lite.evaluation.evaluate import input_size, resize_mode
from memseg_lite.network.attention import spatial_attention_maps
from memseg_lite.network.model import MemSeg, memseg_from_state

EXPORT_FORMATS = ("onnx",)
ONNX_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAMES = ("anomaly_map", "score")
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
            for first, second in zip(names, names[1:]):
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


def _flatten_like(tensor: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, C*h*w]`` in ``reference``'s memory order (NCHW or channels_last): any
    order gives the same distances as long as input and bank share it, and this one copies nothing."""
    if reference.dim() == 4 and not reference.is_contiguous() and reference.is_contiguous(memory_format=torch.channels_last):
        return tensor.permute(0, 2, 3, 1).reshape(tensor.shape[0], -1)
    return tensor.reshape(tensor.shape[0], -1)


def near_ties(distances: list[torch.Tensor], features: list[torch.Tensor], rule: str, rtol: float = TIE_RTOL) -> torch.Tensor:
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
        pairs = [(distance, size) for distance, size in zip(distances, sizes)]
    else:
        pairs = [(distances[0] + distances[1] + distances[2], sizes[0] + sizes[1] + sizes[2])]
    tie = torch.zeros(batch, dtype=torch.bool, device=features[0].device)
    for distance, size in pairs:
        two = distance.topk(2, dim=1, largest=False).values
        tie |= (two[:, 1] - two[:, 0]) <= rtol * (size + two[:, 0])
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
                f"ablation switches {switches}. Predict with backend='torch' (memseg-lite predict --backend torch)"
            )
        if len(model.memory) == 0:
            raise ValueError("the model's memory bank is empty: build it (build_memseg) or load a trained checkpoint")
        model = copy.deepcopy(model).eval()
        self.encoder = model.encoder
        self.msff = model.msff
        self.decoder = model.decoder
        self.selection_rule = model.selection_rule
        self.top_k = int(model.top_k)
        for name, stored in zip(("memory1", "memory2", "memory3"), model.memory.features):
            self.register_buffer(name, stored.detach().float().contiguous())
        self.image_size = model.memory.image_size
        self.folded = fold_batchnorms(self) if fold else 0
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
        """``(indices, near_tie)``: the closest memory sample(s) by the model's selection rule (see
        :mod:`memseg_lite.network.memory`; ``int64 [B]``, ``[B, 3]`` for ``"official"``) and
        ``bool [B]``, the inputs where that choice is within rounding (:func:`near_ties`; all
        ``False`` in an exported graph)."""
        memory = [self.memory1, self.memory2, self.memory3]
        distances = []
        exporting = torch.onnx.is_in_onnx_export()
        for feature, stored in zip(features, memory):
            flat_input, flat_memory = _flatten_like(feature, stored), _flatten_like(stored, stored)
            if not exporting:  # torch: the same sums without the [B, N, D] intermediate
                if self.selection_rule == "tootouch":
                    squared = torch.cdist(flat_input, flat_memory, p=2, compute_mode="donot_use_mm_for_euclid_dist") ** 2
                    distances.append(squared / flat_input.shape[1])
                else:
                    distances.append(torch.cdist(flat_input, flat_memory, p=1))
                continue
            difference = flat_input.unsqueeze(1) - flat_memory.unsqueeze(0)  # [B, N, D]
            if self.selection_rule == "tootouch":
                distances.append(difference.square().mean(dim=2))
            else:
                distances.append(difference.abs().sum(dim=2))
        if self.selection_rule == "official":
            indices = torch.stack([distance.argmin(dim=1) for distance in distances], dim=1)  # per level
        else:
            indices = (distances[0] + distances[1] + distances[2]).argmin(dim=1)
        if exporting:
            return indices, torch.zeros(indices.shape[0], dtype=torch.bool, device=indices.device)
        return indices, near_ties(distances, features, self.selection_rule)

    def decode(self, stem: torch.Tensor, features: list[torch.Tensor], level4: torch.Tensor,
               indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(anomaly_map [B, H, W], score [B])`` from the encoder features and the chosen memory samples."""
        memory = [self.memory1, self.memory2, self.memory3]
        di_star = []
        for level, (feature, stored) in enumerate(zip(features, memory)):
            index = indices[:, level] if self.selection_rule == "official" else indices
            difference = stored.index_select(0, index) - feature
            di_star.append(difference.square() if self.selection_rule == "tootouch" else difference.abs())
        concatenated = [torch.cat([ii, di], dim=1) for ii, di in zip(features, di_star)]
        fused = self.msff(concatenated, spatial_attention_maps(di_star))
        logits = self.decoder(level4, fused, stem)
        maps = torch.softmax(logits, dim=1)[:, 1]
        flat = maps.flatten(1)
        scores = flat.topk(min(self.top_k, flat.shape[1]), dim=1).values.mean(dim=1)
        return maps, scores

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``float [B, 3, H, W]`` normalised images -> ``(anomaly_map [B, H, W], score [B])``."""
        stem, features, level4 = self.encode(images)
        indices, _ = self.select(features)
        return self.decode(stem, features, level4, indices)


def deployed_from_checkpoint(
    checkpoint: str | os.PathLike | dict, fold: bool = True
) -> tuple[DeployedMemSeg, dict]:
    """``(DeployedMemSeg on the CPU, checkpoint payload)`` from a checkpoint file or payload."""
    payload = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    for key in ("model_config", "model"):
        if key not in payload:
            raise ValueError(f"{checkpoint}: not a memseg-lite model checkpoint (no {key!r} entry); pass RUN_DIR/best.pt")
    model = memseg_from_state(payload["model_config"], payload["model"])
    return DeployedMemSeg(model, fold=fold), payload


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------
def _input_shape(payload: dict, deployed: DeployedMemSeg) -> tuple[int, int]:
    """(H, W) of the network input: the memory bank's image size (what the model accepts)."""
    height, width = deployed.image_size
    return int(height), int(width)


def deployment_metadata(payload: dict, deployed: DeployedMemSeg) -> dict[str, str]:
    """The preprocessing, scoring and thresholds of a checkpoint as ``metadata_props`` strings."""
    height, width = _input_shape(payload, deployed)
    fit_size, center_crop = input_size(payload)
    fit_height, fit_width = parse_size(fit_size)
    metadata = {
        "format_version": "1",
        "image_size": f"{height}x{width}",
        "fit_size": f"{fit_height}x{fit_width}",
        "resize": resize_mode(payload),
        "center_crop": json.dumps(center_crop),
        "mean": json.dumps(list(IMAGENET_MEAN)),
        "std": json.dumps(list(IMAGENET_STD)),
        "input": "float32 [batch, 3, H, W], RGB, (pixels / 255 - mean) / std",
        "outputs": "anomaly_map float32 [batch, H, W] in [0, 1]; score float32 [batch] (mean of the top_k map values)",
        "top_k": str(deployed.top_k),
        "selection_rule": deployed.selection_rule,
        "memory_size": str(int(deployed.memory1.shape[0])),
        "step": str(payload.get("step", "")),
    }
    thresholds = payload.get("thresholds")
    if isinstance(thresholds, dict) and {"image", "pixel"} <= set(thresholds):
        metadata["image_threshold"] = repr(float(thresholds["image"]))
        metadata["pixel_threshold"] = repr(float(thresholds["pixel"]))
        metadata["thresholds"] = json.dumps(thresholds, default=str)
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
        prop.key[len(METADATA_PREFIX):]: prop.value for prop in model.metadata_props if prop.key.startswith(METADATA_PREFIX)
    }


# --------------------------------------------------------------------------------------------
# ONNX export
# --------------------------------------------------------------------------------------------
def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            "ONNX export needs the 'onnx' package: pip install 'memseg-lite[deploy]' (or pip install onnx onnxruntime)"
        ) from error


def trace_to_onnx(deployed: DeployedMemSeg, destination, opset: int = ONNX_OPSET) -> None:
    """Trace ``deployed`` into an ONNX graph written to ``destination`` (a path or a binary stream)."""
    height, width = deployed.image_size
    example = torch.zeros(2, 3, int(height), int(width), device=deployed.memory1.device)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter (dynamo=False) needs no extra package; its deprecation
        # notice and the tracer's notes about the argument checks are expected here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            deployed,
            (example,),
            destination if not isinstance(destination, Path) else str(destination),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAMES[0]: {0: "batch"}, OUTPUT_NAMES[1]: {0: "batch"}},
            opset_version=int(opset),
            do_constant_folding=True,
        )


def export_onnx(
    checkpoint: str | os.PathLike | dict,
    out: str | os.PathLike | None = None,
    opset: int = ONNX_OPSET,
    fold: bool = True,
) -> Path:
    """Write the checkpoint's model as ONNX (memory bank inside, dynamic batch axis, metadata).

    ``out``: the file to write (default: the checkpoint's path with ``.onnx``; required when
    ``checkpoint`` is a payload). Returns the path written (atomically).
    """
    _require_onnx()
    import onnx

    if out is None:
        if isinstance(checkpoint, dict):
            raise ValueError("out is required when checkpoint is a payload dict; pass out='model.onnx'")
        out = Path(checkpoint).with_suffix(".onnx")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"--out {out}: an ONNX file name must end in .onnx")
    deployed, payload = deployed_from_checkpoint(checkpoint, fold=fold)
    metadata = deployment_metadata(payload, deployed)
    if not isinstance(checkpoint, dict):  # lets predict find this export and know it is current
        metadata[METADATA_PREFIX + "checkpoint_sha256"] = file_sha256(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as temporary:
        trace_to_onnx(deployed, temporary, opset)
        model = onnx.load(str(temporary))
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.producer_name = "memseg-lite"
        onnx.save(model, str(temporary))
    return out
