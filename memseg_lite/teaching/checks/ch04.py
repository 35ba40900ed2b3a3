"""Self-checks for notebook 04 (memory pool): pool size, leave one out, which level decides.

The checks build small feature tensors of their own (three levels of different sizes) whose
answers are known by construction: memory samples that are the input plus a known constant.
Worked solutions: ``solutions/04_memory_pool_solutions.ipynb``.
"""

from __future__ import annotations

import itertools

import torch

from memseg_lite.teaching.checks.support import robust
from memseg_lite.teaching.exercises import assert_matches, call_candidate

LEVEL_SHAPES = ((4, 8, 8), (8, 4, 4), (16, 2, 2))  # 256, 128 and 64 elements: levels weigh differently

# summarise(torch.stack([closest_distance(features, memory, n) for n in 1..6], dim=1)) and
# summarise(level_shares(features, memory, rule)) on _random_features(), from the worked solutions
# in solutions/04_memory_pool_solutions.ipynb.
EXPECTED = {
    "closest": {"shape": [3, 6], "mean": 438.183, "std": 147.043, "min": 112.0, "max": 556.406,
                "probes": [[0, 556.406], [4, 112.0], [8, 498.184], [13, 491.456], [17, 491.456]]},
    "shares paper": {"shape": [3, 3], "mean": 0.333333, "std": 0.177541, "min": 0.134191, "max": 0.575063,
                     "probes": [[0, 0.571429], [2, 0.142857], [4, 0.311331], [6, 0.575063], [8, 0.135811]]},
    "shares tootouch": {"shape": [3, 3], "mean": 0.333333, "std": 0.0278608, "min": 0.283849, "max": 0.395509,
                        "probes": [[0, 0.333333], [2, 0.333333], [4, 0.395509], [6, 0.349488], [8, 0.317542]]},
}


def _random(count: int, generator: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(count, *shape, generator=generator) for shape in LEVEL_SHAPES]


def _random_features() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(features 3 x [3, C, h, w], memory 3 x [6, C, h, w]), seeded."""
    generator = torch.Generator().manual_seed(4)
    memory = _random(6, generator)
    features = _random(3, generator)
    features = [f.clone() for f in features]
    for level in range(3):  # input 0 is memory sample 3 shifted by 0.25 everywhere
        features[level][0] = memory[level][3] + 0.25
    return features, memory


def _shape(value, expected: tuple, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{what} must be a torch tensor, got {type(value).__name__}")
    if tuple(value.shape) != expected:
        raise AssertionError(f"{what} has shape {tuple(value.shape)}, expected {expected}")
    return value


@robust
def exercise_1(candidate) -> None:
    """``candidate(features, memory, n)``: float [B], the paper distance to the closest of the first n samples."""
    features, memory = _random_features()
    values = [
        _shape(call_candidate(candidate, features, memory, n), (3,), f"closest_distance(..., n={n})").detach().double()
        for n in range(1, 7)
    ]
    shifted = 0.25 * sum(torch.Size(shape).numel() for shape in LEVEL_SHAPES)  # input 0 vs memory sample 3
    for n, value in enumerate(values, start=1):
        if n >= 4 and abs(float(value[0]) - shifted) > 1e-3:
            side = "too large" if float(value[0]) > shifted else "too small"
            raise AssertionError(
                f"n = {n}: input 0 is memory sample 3 plus 0.25 in every element, so its distance is "
                f"0.25 x (number of elements of the three levels); yours, {float(value[0]):.4g}, is {side}"
            )
    if not all(bool((later <= earlier + 1e-6).all()) for earlier, later in itertools.pairwise(values)):
        raise AssertionError("a larger pool can only offer a closer sample: the distance must not grow with n")
    assert_matches(
        torch.stack(values, dim=1),
        EXPECTED["closest"],
        what="the distances for n = 1..6 on random features",
        rtol=1e-4,
        atol=1e-3,
    )


def _rule_telling_memory() -> tuple[list[torch.Tensor], list[int]]:
    """Memory (3 levels, 4 samples) whose closest other samples differ between the paper rule and others.

    Sample 0 is a base x; sample 1 is x + 0.1 everywhere (sum of |.| 44.8, sum of squares 4.48);
    sample 2 is x plus 30 in one element of level 1 (sum of |.| 30, squares 900); sample 3 is x plus
    0.3 on levels 2 and 3 only (sum of |.| 57.6, 0 on level 1). For sample 0 the paper rule picks
    2, squared differences (summed or averaged per level) pick 1, level 1 alone picks 3; the other
    samples' closest is 0 under the paper rule.
    """
    base = _random(1, torch.Generator().manual_seed(5))
    samples = [[level.clone() for level in base] for _ in range(4)]
    for level in range(3):
        samples[1][level] += 0.1
    samples[2][0].view(-1)[17] += 30.0
    samples[3][1] += 0.3
    samples[3][2] += 0.3
    return [torch.cat([sample[level] for sample in samples]) for level in range(3)], [2, 0, 0, 0]


@robust
def exercise_2(candidate) -> None:
    """``candidate(memory)``: int [N], the closest *other* memory sample of each sample (paper rule)."""
    generator = torch.Generator().manual_seed(2)
    a, b = _random(1, generator), _random(1, generator)
    offsets = [(a, 0.0), (a, 0.1), (b, 0.0), (b, 0.2), (b, 0.3), (b, -0.5)]
    shifted = [torch.cat([base[level] + shift for base, shift in offsets]) for level in range(3)]
    cases = {
        "samples that are two bases plus constants": (shifted, [1, 0, 3, 4, 3, 2]),  # the nearest shift, same base
        "samples that tell the rules apart": _rule_telling_memory(),
    }
    for case, (memory, expected) in cases.items():
        result = _shape(call_candidate(candidate, [level.clone() for level in memory]), (len(expected),),
                        f"{case}: leave_one_out(memory)")
        if result.dtype.is_floating_point:
            raise AssertionError(f"return integer indices (int64), got dtype {result.dtype}")
        got = [int(i) for i in result]
        for i, (want, have) in enumerate(zip(expected, got, strict=True)):
            if have == i:
                raise AssertionError(f"{case}: sample {i} is its own neighbour: leave it out of its own comparison")
            if have != want:
                raise AssertionError(f"{case}: sample {i}: got {have}, which is not its closest other sample under "
                                     "the paper rule (the sum of |differences| over all elements of all three levels)")


@robust
def exercise_3(candidate) -> None:
    """``candidate(features, memory, rule)``: float [B, 3], each level's share of the chosen sample's distance."""
    generator = torch.Generator().manual_seed(3)
    x = _random(1, generator)
    # memory sample k = x + c_k,l; input 0 = x, input 1 = x + 5 (far from every sample)
    shifts = [(0.1, 0.4, 0.8), (1.0, 1.0, 1.0), (0.3, 0.3, 0.3)]
    memory = [torch.cat([x[level] + shift[level] for shift in shifts]) for level in range(3)]
    features = [torch.cat([x[level], x[level] + 5.0]) for level in range(3)]
    # paper: input 0 picks sample 0 (sums 0.1*256 + 0.4*128 + 0.8*64 = 128 < 134.4 < 448), shares 0.2, 0.4, 0.4;
    # input 1 picks sample 1, shares 4/7, 2/7, 1/7. tootouch (means of squares): input 0 picks sample 2
    # (0.27 < 0.81 < 3), input 1 picks sample 1; both shares 1/3 each.
    by_construction = {
        "paper": torch.tensor([[0.2, 0.4, 0.4], [4 / 7, 2 / 7, 1 / 7]], dtype=torch.float64),
        "tootouch": torch.full((2, 3), 1 / 3, dtype=torch.float64),
    }
    random_features, random_memory = _random_features()
    for rule, expected in by_construction.items():
        shares = (
            _shape(call_candidate(candidate, features, memory, rule), (2, 3), f"level_shares(..., {rule!r})")
            .detach()
            .double()
        )
        if not torch.allclose(shares.sum(dim=1), torch.ones(2, dtype=torch.float64), atol=1e-5):
            raise AssertionError(f"rule {rule!r}: each row must sum to 1")
        if not torch.allclose(shares, expected, atol=1e-4):
            raise AssertionError(f"rule {rule!r}: on memory samples that are the input plus known constants the shares "
                                 f"are {[[round(v, 3) for v in row] for row in shares.tolist()]}, which is not right "
                                 "(which sample does this rule choose, and how does it reduce each level?)")
        shares = _shape(
            call_candidate(candidate, random_features, random_memory, rule), (3, 3), f"level_shares(..., {rule!r})"
        )
        assert_matches(shares.detach().double(), EXPECTED[f"shares {rule}"], what=f"rule {rule!r} on random features",
                       rtol=1e-4, atol=1e-5)
