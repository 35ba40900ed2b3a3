"""Hidden tests for notebook 07: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch07

DATA_ROOT = "../data/demo"
TITLES = {1: 'alpha-balanced focal loss', 2: 'how much focus is enough', 3: 'top-k image score'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(alpha_focal_loss):
    """alpha-balanced focal loss."""
    ch07.exercise_1(alpha_focal_loss)


def exercise_2(gamma_for_share):
    """how much focus is enough."""
    ch07.exercise_2(gamma_for_share)


def exercise_3(top_k_score):
    """top-k image score."""
    ch07.exercise_3(top_k_score)


# The assignment track: the core piece the student writes (assignments/07_decoder_and_losses_assignment.ipynb).
CORE_TITLES = {1: "focal loss"}
CORE_POINTS = {1: 2}


def core_1(focal_loss_by_hand):
    """The mean focal loss against the per-pixel formula from probabilities, for gamma 0, 2 and 4."""
    import math

    import torch

    generator = torch.Generator().manual_seed(71)
    logits = 4 * torch.randn(2, 2, 5, 6, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 5, 6), generator=generator)
    for gamma in (0.0, 2.0, 4.0):
        total = 0.0
        for b, y, x in torch.cartesian_prod(torch.arange(2), torch.arange(5), torch.arange(6)).tolist():
            scores = [math.exp(float(logits[b, k, y, x])) for k in (0, 1)]
            p_true = scores[int(target[b, y, x])] / sum(scores)
            total += -((1 - p_true) ** gamma) * math.log(p_true)
        expected = total / 60
        got = float(focal_loss_by_hand(logits, target, gamma))
        assert math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9), \
            f"gamma {gamma}: {got:.6g}, expected {expected:.6g}"
