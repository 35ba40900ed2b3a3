"""Self-checks for notebook 06 (MSFF): the squeeze-and-excitation gate, the top-down fusion, the energy share.

Each ``exercise_N(candidate)`` builds small seeded modules and inputs itself (the package's
``CoordinateAttention`` and ``MSFF`` at small widths, every weight drawn from a seeded generator, so
the digests do not depend on torch's default initialisation), calls the learner's function and
compares with properties and with digests of the worked solution's output (solutions in
``solutions/06_msff_solutions.ipynb``). The checks never call the module that is the answer on the
same input (no ``ca.gates`` for exercise 1, no ``msff(...)`` for exercise 2).
"""

from __future__ import annotations

import numpy as np
import torch

from memseg_lite.network.attention import CoordinateAttention
from memseg_lite.network.msff import MSFF
from memseg_lite.teaching.checks.support import Sealed, assert_sealed, robust
from memseg_lite.teaching.exercises import as_tensor, assert_matches, call_candidate


def _call(candidate, *args):
    """Call the learner's function; an exception other than NotImplementedError becomes a failed check."""
    with torch.no_grad():
        return call_candidate(candidate, *args)




def seeded_weights(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every parameter and batch-norm buffer of ``module`` from a seeded generator; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif name.endswith("running_mean"):
                tensor.copy_(0.2 * torch.randn(tensor.shape, generator=generator))
            else:
                scale = 1.0 / max(1, tensor[0].numel()) ** 0.5 if tensor.ndim > 1 else 0.5
                tensor.copy_(
                    scale * torch.randn(tensor.shape, generator=generator)
                    + (1.0 if name.endswith("norm.weight") else 0.0)
                )
    return module.eval()


# --------------------------------------------------------------------------------------------------
# Exercise 1 · the squeeze-and-excitation gate from a CA block's layers
# --------------------------------------------------------------------------------------------------
def exercise_1_inputs() -> tuple[CoordinateAttention, torch.Tensor]:
    """A seeded CoordinateAttention(16) in eval mode and an input float32 [2, 16, 6, 5]."""
    ca = seeded_weights(CoordinateAttention(16, reduction=2), seed=6)
    x = torch.randn(2, 16, 6, 5, generator=torch.Generator().manual_seed(7)) + 0.5
    return ca, x


@robust
def exercise_1(candidate) -> None:
    """``candidate(ca, x)``: float [B, C, H, W] -> the SE gate float [B, C, 1, 1] in (0, 1)."""
    ca, x = exercise_1_inputs()
    gate = as_tensor(_call(candidate, ca, x.clone()), "the gate")
    assert tuple(gate.shape) == (2, 16, 1, 1), (
        f"expected shape (2, 16, 1, 1), one gate per channel, got {tuple(gate.shape)}"
    )
    assert bool(((gate > 0) & (gate < 1)).all()), "a sigmoid gate lies in (0, 1)"
    shifted = torch.roll(x, shifts=(3, -2), dims=(2, 3))  # the content moved around: a global average ignores it
    moved = as_tensor(_call(candidate, ca, shifted), "the gate")
    assert torch.allclose(moved, gate, rtol=1e-5, atol=1e-6), \
        "moving the content (a circular shift) changed your gate: pool over the whole image, not along one axis"
    assert_matches(gate, EXPECTED["exercise_1 gate"], what="the gate")


# --------------------------------------------------------------------------------------------------
# Exercise 2 · the top-down fusion with the package's blocks
# --------------------------------------------------------------------------------------------------
def exercise_2_inputs() -> tuple[MSFF, list[torch.Tensor], list[torch.Tensor]]:
    """A seeded MSFF((8, 16, 32)) in eval mode, CI_1..3 and positive maps M_1..3 for a batch of 2."""
    msff = seeded_weights(MSFF(in_channels=(8, 16, 32), reduction=4), seed=8)
    generator = torch.Generator().manual_seed(9)
    concatenated = [torch.randn(2, c, s, s, generator=generator) for c, s in ((8, 16), (16, 8), (32, 4))]
    maps = [0.1 + torch.rand(2, 1, s, s, generator=generator) for s in (16, 8, 4)]
    return msff, concatenated, maps


@robust
def exercise_2(candidate) -> None:
    """``candidate(msff, concatenated, attention_maps)`` -> the three fused, weighted levels, finest first."""
    msff, concatenated, maps = exercise_2_inputs()
    got = _call(candidate, msff, [c.clone() for c in concatenated], [m.clone() for m in maps])
    if not isinstance(got, (list, tuple)) or len(got) != 3:
        raise AssertionError("return the three levels as a list, finest first")
    for level in (2, 1, 0):  # the coarsest first: an error there explains the others
        want_shape = (2, concatenated[level].shape[1] // 2, *concatenated[level].shape[-2:])
        value = as_tensor(got[level], f"level {level + 1}")
        assert tuple(value.shape) == want_shape, (
            f"level {level + 1}: expected shape {want_shape}, got {tuple(value.shape)}"
        )
        assert_matches(value, EXPECTED[f"exercise_2 level {level + 1}"], what=f"level {level + 1}")


# --------------------------------------------------------------------------------------------------
# Exercise 3 · the share of the feature energy inside the anomaly
# --------------------------------------------------------------------------------------------------
def exercise_3_inputs() -> tuple[torch.Tensor, np.ndarray]:
    """Features float32 [6, 8, 8] and an elliptic mask float32 [32, 32] whose border cuts through cells."""
    features = torch.randn(6, 8, 8, generator=torch.Generator().manual_seed(10))
    rows, cols = np.mgrid[0:32, 0:32]
    mask = (((rows - 13.3) / 9.1) ** 2 + ((cols - 17.6) / 6.3) ** 2 <= 1).astype(np.float32)
    return features, mask


@robust
def exercise_3(candidate) -> None:
    """``candidate(features, mask)``: features float [C, h, w], mask float [H, W] in {0, 1} -> float in [0, 1]."""
    features, mask = exercise_3_inputs()

    def share(mask_values, what):
        value = _call(candidate, features.clone(), mask_values)
        try:
            return float(value)
        except (TypeError, ValueError) as error:
            raise AssertionError(f"{what}: return one number, got {type(value).__name__}") from error

    everything = share(np.ones((32, 32), np.float32), "a mask of ones")
    assert abs(everything - 1.0) < 1e-6, (
        f"a mask covering the whole image must hold all the energy (1), got {everything:.4f}"
    )
    nothing = share(np.zeros((32, 32), np.float32), "an empty mask")
    assert abs(nothing) < 1e-6, f"an empty mask holds no energy (0), got {nothing:.4f}"
    assert_sealed(share(mask, "the elliptic mask"), EXPECTED["exercise_3 share"],
                  what="the energy share inside the elliptic mask")


# Digests of the worked solutions' results on the inputs above (solutions/06_msff_solutions.ipynb:
# se_gate, fuse, energy_inside_mask), each made by summarise(solution(inputs)); a single number is stored as it is.
EXPECTED: dict = {'exercise_1 gate': {'shape': [2, 16, 1, 1],
                     'mean': 0.516694,
                     'std': 0.117336,
                     'min': 0.353114,
                     'max': 0.731771,
                     'probes': [[0, 0.679216], [8, 0.608983], [16, 0.694432], [23, 0.457153], [31, 0.453842]]},
 'exercise_2 level 1': {'shape': [2, 4, 16, 16],
                        'mean': 0.386428,
                        'std': 0.42696,
                        'min': 0.0,
                        'max': 1.70062,
                        'probes': [[0, 0.53474],
                                   [512, 0.123639],
                                   [1024, 1.06902],
                                   [1535, 0.0],
                                   [2047, 0.305651]]},
 'exercise_2 level 2': {'shape': [2, 8, 8, 8],
                        'mean': 0.320026,
                        'std': 0.263325,
                        'min': 0.0,
                        'max': 1.30906,
                        'probes': [[0, 0.308018],
                                   [256, 0.0849267],
                                   [512, 0.456269],
                                   [767, 0.137913],
                                   [1023, 0.0312619]]},
 'exercise_2 level 3': {'shape': [2, 16, 4, 4],
                        'mean': 0.111778,
                        'std': 0.188715,
                        'min': 0.0,
                        'max': 1.14046,
                        'probes': [[0, 0.0], [128, 0.167889], [256, 0.0], [383, 0.0], [511, 0.0]]},
 'exercise_3 share': Sealed(step=1e-05, digest='0c09d8a4e82d2012a6de', exact=False)}
