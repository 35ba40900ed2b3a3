"""The assembled MemSeg network, its construction and its checkpoint round trip.

Forward pass for a batch of normalised images ``[B, 3, H, W]`` (``H``, ``W`` divisible by 32):

1. encoder: stem, levels 1-3 (frozen) and level 4 (trained);
2. memory bank: difference information ``DI*_l`` to the closest good image, levels 1-3;
3. concatenated information ``CI_l = concat(II_l, DI*_l)``;
4. spatial attention maps ``M1, M2, M3`` from ``DI*``;
5. MSFF: fused levels, each multiplied by its ``M_l``;
6. U-Net decoder: 2-channel logits ``[B, 2, H, W]`` (normal, anomalous).

The anomaly map is the softmax probability of the anomalous channel; the image score is the
mean of its ``top_k`` largest values.

Ablation switches (:class:`MemSeg` arguments, saved by :meth:`MemSeg.config`, so a checkpoint
rebuilds the same network; the defaults are the method as the paper describes it):

- ``use_memory=False``: no memory bank, no ``DI*``: ``CI_l = II_l`` (64, 128, 256 channels), so
  MSFF gets half the input channels and gives 32, 64, 128. The spatial attention has nothing to
  come from: its maps are all ones (no weighting), and ``di_star`` / ``indices`` / ``distances``
  are empty tensors.
- ``use_attention=False``: the spatial attention maps are all ones (MSFF output unweighted).
- ``fusion="plain"``: no MSFF; each ``CI_l`` goes through one 1x1 convolution (+BN+ReLU) to the
  channel count MSFF gives (:class:`memseg_lite.network.msff.PlainSkips`).
- ``feature_smoothing="avgpool3"``: the level 1-3 features (input and memory bank alike) are
  averaged over 3 x 3 windows (stride 1, padding 1, ``count_include_pad=False``) before the memory
  comparison, as in the authors' code; the smoothed features are also the ``II_l`` in ``CI_l``.
- ``di_scale`` / ``feature_scale``: ``CI_l = concat(feature_scale * II_l, di_scale * DI*_l)``
  (the authors' code uses 100 and 100). The attention maps are computed from the unscaled ``DI*``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from memseg_lite.core.checkpoint import load_checkpoint
from memseg_lite.core.runtime import resolve_device
from memseg_lite.network.attention import spatial_attention_maps
from memseg_lite.network.decoder import UNetDecoder
from memseg_lite.network.encoder import (
    EncoderFeatures,
    ResNet18Encoder,
    calibrate_batchnorm,
)
from memseg_lite.network.memory import (
    SELECTION_RULES,
    MemoryBank,
    difference_information,
)
from memseg_lite.network.msff import MSFF, PlainSkips

DEFAULT_DECODER_CHANNELS = (256, 128, 64, 48, 32)
ENCODER_CHANNELS = (64, 64, 128, 256, 512)  # stem, level1..level4
FUSIONS = ("msff", "plain")
FEATURE_SMOOTHINGS = ("none", "avgpool3")
#: The ablation switches and their defaults (the paper's network); MemSeg.config() saves them.
ABLATION_DEFAULTS: dict[str, Any] = {
    "use_memory": True,
    "use_attention": True,
    "fusion": "msff",
    "feature_smoothing": "none",
    "di_scale": 1.0,
    "feature_scale": 1.0,
}


def smooth_features(features: Sequence[torch.Tensor], smoothing: str) -> list[torch.Tensor]:
    """``"avgpool3"``: 3 x 3 average pooling (stride 1, padding 1, borders averaged over the pixels
    inside) of each level; ``"none"``: the features unchanged."""
    if smoothing not in FEATURE_SMOOTHINGS:
        raise ValueError(f"feature_smoothing must be one of {FEATURE_SMOOTHINGS}, got {smoothing!r}")
    if smoothing == "none":
        return list(features)
    return [nn.functional.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False) for f in features]


class MemSegOutputs(NamedTuple):
    """Every intermediate of one forward pass (for teaching and debugging)."""

    logits: torch.Tensor  # [B, 2, H, W]
    features: EncoderFeatures  # stem, level1..level4
    di_star: list[torch.Tensor]  # 3 x [B, C_l, h_l, w_l], float32
    indices: torch.Tensor  # chosen memory samples: [B] or [B, 3] ("official")
    distances: torch.Tensor  # [B, N, 3] distances to every memory sample
    attention_maps: list[torch.Tensor]  # M1, M2, M3: 3 x [B, 1, h_l, w_l]
    concatenated: list[torch.Tensor]  # CI_1..CI_3: [B, 128|256|512, h_l, w_l]
    fused: list[torch.Tensor]  # MSFF outputs: [B, 64|128|256, h_l, w_l]


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """Raise a clear error unless ``images`` is a float ``[B, 3, H, W]`` tensor with ``H``, ``W`` divisible by 32."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [B, 3, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape [B, 3, H, W], got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(
            f"{name} must be a float tensor normalised with ImageNet statistics "
            f"(memseg_lite.core.transforms.image_to_tensor), got {images.dtype}"
        )
    height, width = images.shape[-2:]
    if height % 32 or width % 32 or height == 0 or width == 0:
        raise ValueError(
            f"{name} height and width must be positive multiples of 32 (the encoder halves them 5 times), "
            f"got {height} x {width}; resize to e.g. {max(32, round(height / 32) * 32)} x "
            f"{max(32, round(width / 32) * 32)}"
        )


def top_k_mean(maps: torch.Tensor, top_k: int) -> torch.Tensor:
    """Mean of the ``top_k`` largest values of each map (``top_k=1``: the maximum).

    Args:
        maps: ``float [B, H, W]`` or ``[B, 1, H, W]``.
        top_k: number of values averaged; capped at the number of pixels.

    Returns:
        ``float [B]``.
    """
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3:
        raise ValueError(f"maps must be [B, H, W] or [B, 1, H, W], got {tuple(maps.shape)}")
    flat = maps.reshape(maps.shape[0], -1)
    return flat.topk(min(top_k, flat.shape[1]), dim=1).values.mean(dim=1)


class MemSeg(nn.Module):
    """MemSeg: encoder, memory bank, MSFF and U-Net decoder.

    Use :func:`build_memseg` to build a working model (it loads the backbone and fills the
    memory bank); construct ``MemSeg(...)`` directly only to load a checkpoint into it
    (:func:`memseg_from_state`), since the default encoder is randomly initialised and the
    memory bank empty.

    Args:
        selection_rule: how the closest memory sample is chosen: ``"paper"``, ``"official"``
            or ``"tootouch"`` (see :mod:`memseg_lite.network.memory`).
        top_k: pixels averaged for the image score.
        ca_reduction: coordinate-attention reduction in MSFF.
        decoder_channels: widths of the five decoder up steps.
        encoder: an encoder to use (default: a randomly initialised ResNet18).
        memory: a memory bank to use (default: empty).
        use_memory, use_attention, fusion, feature_smoothing, di_scale, feature_scale: the
            ablation switches (see the module docstring); the defaults are the paper's network.
    """

    def __init__(
        self,
        selection_rule: str = "paper",
        top_k: int = 100,
        ca_reduction: int = 32,
        decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
        encoder: ResNet18Encoder | None = None,
        memory: MemoryBank | None = None,
        use_memory: bool = True,
        use_attention: bool = True,
        fusion: str = "msff",
        feature_smoothing: str = "none",
        di_scale: float = 1.0,
        feature_scale: float = 1.0,
    ):
        super().__init__()
        for name, value in (("use_memory", use_memory), ("use_attention", use_attention)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS} ('plain': no MSFF), got {fusion!r}")
        if feature_smoothing not in FEATURE_SMOOTHINGS:
            raise ValueError(f"feature_smoothing must be one of {FEATURE_SMOOTHINGS}, got {feature_smoothing!r}")
        for name, value in (("di_scale", di_scale), ("feature_scale", feature_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if selection_rule not in SELECTION_RULES:
            raise ValueError(f"selection_rule must be one of {SELECTION_RULES}, got {selection_rule!r}")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        self.selection_rule = selection_rule
        self.top_k = top_k
        self.ca_reduction = int(ca_reduction)
        self.decoder_channels = tuple(int(channels) for channels in decoder_channels)
        self.use_memory = use_memory
        self.use_attention = use_attention
        self.fusion = fusion
        self.feature_smoothing = feature_smoothing
        self.di_scale = float(di_scale)
        self.feature_scale = float(feature_scale)
        stem, level1, level2, level3, level4 = ENCODER_CHANNELS
        self.encoder = encoder if encoder is not None else ResNet18Encoder(weights="none", seed=None)
        self.memory = memory if memory is not None else MemoryBank()
        factor = 2 if use_memory else 1  # CI = concat(II, DI*), or II alone without memory
        in_channels = (factor * level1, factor * level2, factor * level3)
        if fusion == "msff":
            self.msff = MSFF(in_channels=in_channels, reduction=self.ca_reduction)
        else:
            self.msff = PlainSkips(in_channels=in_channels)
        self.decoder = UNetDecoder(
            bottleneck_channels=level4,
            skip_channels=(*reversed(self.msff.out_channels), stem),
            decoder_channels=self.decoder_channels,
        )

    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor options; ``memseg_from_state(config, state_dict)`` rebuilds the model."""
        return {
            "selection_rule": self.selection_rule,
            "top_k": self.top_k,
            "ca_reduction": self.ca_reduction,
            "decoder_channels": list(self.decoder_channels),
            "use_memory": self.use_memory,
            "use_attention": self.use_attention,
            "fusion": self.fusion,
            "feature_smoothing": self.feature_smoothing,
            "di_scale": self.di_scale,
            "feature_scale": self.feature_scale,
        }

    def forward_intermediates(self, images: torch.Tensor) -> MemSegOutputs:
        """The forward pass, returning every intermediate (see :class:`MemSegOutputs`).

        Args:
            images: ``float [B, 3, H, W]`` normalised with ImageNet statistics, ``H``, ``W``
                divisible by 32, the size of the memory images.
        """
        check_images(images)
        features = self.encoder(images)
        inputs = smooth_features([features.level1, features.level2, features.level3], self.feature_smoothing)
        if self.use_memory:
            memory = smooth_features(self.memory.features, self.feature_smoothing)
            di_star, indices, distances = difference_information(inputs, memory, self.selection_rule)
            # DI* is float32 (kept out of autocast); match the features' dtype so the convs see one type.
            concatenated = [
                torch.cat([self._scaled(ii, self.feature_scale), self._scaled(di.to(ii.dtype), self.di_scale)], dim=1)
                for ii, di in zip(inputs, di_star, strict=True)
            ]
        else:  # no memory: CI = II, and nothing for the spatial attention to come from
            empty = inputs[0].new_zeros(images.shape[0], 0)
            di_star = [ii.new_zeros(ii.shape[0], 0, *ii.shape[-2:]) for ii in inputs]
            indices = torch.zeros(images.shape[0], 0, dtype=torch.int64, device=images.device)
            distances = empty.float().reshape(images.shape[0], 0, 0)
            concatenated = [self._scaled(ii, self.feature_scale) for ii in inputs]
        if self.use_memory and self.use_attention:
            attention_maps = spatial_attention_maps(di_star)
        else:
            attention_maps = [ii.new_ones(ii.shape[0], 1, *ii.shape[-2:]) for ii in inputs]
        fused = self.msff(concatenated, [m.to(f.dtype) for m, f in zip(attention_maps, inputs, strict=True)])
        logits = self.decoder(features.level4, fused, features.stem)
        return MemSegOutputs(logits, features, di_star, indices, distances, attention_maps, concatenated, fused)

    @staticmethod
    def _scaled(tensor: torch.Tensor, factor: float) -> torch.Tensor:
        return tensor if factor == 1.0 else tensor * factor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 2, H, W]`` (channel 0 normal, channel 1 anomalous) for ``float [B, 3, H, W]`` images."""
        return self.forward_intermediates(images).logits

    @torch.no_grad()
    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """Anomaly probability per pixel, ``float32 [B, H, W]`` in [0, 1] (eval mode, no gradients).

        The model's train/eval mode is restored afterwards.
        """
        was_training = self.training
        self.eval()
        try:
            logits = self(images)
        finally:
            self.train(was_training)
        return torch.softmax(logits.float(), dim=1)[:, 1]

    def image_score(self, maps: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
        """Image score ``float [B]``: mean of the ``top_k`` (default ``self.top_k``) largest map values."""
        return top_k_mean(maps, self.top_k if top_k is None else top_k)


def build_memseg(
    memory_images: torch.Tensor,
    backbone_weights: str | os.PathLike = "auto",
    selection_rule: str = "paper",
    top_k: int = 100,
    calibrate_bn: bool | str = "auto",
    device: str | torch.device | None = None,
    *,
    allow_download: bool = True,
    seed: int = 0,
    batch_size: int = 8,
    **options: Any,
) -> MemSeg:
    """Build a ready-to-train MemSeg: load the backbone, calibrate it if random, fill the memory bank.

    Args:
        memory_images: ``float [N, 3, H, W]`` good training images normalised with ImageNet
            statistics (N = 30 in the official code and tootouch). Inputs must later have the
            same ``H x W``.
        backbone_weights: ``"auto"``, ``"imagenet"``, ``"none"`` or a state-dict path
            (see :func:`memseg_lite.network.encoder.load_resnet18`).
        selection_rule: ``"paper"``, ``"official"`` or ``"tootouch"``.
        top_k: pixels averaged for the image score.
        calibrate_bn: re-estimate the encoder's batch-norm statistics on ``memory_images``
            (:func:`memseg_lite.network.encoder.calibrate_batchnorm`). ``"auto"``: only when the backbone
            is randomly initialised. Not in the paper, which always uses ImageNet weights; without
            it a random frozen encoder has features whose scale is set by the depth (it grows
            about tenfold from the stem to layer4), not by the data.
        device: where the model lives (``"auto"``, ``"cpu"``, ``"cuda"``, ...); ``None``: the
            device of ``memory_images``.
        allow_download: passed to :func:`memseg_lite.network.encoder.load_resnet18`.
        seed: seed for every random initialisation (backbone if random, MSFF, decoder).
        batch_size: images per encoder pass while calibrating and building the bank.
        **options: further :class:`MemSeg` options (``ca_reduction``, ``decoder_channels`` and the
            ablation switches of :data:`ABLATION_DEFAULTS`). With ``use_memory=False`` the memory
            bank stays empty (``memory_images`` only calibrate the batch norm, when that applies).
    """
    check_images(memory_images, "memory_images")
    if calibrate_bn not in (True, False, "auto"):
        raise ValueError(f"calibrate_bn must be True, False or 'auto', got {calibrate_bn!r}")
    allowed = {"ca_reduction", "decoder_channels", *ABLATION_DEFAULTS}
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"build_memseg got unknown options {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}")
    target = memory_images.device if device is None else resolve_device(device)
    # Module initialisers draw from the global generator: fork it, so a seed gives the same
    # network without disturbing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = ResNet18Encoder(weights=backbone_weights, allow_download=allow_download, seed=None)
        model = MemSeg(selection_rule=selection_rule, top_k=top_k, encoder=encoder, **options)
    model.to(target)
    if calibrate_bn is True or (calibrate_bn == "auto" and not encoder.pretrained):
        calibrate_batchnorm(model.encoder, memory_images, batch_size=batch_size)
    if model.use_memory:
        model.memory.build(model.encoder, memory_images, batch_size=batch_size)
    return model


def memseg_from_state(
    config: dict[str, Any], state_dict: dict[str, torch.Tensor], device: str | torch.device | None = None
) -> MemSeg:
    """Rebuild a model saved as ``{"model_config": model.config(), "model": model.state_dict()}``.

    The backbone weights and the memory bank come from ``state_dict`` (never downloaded); the
    bank may have any number of samples.

    Args:
        config: the output of :meth:`MemSeg.config`; checkpoints written before the ablation
            switches lack them and get the defaults (the network they were trained with).
        state_dict: the output of ``model.state_dict()``.
        device: where to put the model (default: CPU).
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be the dict from MemSeg.config(), got {type(config).__name__}")
    allowed = {"selection_rule", "top_k", "ca_reduction", "decoder_channels", *ABLATION_DEFAULTS}
    unknown = set(config) - allowed
    if unknown:
        raise ValueError(f"config has unknown keys {sorted(unknown)}; expected a subset of {sorted(allowed)}")
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG untouched
        model = MemSeg(**config)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise ValueError(f"state_dict does not fit a MemSeg built from config {config}: {error}") from error
    return model.to(resolve_device(device) if device is not None else torch.device("cpu"))


def load_model(checkpoint: str | os.PathLike | dict, device: str | torch.device = "auto") -> tuple[MemSeg, dict]:
    """(model in eval mode on ``device``, checkpoint payload) from a checkpoint path or an already loaded payload.

    The path is read with :func:`memseg_lite.core.checkpoint.load_checkpoint` (``weights_only=True``)
    and the network rebuilt with :func:`memseg_from_state`.
    """
    payload = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    model = memseg_from_state(payload["model_config"], payload["model"])
    model = model.to(resolve_device(device)).eval()
    return model, payload


def _count(module: nn.Module) -> dict[str, int]:
    trainable = sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)
    frozen = sum(parameter.numel() for parameter in module.parameters() if not parameter.requires_grad)
    return {"trainable": trainable, "frozen": frozen}


def parameter_counts(model: MemSeg) -> dict[str, Any]:
    """Trainable and frozen parameter counts per part, plus the number of values in the memory bank.

    Returns a dict like ``{"encoder": {"trainable": ..., "frozen": ...}, "msff": {...},
    "decoder": {...}, "total": {...}, "memory_bank_values": ...}``.
    """
    counts: dict[str, Any] = {part: _count(getattr(model, part)) for part in ("encoder", "msff", "decoder")}
    counts["total"] = _count(model)
    counts["memory_bank_values"] = sum(buffer.numel() for buffer in model.memory.buffers())
    return counts
