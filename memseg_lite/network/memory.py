"""The memory pool of good images and the difference information DI*.

The memory bank stores the frozen-encoder features (levels 1-3) of ``N`` defect-free images.
For an input with features ``II_l`` (level ``l = 1, 2, 3``), MemSeg compares it with every
memory sample ``MI_{i,l}`` and keeps the difference to the closest one, ``DI*_l``. Where the
input differs from every good image (a defect), ``DI*`` is large.

The paper, the authors' released code and the most used re-implementation read "closest"
differently; all three are available as ``rule``:

``"paper"``
    ``DI_{i,l} = |MI_{i,l} - II_l|`` (the paper's elementwise L2 norm of a scalar difference is
    its absolute value). One sample for all levels:
    ``i* = argmin_i sum_l sum_elements DI_{i,l}``. ``indices``: ``[B]``.
``"official"``
    The same absolute difference, but each level picks its own sample:
    ``i*_l = argmin_i sum_elements |MI_{i,l} - II_l|``. ``indices``: ``[B, 3]``.
``"tootouch"``
    Squared error ``DI_{i,l} = (MI_{i,l} - II_l)^2``; one sample for all levels, chosen by
    the sum over levels of the *mean* over elements:
    ``i* = argmin_i sum_l mean_elements DI_{i,l}``. ``indices``: ``[B]``. Because of the
    mean, every level weighs the same, whereas the plain sum of ``"paper"`` is dominated by
    level 1 (it has the most elements: ``64 x H/4 x W/4``).

The distances to all ``N`` samples are computed at once with :func:`torch.cdist` on the
flattened features (``p=1`` gives the sum of absolute differences, ``p=2`` squared the sum of
squared errors): no Python loop over memory samples. The comparison always runs in float32,
also under autocast, so the choice of sample does not flip with the precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from memseg_lite.network.encoder import ResNet18Encoder
from memseg_lite.network.selection import SELECTION_RULES

LEVEL_CHANNELS = (64, 128, 256)
BUFFER_NAMES = ("level1", "level2", "level3")


def _check_rule(rule: str) -> None:
    if rule not in SELECTION_RULES:
        raise ValueError(f"rule must be one of {SELECTION_RULES}, got {rule!r}")


def _check_features(features: Sequence[torch.Tensor], memory: Sequence[torch.Tensor]) -> None:
    if len(features) != 3 or len(memory) != 3:
        raise ValueError(f"expected 3 feature levels and 3 memory levels, got {len(features)} and {len(memory)}")
    if memory[0].shape[0] == 0:
        raise ValueError("the memory bank is empty: call MemoryBank.build(encoder, good_images) first")
    for level, (feature, stored) in enumerate(zip(features, memory, strict=True), start=1):
        if feature.ndim != 4 or feature.shape[1:] != stored.shape[1:]:
            raise ValueError(
                f"level {level}: input features {tuple(feature.shape)} do not match the memory bank "
                f"[N, {', '.join(map(str, stored.shape[1:]))}]; build the bank from images of the same size "
                "as the input"
            )


def _flatten_like(tensor: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Flatten ``[B, C, h, w]`` to ``[B, C*h*w]`` in ``reference``'s memory order.

    Any element order gives the same distances, as long as input and memory share it; using
    the memory's own layout avoids copying the (large) bank when the model is channels_last.
    """
    if reference.is_contiguous():
        return tensor.reshape(tensor.shape[0], -1)
    return tensor.permute(0, 2, 3, 1).reshape(tensor.shape[0], -1)


def memory_distances(
    features: Sequence[torch.Tensor], memory: Sequence[torch.Tensor], rule: str = "paper"
) -> torch.Tensor:
    """Distance of every input to every memory sample, per level.

    Args:
        features: 3 tensors ``float [B, C_l, h_l, w_l]`` (input features of levels 1-3).
        memory: 3 tensors ``float [N, C_l, h_l, w_l]`` (the bank).
        rule: ``"paper"`` / ``"official"``: sum of absolute differences; ``"tootouch"``: mean
            squared error.

    Returns:
        ``float32 [B, N, 3]``: entry ``[b, i, l]`` is the level-``l`` distance between input
        ``b`` and memory sample ``i``. Sum over the last axis for the single-sample rules.
    """
    _check_rule(rule)
    _check_features(features, memory)
    columns = []
    with torch.autocast(features[0].device.type, enabled=False):
        for feature, stored in zip(features, memory, strict=True):
            flat_input = _flatten_like(feature.float(), stored)
            flat_memory = _flatten_like(stored.float(), stored)
            if torch.onnx.is_in_onnx_export():  # the ONNX exporter translates cdist wrongly: the sums themselves
                difference = flat_input.unsqueeze(1) - flat_memory.unsqueeze(0)  # [B, N, D]
                columns.append(difference.square().mean(dim=2) if rule == "tootouch" else difference.abs().sum(dim=2))
            elif rule == "tootouch":
                # Without the matrix-product shortcut ||a||^2 + ||b||^2 - 2ab, which cancels badly
                # when an input is close to a memory sample.
                squared = torch.cdist(flat_input, flat_memory, p=2, compute_mode="donot_use_mm_for_euclid_dist") ** 2
                columns.append(squared / flat_input.shape[1])
            else:
                columns.append(torch.cdist(flat_input, flat_memory, p=1))
    return torch.stack(columns, dim=-1)


def select_indices(distances: torch.Tensor, rule: str = "paper") -> torch.Tensor:
    """The chosen memory sample(s) from :func:`memory_distances`' ``[B, N, 3]`` output.

    Returns ``int64 [B]`` for ``"paper"`` / ``"tootouch"`` and ``[B, 3]`` for ``"official"``.
    """
    _check_rule(rule)
    if rule == "official":
        return distances.argmin(dim=1)
    return distances.sum(dim=-1).argmin(dim=1)


def difference_information(
    features: Sequence[torch.Tensor], memory: Sequence[torch.Tensor], rule: str = "paper"
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """``DI*`` for every level, the chosen indices and the distance matrix.

    Args:
        features: 3 tensors ``float [B, C_l, h_l, w_l]``.
        memory: 3 tensors ``float [N, C_l, h_l, w_l]``.
        rule: ``"paper"``, ``"official"`` or ``"tootouch"`` (see the module docstring).

    Returns:
        ``(di_star, indices, distances)``: ``di_star`` is 3 tensors ``float32 [B, C_l, h_l, w_l]``
        (absolute or squared differences to the chosen sample), ``indices`` is ``int64 [B]`` or
        ``[B, 3]``, ``distances`` is ``float32 [B, N, 3]``.
    """
    distances = memory_distances(features, memory, rule)
    indices = select_indices(distances, rule)
    di_star = []
    with torch.autocast(features[0].device.type, enabled=False):
        for level, (feature, stored) in enumerate(zip(features, memory, strict=True)):
            chosen = stored[indices[:, level] if rule == "official" else indices].float()
            difference = chosen - feature.float()
            di_star.append(difference.square() if rule == "tootouch" else difference.abs())
    return di_star, indices, distances


class MemoryBank(nn.Module):
    """Layer 1-3 features of ``N`` good images, kept as buffers (saved in ``state_dict``).

    ``load_state_dict`` accepts a bank of any ``N`` and feature size: the buffers are resized
    to the stored ones, so a checkpoint always restores the bank it was trained with.

    Buffers ``level1`` ``[N, 64, H/4, W/4]``, ``level2`` ``[N, 128, H/8, W/8]``, ``level3``
    ``[N, 256, H/16, W/16]``, all float32; empty (``N = 0``) until :meth:`build`.
    """

    level1: torch.Tensor
    level2: torch.Tensor
    level3: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        for name, channels in zip(BUFFER_NAMES, LEVEL_CHANNELS, strict=True):
            self.register_buffer(name, torch.zeros(0, channels, 0, 0))

    @property
    def features(self) -> list[torch.Tensor]:
        return [self.level1, self.level2, self.level3]

    def __len__(self) -> int:
        return self.level1.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images the bank was built from (``(0, 0)`` when empty)."""
        return (self.level1.shape[2] * 4, self.level1.shape[3] * 4)

    @torch.no_grad()
    def build(self, encoder: ResNet18Encoder, images: torch.Tensor, batch_size: int = 8) -> MemoryBank:
        """Fill the bank with the frozen features of ``images`` (replacing what was there).

        Args:
            encoder: its frozen part computes the features (run once, without gradients).
            images: ``float [N, 3, H, W]`` good images, normalised with ImageNet statistics.
            batch_size: images per encoder pass.

        Returns:
            ``self``.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"memory images must be a float tensor [N, 3, H, W], got {shape}")
        if images.shape[0] == 0:
            raise ValueError("memory images are empty: pass at least one good image")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = self.level1.device
        encoder_device = next(encoder.parameters()).device
        was_training = encoder.training
        encoder.eval()
        levels: list[list[torch.Tensor]] = [[], [], []]
        try:
            for start in range(0, images.shape[0], batch_size):
                frozen = encoder.frozen_features(images[start : start + batch_size].to(encoder_device))
                for store, feature in zip(levels, (frozen.level1, frozen.level2, frozen.level3), strict=True):
                    store.append(feature.float().to(device))
        finally:
            encoder.train(was_training)
        for name, store in zip(BUFFER_NAMES, levels, strict=True):
            setattr(self, name, torch.cat(store).contiguous())
        return self

    def distances(self, features: Sequence[torch.Tensor], rule: str = "paper") -> torch.Tensor:
        """``float32 [B, N, 3]`` distances of the input features to every sample; see :func:`memory_distances`."""
        return memory_distances(features, self.features, rule)

    def difference(
        self, features: Sequence[torch.Tensor], rule: str = "paper"
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(DI*, indices)`` for input features of levels 1-3; see :func:`difference_information`.

        Args:
            features: 3 tensors ``float [B, C_l, h_l, w_l]`` from the frozen encoder.
            rule: ``"paper"``, ``"official"`` or ``"tootouch"``.
        """
        di_star, indices, _ = difference_information(features, self.features, rule)
        return di_star, indices

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Resize the buffers to the stored bank (another N or image size) before the copy.
        for name in BUFFER_NAMES:
            stored = state_dict.get(prefix + name)
            current = getattr(self, name)
            if isinstance(stored, torch.Tensor) and stored.shape != current.shape:
                setattr(self, name, torch.empty(stored.shape, dtype=current.dtype, device=current.device))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> MemoryBank:
        """A bank holding the buffers of ``state_dict`` (keys ``level1``, ``level2``, ``level3``)."""
        bank = cls()
        bank.load_state_dict(state_dict)
        return bank

    def extra_repr(self) -> str:
        return f"samples={len(self)}, image_size={self.image_size}"
