"""Self-checks for notebook 05 (spatial attention): bilinear upsampling, max over channels, the veto.

Each ``exercise_N(candidate)`` builds its own seeded inputs, calls the learner's function and
compares the result with properties and with digests of the worked solution's output (made by
:func:`memseg_lite.teaching.exercises.summarise`; the solutions are in
``solutions/05_spatial_attention_solutions.ipynb``). The checks never compute the answer
themselves: no call to ``spatial_attention_maps`` or ``torch.nn.functional.interpolate``.
"""

from __future__ import annotations

import numpy as np
import torch

from memseg_lite.teaching.checks.support import robust
from memseg_lite.teaching.exercises import as_tensor, assert_matches, call_candidate


# --------------------------------------------------------------------------------------------------
# Exercise 1 · bilinear upsampling by hand
# --------------------------------------------------------------------------------------------------
def exercise_1_inputs() -> dict[str, np.ndarray]:
    """The seeded random arrays the check upsamples (name -> float64 [h, w])."""
    generator = np.random.default_rng(0)
    return {f"{h}x{w}": generator.random((h, w)) for h, w in ((2, 3), (5, 7))}


@robust
def exercise_1(candidate) -> None:
    """``candidate(values)``: float [h, w] -> float [2h, 2w], bilinear, ``align_corners=False``."""
    ramp = np.asarray(call_candidate(candidate, np.array([[0.0, 1.0]])), dtype=np.float64)
    assert ramp.shape == (2, 4), f"a [1, 2] input must give a [2, 4] output, got shape {ramp.shape}"
    assert np.allclose(ramp, [[0.0, 0.25, 0.75, 1.0]] * 2), (
        f"upsampling the row [0, 1] must give [0, 0.25, 0.75, 1] (section 3), got {ramp[0].round(4).tolist()}: "
        "check the sample positions (i + 0.5) / 2 - 0.5 and the clamping at the border")
    single = np.asarray(call_candidate(candidate, np.array([[3.5]])), dtype=np.float64)
    assert single.shape == (2, 2) and np.allclose(single, 3.5), "a [1, 1] input must give a [2, 2] copy of its value"
    constant = np.asarray(call_candidate(candidate, np.full((3, 4), 2.0)), dtype=np.float64)
    assert constant.shape == (6, 8), f"a [3, 4] input must give shape (6, 8), got {constant.shape}"
    assert np.allclose(constant, 2.0), "a constant image must stay constant (the weights of a blend sum to 1)"
    for name, values in exercise_1_inputs().items():
        result = call_candidate(candidate, values.copy())
        assert_matches(result, EXPECTED[f"exercise_1 {name}"], what=f"the upsampled random {name} array",
                       rtol=1e-5, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# Exercises 2 and 3 · the cascade with max over channels; a coarse level vetoes
# --------------------------------------------------------------------------------------------------
def random_di_star(seed: int, sizes=((6, 8), (5, 4), (4, 2)), batch: int = 2) -> list[torch.Tensor]:
    """Seeded stand-ins for DI*_1..3: float32 [batch, C_l, s_l, s_l], values in [0, 1)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, channels, size, size, generator=generator) for channels, size in sizes]


def _check_maps(maps, di_star, expected_prefix, case):
    if not isinstance(maps, (list, tuple)) or len(maps) != 3:
        raise AssertionError(f"{case}: return the list [M_1, M_2, M_3]")
    for level in (2, 1, 0):  # M_3 first: an error there explains the others
        want_shape = (di_star[level].shape[0], 1, *di_star[level].shape[-2:])
        got = as_tensor(maps[level], f"M_{level + 1}")
        assert tuple(got.shape) == want_shape, (
            f"{case}: M_{level + 1} must have shape {want_shape}, got {tuple(got.shape)}"
        )
        assert_matches(got, EXPECTED[f"{expected_prefix} M_{level + 1}"], what=f"{case}: M_{level + 1}")


@robust
def exercise_2(candidate) -> None:
    """``candidate(di_star)`` -> [M_1, M_2, M_3] with the maximum over channels at every level."""
    di_star = random_di_star(1)
    maps = call_candidate(candidate, [d.clone() for d in di_star])
    _check_maps(maps, di_star, "exercise_2", "random DI*")
    # Property: a larger difference anywhere can only raise the maps (max and product are monotone).
    raised = [d.clone() for d in di_star]
    raised[0][:, 0] += 1.0
    bigger = call_candidate(candidate, raised)
    assert bool((as_tensor(bigger[0], "M_1") >= as_tensor(maps[0], "M_1") - 1e-6).all()), \
        "raising DI*_1 must not lower M_1"


@robust
def exercise_3(candidate) -> None:
    """``candidate(di_star)`` -> [M_1, M_2, M_3] after zeroing the top half of DI*_3."""
    di_star = random_di_star(3, sizes=((4, 16), (4, 8), (4, 4)))
    untouched = [d.clone() for d in di_star]
    maps = call_candidate(candidate, di_star)
    for d, original in zip(di_star, untouched, strict=True):
        assert torch.equal(d, original), "do not modify the input in place: clone DI*_3 before zeroing it"
    _check_maps(maps, di_star, "exercise_3", "vetoed DI*")
    m3, m1 = as_tensor(maps[2], "M_3"), as_tensor(maps[0], "M_1")
    assert float(m3[..., :2, :].abs().max()) == 0.0, "M_3 must be zero in the top half"
    assert float(m1[..., :4, :].abs().max()) == 0.0, "M_1 must be exactly zero well inside the top half"


# Digests of the worked solutions' results on the inputs above (solutions/05_spatial_attention_solutions.ipynb:
# upsample2x, attention_with_max, maps_with_top_half_vetoed), each made by summarise(solution(inputs)).
EXPECTED: dict = {'exercise_1 2x3': {'shape': [4, 6],
                    'mean': 0.448379,
                    'std': 0.256289,
                    'min': 0.0165276,
                    'max': 0.912756,
                    'probes': [[0, 0.636962], [6, 0.481853], [12, 0.171636], [17, 0.69481], [23, 0.912756]]},
 'exercise_1 5x7': {'shape': [10, 14],
                    'mean': 0.552815,
                    'std': 0.191278,
                    'min': 0.0296361,
                    'max': 0.92828,
                    'probes': [[0, 0.606636], [35, 0.813379], [70, 0.266449], [104, 0.706356], [139, 0.57153]]},
 'exercise_2 M_1': {'shape': [2, 1, 8, 8],
                    'mean': 0.583973,
                    'std': 0.146246,
                    'min': 0.154098,
                    'max': 0.896114,
                    'probes': [[0, 0.464226], [32, 0.499339], [64, 0.433826], [95, 0.677563], [127, 0.355944]]},
 'exercise_2 M_2': {'shape': [2, 1, 4, 4],
                    'mean': 0.68812,
                    'std': 0.13604,
                    'min': 0.411184,
                    'max': 0.942984,
                    'probes': [[0, 0.588843], [8, 0.573458], [16, 0.778776], [23, 0.744499], [31, 0.444597]]},
 'exercise_2 M_3': {'shape': [2, 1, 2, 2],
                    'mean': 0.830721,
                    'std': 0.1522,
                    'min': 0.522831,
                    'max': 0.999637,
                    'probes': [[0, 0.686829], [2, 0.838501], [4, 0.999637], [5, 0.986318], [7, 0.522831]]},
 'exercise_3 M_1': {'shape': [2, 1, 16, 16],
                    'mean': 0.078083,
                    'std': 0.0778092,
                    'min': 0.0,
                    'max': 0.308989,
                    'probes': [[0, 0.0], [128, 0.213564], [256, 0.0], [383, 0.0569323], [511, 0.156518]]},
 'exercise_3 M_2': {'shape': [2, 1, 8, 8],
                    'mean': 0.154541,
                    'std': 0.151295,
                    'min': 0.0,
                    'max': 0.499334,
                    'probes': [[0, 0.0], [32, 0.469792], [64, 0.0], [95, 0.0504888], [127, 0.428275]]},
 'exercise_3 M_3': {'shape': [2, 1, 4, 4],
                    'mean': 0.301452,
                    'std': 0.313412,
                    'min': 0.0,
                    'max': 0.862808,
                    'probes': [[0, 0.0], [8, 0.862808], [16, 0.0], [23, 0.0], [31, 0.706198]]}}
