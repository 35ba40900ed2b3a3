"""Hidden tests for notebook 04: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch04

DATA_ROOT = "../data/demo"
TITLES = {1: 'pool size', 2: 'leave one out', 3: 'which level decides'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(closest_distance):
    """pool size."""
    ch04.exercise_1(closest_distance)


def exercise_2(leave_one_out):
    """leave one out."""
    ch04.exercise_2(leave_one_out)


def exercise_3(level_shares):
    """which level decides."""
    ch04.exercise_3(level_shares)


# The assignment track: the core piece the student writes (assignments/04_memory_pool_assignment.ipynb).
CORE_TITLES = {1: "distances to the memory (the memory choice)"}
CORE_POINTS = {1: 2}


def core_1(distances_by_hand):
    """[B, N, 3] L1 distances, element by element in float64, and the chosen sample (argmin of their sum)."""
    import torch

    generator = torch.Generator().manual_seed(41)
    shapes = ((8, 8), (12, 4), (16, 2))
    features = [torch.rand(3, c, s, s, generator=generator) for c, s in shapes]
    memory = [torch.rand(5, c, s, s, generator=generator) for c, s in shapes]
    features[0][1] = memory[0][3]  # input 1 equals sample 3 at level 1
    got = torch.as_tensor(distances_by_hand(features, memory)).double()
    assert tuple(got.shape) == (3, 5, 3), f"the distances have shape {tuple(got.shape)}, expected [B, N, 3] = (3, 5, 3)"
    expected = torch.zeros(3, 5, 3, dtype=torch.float64)
    for b in range(3):
        for i in range(5):
            for level in range(3):
                expected[b, i, level] = (memory[level][i].double() - features[level][b].double()).abs().sum()
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-3), "the per-level sums of |MI - II| are wrong"
    assert torch.equal(got.sum(-1).argmin(1), expected.sum(-1).argmin(1)), "another memory sample would be chosen"
