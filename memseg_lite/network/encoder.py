"""The ResNet18 feature extractor: a frozen stem..layer3 and a trainable layer4.

MemSeg compares the features of an input with those of good images kept in a memory pool.
That comparison only means something if the features do not move during training, so the
stem and blocks 1-3 are frozen: no gradients, and their batch-norm layers stay in eval mode
even when the model trains (otherwise their running statistics would drift with every batch
of simulated anomalies). Block 4 feeds only the decoder bottleneck and is trained.

Feature maps for an ``H x W`` input (``H`` and ``W`` divisible by 32):

======== ======== ============
level    channels resolution
======== ======== ============
stem     64       H/2
level1   64       H/4  (after max-pool + layer1)
level2   128      H/8
level3   256      H/16
level4   512      H/32
======== ======== ============

Weights: the paper starts from ImageNet. Without internet (and without the file in the torch
hub cache) the encoder is randomly initialised instead; :func:`calibrate_batchnorm` then gives
the random frozen features a sane scale. Expect clearly lower accuracy in that case.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights

from memseg_lite.core.offline import offline_requested

LOGGER = logging.getLogger(__name__)

WEIGHT_CHOICES = ("auto", "imagenet", "none")
# torchvision's ImageNet checkpoint: file name and where torch.hub caches it.
IMAGENET_URL = ResNet18_Weights.IMAGENET1K_V1.url
IMAGENET_FILE = os.path.basename(urlparse(IMAGENET_URL).path)
DOWNLOAD_TIMEOUT_S = 20.0  # per socket operation, not for the whole download


class EncoderFeatures(NamedTuple):
    """The five feature maps of :class:`ResNet18Encoder` (``float [B, C, h, w]`` each)."""

    stem: torch.Tensor  # [B, 64, H/2, W/2]
    level1: torch.Tensor  # [B, 64, H/4, W/4]
    level2: torch.Tensor  # [B, 128, H/8, W/8]
    level3: torch.Tensor  # [B, 256, H/16, W/16]
    level4: torch.Tensor  # [B, 512, H/32, W/32]


class FrozenFeatures(NamedTuple):
    """The feature maps of the frozen part (stem..layer3); see :class:`EncoderFeatures`."""

    stem: torch.Tensor
    level1: torch.Tensor
    level2: torch.Tensor
    level3: torch.Tensor


def imagenet_cache_path() -> Path:
    """Where torch.hub looks for the ImageNet ResNet18 file: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE


def _random_resnet18(seed: int | None) -> torchvision.models.ResNet:
    if seed is None:
        return torchvision.models.resnet18(weights=None)
    # torchvision initialises from the global generator; fork it so a seed gives the same
    # network without changing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torchvision.models.resnet18(weights=None)


class BackboneUnavailableError(RuntimeError):
    """The ImageNet ResNet18 weights could not be loaded (offline, missing or corrupt file)."""


def _imagenet_resnet18(allow_download: bool, seed: int | None) -> torchvision.models.ResNet:
    cache_file = imagenet_cache_path()
    allow_download = allow_download and not offline_requested()
    try:
        if cache_file.is_file():
            state = torch.load(cache_file, map_location="cpu", weights_only=True)
        elif not allow_download:
            raise FileNotFoundError(f"{cache_file} does not exist and downloading is disabled")
        else:
            # torch.hub opens the URL without a timeout; behind a firewall that drops packets that
            # would hang for minutes, so bound every socket operation while downloading.
            previous_timeout = socket.getdefaulttimeout()
            socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
            try:
                state = torch.hub.load_state_dict_from_url(
                    IMAGENET_URL, map_location="cpu", progress=False, check_hash=True, weights_only=True
                )
            finally:
                socket.setdefaulttimeout(previous_timeout)
        model = _random_resnet18(seed)  # every weight is overwritten just below
        model.load_state_dict(state)
        return model
    except Exception as error:  # network errors, hash mismatch, corrupt or wrong file: all mean "not available"
        raise BackboneUnavailableError(
            f"The ImageNet weights for ResNet18 could not be loaded ({type(error).__name__}: {error}).\n"
            f"  Put the file {IMAGENET_FILE} into the torch hub cache folder {cache_file.parent}/\n"
            f"  (full path {cache_file}); fetch it on a machine with internet from\n"
            f"  {IMAGENET_URL}\n"
            "  Alternatives: backbone_weights='none' (random initialisation, lower accuracy) or "
            "backbone_weights='/path/to/resnet18_state_dict.pth'."
        ) from error


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights file not found: {path}; pass the path of a ResNet18 state dict "
            "(torch.save(resnet18().state_dict(), path)), 'imagenet', 'auto' or 'none'"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read backbone weights file {path} as a torch state dict: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # common checkpoint wrapper
    if not isinstance(state, dict):
        raise ValueError(f"backbone weights file {path} holds a {type(state).__name__}, not a ResNet18 state dict")
    return state


def _load_resnet18_with_source(
    weights: str | os.PathLike = "auto", allow_download: bool = True, seed: int | None = 0
) -> tuple[torchvision.models.ResNet, str]:
    """Like :func:`load_resnet18`, also returning where the weights came from.

    The source is ``"imagenet"``, ``"random"`` or ``"file:<path>"``.
    """
    if isinstance(weights, str) and weights.lower() in WEIGHT_CHOICES:
        choice = weights.lower()
        if choice == "none":
            return _random_resnet18(seed), "random"
        try:
            return _imagenet_resnet18(allow_download, seed), "imagenet"
        except BackboneUnavailableError as error:
            if choice == "imagenet":
                raise
            message = (
                "ResNet18 ImageNet weights are not available, so the encoder is RANDOMLY initialised: "
                "the frozen features will be much weaker and accuracy clearly lower than the paper's. "
                f"To use ImageNet weights put {IMAGENET_FILE} into {imagenet_cache_path().parent}/ "
                f"(download it from {IMAGENET_URL}). Cause: {error.__cause__}"
            )
            warnings.warn(message, stacklevel=3)
            LOGGER.warning("ResNet18 ImageNet weights unavailable, using a random initialisation (%s)", error.__cause__)
            return _random_resnet18(seed), "random"
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"weights must be 'auto', 'imagenet', 'none' or a path to a state-dict file, got {type(weights).__name__}"
        )
    path = Path(weights).expanduser()
    if not path.suffix and not path.exists():
        raise ValueError(f"weights={str(weights)!r} is neither one of {WEIGHT_CHOICES} nor an existing file")
    state = _state_dict_from_file(path)
    model = _random_resnet18(seed)  # every weight is overwritten just below
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"backbone weights file {path} is not a torchvision ResNet18 state dict (keys or shapes differ): "
            f"{str(error).splitlines()[0]}"
        ) from error
    return model, f"file:{path}"


def load_resnet18(
    weights: str | os.PathLike = "auto", allow_download: bool = True, seed: int | None = 0
) -> torchvision.models.ResNet:
    """A torchvision ResNet18 with the requested weights.

    Args:
        weights: ``"imagenet"`` - torchvision's ``IMAGENET1K_V1`` from the torch hub cache, or
            downloaded when the file is not there; raises ``RuntimeError`` (with the file name,
            cache folder and URL) when that fails. ``"none"`` - random initialisation.
            A path - a local ResNet18 state-dict file. ``"auto"`` - ImageNet when loadable,
            otherwise random initialisation with a loud warning.
        allow_download: ``False`` never touches the network, only the cache file. The
            environment variable ``MEMSEG_OFFLINE=1`` has the same effect.
        seed: seed of the random initialisation (``None``: the global torch generator).
    """
    return _load_resnet18_with_source(weights, allow_download, seed)[0]


class ResNet18Encoder(nn.Module):
    """ResNet18 split into a frozen part (stem, layer1-3) and a trainable ``layer4``.

    Args:
        weights: see :func:`load_resnet18`.
        allow_download: see :func:`load_resnet18`.
        seed: seed for a random initialisation.

    Attributes:
        weights_source: ``"imagenet"``, ``"random"`` or ``"file:<path>"``.
    """

    def __init__(self, weights: str | os.PathLike = "auto", allow_download: bool = True, seed: int | None = 0):
        super().__init__()
        resnet, self.weights_source = _load_resnet18_with_source(weights, allow_download, seed)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu)
        self.pool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train()

    @property
    def pretrained(self) -> bool:
        """True unless the weights are a random initialisation."""
        return self.weights_source != "random"

    def frozen_modules(self) -> list[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3]

    def train(self, mode: bool = True) -> ResNet18Encoder:
        """Set the train mode of ``layer4`` only: the frozen part always stays in eval mode."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()  # batch-norm running statistics must never change
        return self

    @torch.no_grad()
    def frozen_features(self, images: torch.Tensor) -> FrozenFeatures:
        """Features of the frozen part, without autograd.

        Args:
            images: ``float [B, 3, H, W]`` normalised with ImageNet statistics.
        """
        # Always float32, also under autocast: the memory bank was built in float32, and features of
        # another precision would make DI* non-zero even for an input identical to a memory image.
        with torch.autocast(images.device.type, enabled=False):
            images = images.float()
            stem = self.stem(images)
            level1 = self.layer1(self.pool(stem))
            level2 = self.layer2(level1)
            level3 = self.layer3(level2)
        return FrozenFeatures(stem, level1, level2, level3)

    def forward(self, images: torch.Tensor) -> EncoderFeatures:
        """All five feature maps; gradients flow only through ``layer4``.

        Args:
            images: ``float [B, 3, H, W]`` normalised with ImageNet statistics.
        """
        frozen = self.frozen_features(images)  # no activations stored for backward: saves memory
        return EncoderFeatures(*frozen, self.layer4(frozen.level3))


@torch.no_grad()
def calibrate_batchnorm(encoder: ResNet18Encoder, images: torch.Tensor, batch_size: int = 8) -> ResNet18Encoder:
    """Re-estimate the running statistics of every batch-norm layer of ``encoder`` on ``images``.

    Not part of the paper: it matters only for a randomly initialised backbone. A fresh
    BatchNorm has running mean 0 and variance 1, i.e. it is the identity in eval mode, so the
    scale of every level is set by the random weights and the depth rather than by the data:
    residual additions make it grow block after block (on unit-variance input the feature
    standard deviation goes from about 0.2 after the stem to about 2 after layer4), and the
    per-level distances of the memory comparison are weighted by that accident. Measuring the
    real statistics on good images (cumulative average over all batches, ``momentum=None``)
    standardises every layer's input, as ImageNet training would have. The layers go back to
    their previous mode afterwards (the frozen ones to eval).

    Args:
        encoder: the encoder to calibrate (changed in place and returned).
        images: ``float [N, 3, H, W]`` good images, normalised with ImageNet statistics.
        batch_size: images per pass.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor [N, 3, H, W], got {shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = encoder.training
    norms = [module for module in encoder.modules() if isinstance(module, nn.BatchNorm2d)]
    momenta = [norm.momentum for norm in norms]
    device = next(encoder.parameters()).device
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative moving average: every batch counts equally
            norm.train()
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device)
            level3 = encoder.frozen_features(batch).level3
            encoder.layer4(level3)  # layer4 is trained later, but starts from sane statistics too
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        encoder.train(was_training)
    return encoder
