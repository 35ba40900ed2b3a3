"""Self-checks for notebook 07 (decoder and losses): the alpha-balanced focal loss, the gamma for a
given loss share, the top-k image score.

Each ``exercise_N(candidate)`` builds its own seeded inputs, calls the learner's function and
compares with properties and with stored values of the worked solution's output (made by
:func:`memseg_lite.teaching.exercises.summarise`; the solutions are in
``solutions/07_decoder_and_losses_solutions.ipynb``). No check calls the package function that is
the answer (``focal_loss(..., alpha=...)``, ``MemSeg.image_score``), and exercise 3 fails a function that uses
``torch.topk`` or the package's ``top_k_mean`` (``MemSeg.image_score``), which the exercise asks to do
without; exercise 2 measures the share
that the learner's gamma reaches with ``focal_loss`` itself, which is the definition, not the
solution.
"""

from __future__ import annotations

import math

import torch

from memseg_lite.network.losses import focal_loss
from memseg_lite.network.model import top_k_mean
from memseg_lite.teaching.checks.support import Sealed, assert_sealed, call_avoiding, robust
from memseg_lite.teaching.exercises import assert_matches, call_candidate


def _number(value, what) -> float:
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise AssertionError(f"{what} must be one number (the mean over pixels), got shape {tuple(value.shape)}")
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise AssertionError(f"{what} must be a number, got {type(value).__name__}") from error


# --------------------------------------------------------------------------------------------------
# Exercise 1 · the alpha-balanced focal loss
# --------------------------------------------------------------------------------------------------
CASES_1 = ((0.0, 0.5), (2.0, 0.25), (4.0, 0.9))  # (gamma, alpha)


def exercise_1_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits float32 [2, 2, 16, 16] (confident and wrong ones included) and a 0/1 target [2, 16, 16]."""
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(2, 2, 16, 16, generator=generator)
    target = (torch.rand(2, 16, 16, generator=generator) < 0.1).float()
    return logits, target


@robust
def exercise_1(candidate) -> None:
    """``candidate(logits, target, gamma, alpha)`` -> the mean alpha-balanced focal loss (a scalar)."""
    logits, target = exercise_1_inputs()
    for gamma, alpha in CASES_1:
        value = call_candidate(candidate, logits.clone(), target.clone(), gamma, alpha)
        what = f"the loss at gamma {gamma}, alpha {alpha}"
        assert_sealed(_number(value, what), EXPECTED[f"exercise_1 gamma {gamma} alpha {alpha}"], what=what)
    perfect = torch.stack([-20 * (2 * target - 1), 20 * (2 * target - 1)], dim=1)  # every pixel right, p_t ~ 1
    assert abs(_number(call_candidate(candidate, perfect, target, 2.0, 0.25), "the loss")) < 1e-6, \
        "a confident, correct prediction must have (almost) zero loss"


# --------------------------------------------------------------------------------------------------
# Exercise 2 · the smallest gamma for a share of the loss
# --------------------------------------------------------------------------------------------------
CASES_2 = ((0.02, 0.3, 0.9, 0.9), (0.2, 0.4, 0.8, 0.95), (0.001, 0.1, 0.99, 0.99), (0.5, 0.3, 0.9, 0.5))


def logits_for(probability_anomalous: torch.Tensor) -> torch.Tensor:
    """Logits [B, 2, ...] whose softmax gives the anomalous probability [B, ...]."""
    p = probability_anomalous.clamp(1e-6, 1 - 1e-6)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)


def focal_share(fraction: float, p_hard: float, p_easy: float, gamma: float, pixels: int = 1000) -> float:
    """The anomalous share of the summed focal loss, measured with ``focal_loss`` on a 1 x pixels image."""
    target = torch.zeros(1, 1, pixels)
    target[..., : round(fraction * pixels)] = 1.0
    logits = logits_for(torch.where(target > 0, torch.tensor(p_hard), torch.tensor(1 - p_easy)))
    per_pixel = focal_loss(logits, target, gamma=gamma, reduction="none").double()
    return float(per_pixel[target > 0].sum() / per_pixel.sum())


@robust
def exercise_2(candidate) -> None:
    """``candidate(fraction, p_hard, p_easy, share)`` -> the smallest gamma >= 0 reaching ``share``."""
    for fraction, p_hard, p_easy, share in CASES_2:
        case = f"fraction {fraction}, p_hard {p_hard}, p_easy {p_easy}, share {share}"
        gamma = _number(call_candidate(candidate, fraction, p_hard, p_easy, share), f"{case}: gamma")
        assert math.isfinite(gamma) and gamma >= 0, f"{case}: gamma must be a finite number >= 0, got {gamma}"
        reached = focal_share(fraction, p_hard, p_easy, gamma)
        assert reached >= share - 1e-4, f"{case}: gamma {gamma:.3f} gives the anomalous pixels only {reached:.4f}"
        if gamma > 0:
            smaller = focal_share(fraction, p_hard, p_easy, max(gamma - 0.01, 0.0))
            assert smaller < share, (
                f"{case}: gamma {gamma:.3f} is not the smallest: {gamma - 0.01:.3f} gives {smaller:.4f}"
            )
        assert_sealed(gamma, EXPECTED[f"exercise_2 {case}"], what=f"{case}: gamma")


# --------------------------------------------------------------------------------------------------
# Exercise 3 · the top-k image score
# --------------------------------------------------------------------------------------------------
def exercise_3_inputs() -> dict[str, torch.Tensor]:
    """Seeded maps float32 [3, 12, 20]: plain random ones and ones full of ties (one decimal)."""
    generator = torch.Generator().manual_seed(2)
    plain = torch.rand(3, 12, 20, generator=generator)
    return {"random maps": plain, "maps with ties": (torch.rand(3, 12, 20, generator=generator) * 10).round() / 10}


@robust
def exercise_3(candidate) -> None:
    """``candidate(maps, k)``: maps float [B, H, W] -> float [B], the mean of the k largest values per map."""
    for name, maps in exercise_3_inputs().items():
        previous = None
        for k in (1, 10, 100, 240):
            value = call_avoiding(candidate, maps.clone(), k, functions=(top_k_mean,), c_names=("topk",),
                                  why="sort each map's values instead (torch.sort), as the exercise asks")
            if not isinstance(value, torch.Tensor):
                raise AssertionError(f"{name}, k = {k}: return a torch tensor [B], got {type(value).__name__}")
            assert tuple(value.shape) == (3,), (
                f"{name}, k = {k}: expected one score per map, shape (3,), got {tuple(value.shape)}"
            )
            if k == 240:  # all the values: the plain mean of each map
                torch.testing.assert_close(
                    value.double(),
                    maps.double().mean(dim=(1, 2)),
                    rtol=1e-5,
                    atol=1e-6,
                    msg=lambda message, name=name: f"{name}: with k = H * W the score is the map's mean",
                )
            else:
                assert_matches(value, EXPECTED[f"exercise_3 {name} k {k}"], what=f"{name}, k = {k}")
            if previous is not None:
                assert bool((value <= previous + 1e-6).all()), (
                    f"{name}: a larger k can only lower the mean of the top k"
                )
            previous = value


# Values of the worked solutions on the inputs above (solutions/07_decoder_and_losses_solutions.ipynb:
# alpha_focal_loss, gamma_for_share, top_k_score), each made by summarise(solution(inputs)); single numbers as they are.
EXPECTED: dict = {
    "exercise_1 gamma 0.0 alpha 0.5": Sealed(step=0.0001, digest="e9bd3c9596c1025d0994", exact=False),
    "exercise_1 gamma 2.0 alpha 0.25": Sealed(step=0.0001, digest="2b19f75bf2dfedf4cbc9", exact=False),
    "exercise_1 gamma 4.0 alpha 0.9": Sealed(step=1e-05, digest="c345eef6162a3ec7dd1d", exact=False),
    "exercise_2 fraction 0.02, p_hard 0.3, p_easy 0.9, share 0.9": Sealed(
        step=0.0001, digest="507b120c1fc4c08aaf10", exact=False
    ),
    "exercise_2 fraction 0.2, p_hard 0.4, p_easy 0.8, share 0.95": Sealed(
        step=0.0001, digest="43019f2568941460d5cc", exact=False
    ),
    "exercise_2 fraction 0.001, p_hard 0.1, p_easy 0.99, share 0.99": Sealed(
        step=0.0001, digest="28003810b09393af6633", exact=False
    ),
    "exercise_2 fraction 0.5, p_hard 0.3, p_easy 0.9, share 0.5": Sealed(
        step=1e-06, digest="0f85323ef7af744f0151", exact=False
    ),
    "exercise_3 random maps k 1": {
        "shape": [3],
        "mean": 0.998135,
        "std": 0.00130814,
        "min": 0.996326,
        "max": 0.999376,
        "probes": [[0, 0.996326], [1, 0.999376], [2, 0.998704]],
    },
    "exercise_3 random maps k 10": {
        "shape": [3],
        "mean": 0.977492,
        "std": 0.00511061,
        "min": 0.970581,
        "max": 0.982779,
        "probes": [[0, 0.970581], [1, 0.979116], [2, 0.982779]],
    },
    "exercise_3 random maps k 100": {
        "shape": [3],
        "mean": 0.778831,
        "std": 0.0192042,
        "min": 0.758916,
        "max": 0.804781,
        "probes": [[0, 0.758916], [1, 0.772797], [2, 0.804781]],
    },
    "exercise_3 maps with ties k 1": {
        "shape": [3],
        "mean": 1.0,
        "std": 0.0,
        "min": 1.0,
        "max": 1.0,
        "probes": [[0, 1.0], [1, 1.0], [2, 1.0]],
    },
    "exercise_3 maps with ties k 10": {
        "shape": [3],
        "mean": 0.993333,
        "std": 0.00942808,
        "min": 0.98,
        "max": 1.0,
        "probes": [[0, 0.98], [1, 1.0], [2, 1.0]],
    },
    "exercise_3 maps with ties k 100": {
        "shape": [3],
        "mean": 0.784333,
        "std": 0.0114698,
        "min": 0.771,
        "max": 0.799,
        "probes": [[0, 0.771], [1, 0.783], [2, 0.799]],
    },
}
