"""Self-checks for notebook 08 (training): the peak of the schedule, who pays the focal loss, exact resume.

``exercise_1`` and ``exercise_2`` build their own inputs and compare with stored values of the
worked solution (made by :func:`memseg_lite.teaching.exercises.summarise`; solutions in
``solutions/08_training_solutions.ipynb``) and with properties. ``exercise_3`` needs a data
folder (the notebook's ``data_root``); it checks the learner's two loss lists against each other
*and* against a third, uninterrupted reference run that the check trains itself in its own folder,
so made-up lists (``[0] * 4`` twice) fail, and so does one run returned twice (two run folders are
required). It also watches the training sessions the candidate runs (it wraps ``Trainer.fit``
while the candidate runs, without changing what it does): one run folder must have been trained in
one session, another in an interrupted session (``stop_after``) followed by a resumed one
(``resume=True``), so two uninterrupted runs, which give the same losses, fail too. The sessions
must run in the notebook's process (``train`` or ``Trainer``, not the command line).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import tempfile
from pathlib import Path

import torch

from memseg_lite.teaching.checks.support import Sealed, assert_sealed, robust
from memseg_lite.teaching.exercises import call_candidate
from memseg_lite.training.config import TrainConfig
from memseg_lite.training.trainer import Trainer, read_log, train, warmup_cosine


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


@robust
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
        assert_sealed(_number(last, f"{case}: the last factor"), EXPECTED[f"exercise_1 {case} last"],
                      what=f"{case}: the factor at the last step")
        assert_sealed(first, EXPECTED[f"exercise_1 {case} first"], what=f"{case}: the first step with factor 1")


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


@robust
def exercise_2(candidate) -> None:
    """``candidate(logits, target, gamma=4.0)`` -> the anomalous pixels' share of the summed focal loss."""
    logits, target = exercise_2_inputs()
    for name, mask in (("the square defects", target), ("the inverted masks", 1 - target)):
        share = _number(call_candidate(candidate, logits.clone(), mask.clone()), f"{name}: the share")
        assert 0.0 <= share <= 1.0, f"{name}: a share lies in [0, 1], got {share:.4f}"
        assert_sealed(share, EXPECTED[f"exercise_2 {name}"], what=f"{name}: the share")
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


@contextlib.contextmanager
def _watched_sessions():
    """Record every ``Trainer.fit`` while the block runs: dicts with the run folder, ``resume``, ``interrupted``."""
    sessions: list[dict] = []
    original = Trainer.fit
    signature = inspect.signature(original)

    def fit(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        result = original(self, *args, **kwargs)
        sessions.append({"folder": Path(self.out_dir).resolve(), "resume": bool(bound.arguments["resume"]),
                         "interrupted": bool(result.interrupted)})
        return result

    Trainer.fit = fit
    try:
        yield sessions
    finally:
        Trainer.fit = original


def _assert_whole_and_resumed(sessions: list[dict]) -> None:
    by_folder: dict[Path, list[dict]] = {}
    for session in sessions:
        by_folder.setdefault(session["folder"], []).append(session)
    assert by_folder, ("no training session ran in this notebook's process: train with "
                       "memseg_lite.training.trainer.train(config, ...) (not the command line)")
    whole = [
        f for f, runs in by_folder.items() if len(runs) == 1 and not runs[0]["resume"] and not runs[0]["interrupted"]
    ]
    resumed = [f for f, runs in by_folder.items()
               if len(runs) >= 2 and runs[0]["interrupted"] and not runs[0]["resume"]
               and runs[-1]["resume"] and not runs[-1]["interrupted"]]
    assert resumed, ("no run folder was trained in two sessions, an interrupted one (train(config, stop_after=2)) "
                     "and then a resumed one (train(config, resume=True)): two uninterrupted runs give the same "
                     "losses but test nothing about resuming")
    assert any(folder not in resumed for folder in whole), \
        "train the uninterrupted run in one session in a folder of its own"


@robust
def exercise_3(candidate, data_root, category: str = "mesh", texture_root=None) -> None:
    """``candidate(tmp_root, settings)`` -> (losses of the uninterrupted run, losses of the resumed run).

    ``settings`` are the TrainConfig arguments of :func:`tiny_settings` (all but ``out_dir``); the
    candidate trains under ``tmp_root``. Three tiny runs in all (the check adds a reference run).
    """
    settings = tiny_settings(data_root, category, texture_root)
    with tempfile.TemporaryDirectory(prefix="memseg_check08_") as folder:
        root = Path(folder)
        (root / "yours").mkdir()
        with _watched_sessions() as sessions:
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
        _assert_whole_and_resumed(sessions)
        train(TrainConfig(out_dir=str(root / "reference"), **settings), progress=False)
        reference = [record["loss"] for record in read_log(root / "reference")[0]]
    assert whole == reference, "your losses differ from a fresh 4-step run with these settings: use `settings` as given"


# Values of the worked solutions on the inputs above (solutions/08_training_solutions.ipynb: schedule_peak,
# anomalous_focal_share), each made by summarise(solution(inputs)); single numbers as they are.
EXPECTED: dict = {
    "exercise_1 total_steps 600, warmup_fraction 0.1 first": Sealed(
        step=1.0, digest="d7d05a05c66fc1278116", exact=True
    ),
    "exercise_1 total_steps 600, warmup_fraction 0.1 last": Sealed(
        step=1e-10, digest="f0b7cfe329c4d5799737", exact=False
    ),
    "exercise_1 total_steps 5000, warmup_fraction 0.1 first": Sealed(
        step=1.0, digest="313b613537dfeef6765a", exact=True
    ),
    "exercise_1 total_steps 5000, warmup_fraction 0.1 last": Sealed(
        step=1e-11, digest="4d169790a7fabe2bc845", exact=False
    ),
    "exercise_1 total_steps 130, warmup_fraction 0.25 first": Sealed(
        step=1.0, digest="2f6d8fd61d8b139810be", exact=True
    ),
    "exercise_1 total_steps 130, warmup_fraction 0.25 last": Sealed(
        step=1e-08, digest="a05f62cbbdea8669d75a", exact=False
    ),
    "exercise_1 total_steps 10, warmup_fraction 0.0 first": Sealed(step=1.0, digest="605380b1a69fabc178d1", exact=True),
    "exercise_1 total_steps 10, warmup_fraction 0.0 last": Sealed(
        step=1e-06, digest="eab068bd9a869390d80d", exact=False
    ),
    "exercise_2 the square defects": Sealed(step=1e-05, digest="8bf5a83b17d09341e88a", exact=False),
    "exercise_2 the inverted masks": Sealed(step=1e-05, digest="16ad108232a79a401bfa", exact=False),
}
