"""Self-checks for notebook 08 (training): the peak of the schedule, who pays the focal loss, exact resume.

``exercise_1`` and ``exercise_2`` build their own inputs and compare with stored values of the
worked solution (made by :func:`memseg_lite.teaching.exercises.summarise`; solutions in
``solutions/08_training_solutions.ipynb``) and with properties. ``exercise_3`` needs a data
folder (the notebook's ``data_root``); it checks the learner's two loss lists against each other
*and* against a third, uninterrupted reference run that the check trains itself in its own folder,
so made-up lists (``[0] * 4`` twice) fail, and so does one run returned twice (two run folders are
required). What it cannot see is *how* the second folder was trained: two uninterrupted runs give
the same losses as a correct stop-and-resume, so that mistake passes (the logs carry no trace of
the interruption).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch

from memseg_lite.teaching.exercises import assert_matches, call_candidate
from memseg_lite.training.config import TrainConfig
from memseg_lite.training.trainer import read_log, train, warmup_cosine


def _number(value, what) -> float:
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise AssertionError(f"{what} must be one number, got a tensor of shape {tuple(value.shape)}")
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise AssertionError(f"{what} must be a number, got {type(value).__name__}") from error


# --------------------------------------------------------------------------------------------------
# Exercise 1 · the peak of the schedule
# --------------------------------------------------------------------------------------------------
CASES_1 = ((600, 0.1), (5000, 0.1), (130, 0.25), (10, 0.0))  # (total_steps, warmup_fraction)


def exercise_1(candidate) -> None:
    """``candidate(total_steps, warmup_fraction)`` -> (first step with factor 1, factor at the last step)."""
    for total, fraction in CASES_1:
        case = f"total_steps {total}, warmup_fraction {fraction}"
        answer = call_candidate(candidate, total, fraction)
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            raise AssertionError(f"{case}: return a pair (first peak step, last factor)")
        first, last = answer
        first_number = _number(first, f"{case}: the peak step")
        assert first_number == int(first_number) and 0 <= first_number < total, \
            f"{case}: the peak step must be a whole step in 0..{total - 1}, got {first}"
        first = int(first_number)
        # Property, with the schedule itself (not the answer): factor 1 at `first`, below 1 before it.
        assert warmup_cosine(first, total, fraction) == 1.0, f"{case}: the factor at step {first} is not 1"
        assert first == 0 or warmup_cosine(first - 1, total, fraction) < 1.0, \
            f"{case}: the factor reaches 1 before step {first}"
        assert_matches(_number(last, f"{case}: the last factor"), EXPECTED[f"exercise_1 {case} last"],
                       what=f"{case}: the factor at the last step", rtol=1e-5, atol=1e-12)
        assert first == EXPECTED[f"exercise_1 {case} first"], f"{case}: {first} is not the first step with factor 1"


# --------------------------------------------------------------------------------------------------
# Exercise 2 · who pays the focal loss
# --------------------------------------------------------------------------------------------------
def exercise_2_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits float32 [2, 2, 24, 24] that roughly follow a square defect, and its 0/1 mask [2, 24, 24]."""
    generator = torch.Generator().manual_seed(4)
    target = torch.zeros(2, 24, 24)
    target[0, 5:11, 7:15] = 1.0
    target[1, 14:17, 2:6] = 1.0
    anomalous = 2.0 * target - 1.5 + 1.2 * torch.randn(2, 24, 24, generator=generator)
    logits = torch.stack([torch.zeros_like(anomalous), anomalous], dim=1)
    return logits, target


def exercise_2(candidate) -> None:
    """``candidate(logits, target, gamma=4.0)`` -> the anomalous pixels' share of the summed focal loss."""
    logits, target = exercise_2_inputs()
    for name, mask in (("the square defects", target), ("the inverted masks", 1 - target)):
        share = _number(call_candidate(candidate, logits.clone(), mask.clone()), f"{name}: the share")
        assert 0.0 <= share <= 1.0, f"{name}: a share lies in [0, 1], got {share:.4f}"
        assert_matches(share, EXPECTED[f"exercise_2 {name}"], what=f"{name}: the share")
    empty = _number(call_candidate(candidate, logits.clone(), torch.zeros_like(target)), "an empty mask: the share")
    assert abs(empty) < 1e-9, f"with no anomalous pixel their share is 0, got {empty:.4f}"


# --------------------------------------------------------------------------------------------------
# Exercise 3 · resume exactly
# --------------------------------------------------------------------------------------------------
def tiny_settings(data_root, category: str = "mesh", texture_root=None, seed: int = 0) -> dict:
    """TrainConfig arguments of a 4-step CPU run at 64 px (a few seconds), without ``out_dir``."""
    settings = {"data_root": str(data_root), "category": category, "image_size": 64, "steps": 4, "batch_size": 2,
                "memory_size": 4, "val_images": 2, "val_every": 4, "checkpoint_every": 4, "backbone_weights": "none",
                "device": "cpu", "seed": seed}
    if texture_root is not None:
        settings["texture_root"] = str(texture_root)
    return settings


def _losses(values, what) -> list[float]:
    try:
        numbers = [float(value) for value in values]
    except (TypeError, ValueError) as error:
        raise AssertionError(f"{what}: return a list of per-step losses (numbers)") from error
    return numbers


def exercise_3(candidate, data_root, category: str = "mesh", texture_root=None) -> None:
    """``candidate(tmp_root, settings)`` -> (losses of the uninterrupted run, losses of the resumed run).

    ``settings`` are the TrainConfig arguments of :func:`tiny_settings` (all but ``out_dir``); the
    candidate trains under ``tmp_root``. Three tiny runs in all (the check adds a reference run).
    """
    settings = tiny_settings(data_root, category, texture_root)
    with tempfile.TemporaryDirectory(prefix="memseg_check08_") as folder:
        root = Path(folder)
        (root / "yours").mkdir()
        answer = call_candidate(candidate, root / "yours", dict(settings))
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            raise AssertionError("return a pair (losses of the whole run, losses of the interrupted-and-resumed run)")
        whole, split = _losses(answer[0], "the whole run"), _losses(answer[1], "the resumed run")
        assert len(whole) == 4 and len(split) == 4, \
            f"one loss per step: 4 each, got {len(whole)} and {len(split)} (did the second session resume?)"
        assert all(math.isfinite(v) and v > 0 for v in whole + split), \
            "losses must be positive finite numbers read from the training logs"
        runs = sorted(path.parent for path in (root / "yours").rglob("log.jsonl"))
        assert len(runs) >= 2, f"train the two runs in two folders under tmp_root (found {len(runs)} run folder(s))"
        assert whole == split, "a resumed CPU run must repeat the uninterrupted losses exactly"
        train(TrainConfig(out_dir=str(root / "reference"), **settings), progress=False)
        reference = [record["loss"] for record in read_log(root / "reference")[0]]
    assert whole == reference, "your losses differ from a fresh 4-step run with these settings: use `settings` as given"


# Values of the worked solutions on the inputs above (solutions/08_training_solutions.ipynb: schedule_peak,
# anomalous_focal_share), each made by summarise(solution(inputs)); single numbers as they are.
EXPECTED: dict = {'exercise_1 total_steps 600, warmup_fraction 0.1 first': 59,
 'exercise_1 total_steps 600, warmup_fraction 0.1 last': 8.46157e-06,
 'exercise_1 total_steps 5000, warmup_fraction 0.1 first': 499,
 'exercise_1 total_steps 5000, warmup_fraction 0.1 last': 1.21847e-07,
 'exercise_1 total_steps 130, warmup_fraction 0.25 first': 31,
 'exercise_1 total_steps 130, warmup_fraction 0.25 last': 0.000256892,
 'exercise_1 total_steps 10, warmup_fraction 0.0 first': 0,
 'exercise_1 total_steps 10, warmup_fraction 0.0 last': 0.0244717,
 'exercise_2 the square defects': 0.296447,
 'exercise_2 the inverted masks': 0.981717}
