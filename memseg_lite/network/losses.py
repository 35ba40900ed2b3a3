"""Training losses: focal loss and L1 loss on the 2-class output, and their weighted sum.

Defects cover a few percent of the pixels at most, so plain cross-entropy is dominated by the
many easy background pixels. The focal loss (Lin et al., ICCV 2017) scales each pixel's
cross-entropy by ``(1 - p_t)^gamma``, where ``p_t`` is the predicted probability of the true
class: pixels that are already right (``p_t`` near 1) hardly count, the hard ones keep their
weight. With ``gamma = 0`` it is cross-entropy. The authors' code and the TooTouch
re-implementation use ``gamma = 4``.

The L1 loss ``|p_anomalous - mask|`` is bounded and pushes the probabilities themselves to 0
and 1, which gives sharp maps. The paper trains on L1 + focal; ``0.6 * L1 + 0.4 * focal`` are
TooTouch's weights, the defaults here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("mean", "sum", "none")


def _check_inputs(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Validate shapes; return the target as ``[B, H, W]``."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4 or logits.shape[1] != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be [B, 2, H, W] (normal, anomalous), got {shape}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor [B, H, W], got {type(target).__name__}")
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"target must be [B, H, W] = {[logits.shape[0], *logits.shape[2:]]} to match the logits, got "
            f"{list(target.shape)}"
        )
    return target


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 4.0,
    alpha: float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss for 2-class softmax logits.

    ``FL = -alpha_t * (1 - p_t)^gamma * log(p_t)`` per pixel, with ``p_t`` the softmax probability
    of the true class. Computed from ``log_softmax``; for two classes ``1 - p_t`` is exactly the
    probability of the *other* class, ``exp(log p_other)``, which avoids the cancellation of
    ``1 - p_t`` when ``p_t`` is close to 1.

    Args:
        logits: ``float [B, 2, H, W]`` (channel 1 = anomalous).
        target: ``[B, H, W]`` (or ``[B, 1, H, W]``) with values 0 and 1 (any dtype).
        gamma: focusing exponent (>= 0); 0 gives cross-entropy.
        alpha: weight of the anomalous class in [0, 1] (the normal class gets ``1 - alpha``);
            ``None``: no class weighting.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[B, H, W]``).
    """
    target = _check_inputs(logits, target)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be None or in [0, 1], got {alpha}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    labels = target.long()
    if not torch.equal(labels.to(target.dtype), target) or bool(((labels != 0) & (labels != 1)).any()):
        raise ValueError("target must hold only 0 and 1 (binary masks); threshold soft masks at 0.5 first")
    log_probs = F.log_softmax(logits.float(), dim=1)
    log_p_true = log_probs.gather(1, labels[:, None])[:, 0]
    log_p_other = log_probs.gather(1, (1 - labels)[:, None])[:, 0]
    loss = -torch.exp(gamma * log_p_other) * log_p_true
    if alpha is not None:
        loss = loss * torch.where(labels == 1, alpha, 1.0 - alpha)
    return _reduce(loss, reduction)


def l1_loss(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``|softmax(logits)[:, 1] - target|`` per pixel.

    Args:
        logits: ``float [B, 2, H, W]``.
        target: ``[B, H, W]`` (or ``[B, 1, H, W]``), values in [0, 1].
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    target = _check_inputs(logits, target)
    probability = torch.softmax(logits.float(), dim=1)[:, 1]
    return _reduce((probability - target.float()).abs(), reduction)


class LossParts(NamedTuple):
    """The total loss and its two parts (scalar tensors; ``total`` carries the gradient)."""

    total: torch.Tensor
    l1: torch.Tensor
    focal: torch.Tensor


class MemSegLoss(nn.Module):
    """``l1_weight * L1 + focal_weight * focal``; defaults: TooTouch's 0.6 / 0.4 with gamma 4.

    ``forward(logits, target)`` returns :class:`LossParts` (``total``, ``l1``, ``focal``;
    ``parts._asdict()`` gives a dict for logging).
    """

    def __init__(
        self, l1_weight: float = 0.6, focal_weight: float = 0.4, gamma: float = 4.0, alpha: float | None = None
    ):
        super().__init__()
        if l1_weight < 0 or focal_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got l1_weight={l1_weight}, focal_weight={focal_weight}")
        self.l1_weight = l1_weight
        self.focal_weight = focal_weight
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> LossParts:
        """``logits`` ``float [B, 2, H, W]``, ``target`` ``[B, H, W]`` binary mask."""
        l1 = l1_loss(logits, target)
        focal = focal_loss(logits, target, gamma=self.gamma, alpha=self.alpha)
        return LossParts(self.l1_weight * l1 + self.focal_weight * focal, l1, focal)

    def extra_repr(self) -> str:
        return f"l1_weight={self.l1_weight}, focal_weight={self.focal_weight}, gamma={self.gamma}, alpha={self.alpha}"
