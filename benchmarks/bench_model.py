"""Speed of the MemSeg network on this machine (256 x 256 input, N = 30 memory images).

Measures, in one run:
- inference images/s at batch 1 and 8, against the bare ResNet18 encoder as baseline;
- the share of the forward time spent in the memory-bank comparison (target: under 10 %),
  timed inside real forward passes, and the vectorised comparison against a Python loop over
  memory samples (the naive way);
- the training step per image at batch 8 (forward + loss + backward + AdamW step), against
  the inference forward at the same batch;
- parameter counts (trainable vs frozen).

Run from the repository root: ``python benchmarks/bench_model.py``.
"""

from __future__ import annotations

import os
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import time_call, write_result

import memseg_lite.network.model as model_module
from memseg_lite.network.losses import MemSegLoss
from memseg_lite.network.memory import difference_information
from memseg_lite.network.model import build_memseg, parameter_counts

IMAGE_SIZE = 256
MEMORY_SIZE = 30
REPEAT = 3


def loop_difference(features: list[torch.Tensor], memory: list[torch.Tensor]) -> torch.Tensor:
    """Baseline: the "paper" rule with a Python loop over memory samples."""
    totals = []
    for index in range(memory[0].shape[0]):
        levels = zip(features, memory, strict=True)  # one stored tensor per feature level
        totals.append(sum((stored[index] - feature).abs().flatten(1).sum(1) for feature, stored in levels))
    return torch.stack(totals, dim=1).argmin(dim=1)


class TimedDifference:
    """Wraps ``difference_information`` as the model calls it, adding up its wall time."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        result = difference_information(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return result


def main() -> None:
    os.environ.setdefault("MEMSEG_OFFLINE", "1")  # a benchmark never downloads; speed does not depend on the weights
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    memory_images = torch.randn(MEMORY_SIZE, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    batch8 = torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    model = build_memseg(memory_images, backbone_weights="none").eval()
    result: dict = {"image_size": IMAGE_SIZE, "memory_size": MEMORY_SIZE, "device": "cpu"}

    # Inference, with the bare encoder as baseline.
    forward_seconds: dict[int, float] = {}
    for batch in (1, 8):
        images = batch8[:batch]
        with torch.inference_mode():
            seconds = time_call(partial(model, images), repeat=REPEAT)
            encoder_seconds = time_call(partial(model.encoder, images), repeat=REPEAT)
        result[f"inference_batch{batch}_images_per_s"] = round(batch / seconds, 2)
        result[f"inference_batch{batch}_ms_per_image"] = round(1000 * seconds / batch, 1)
        result[f"inference_batch{batch}_encoder_only_images_per_s"] = round(batch / encoder_seconds, 2)
        result[f"inference_batch{batch}_time_vs_encoder_only"] = round(seconds / encoder_seconds, 2)
        forward_seconds[batch] = seconds

    # Share of the forward spent comparing with the memory bank, timed inside real forwards.
    timer = TimedDifference()
    model_module.difference_information = timer
    try:
        for batch in (1, 8):
            images = batch8[:batch]
            with torch.inference_mode():
                model(images)  # warm-up
                timer.seconds = 0.0
                start = time.perf_counter()
                for _ in range(REPEAT):
                    model(images)
                total = time.perf_counter() - start
            result[f"memory_share_of_forward_batch{batch}_percent"] = round(100 * timer.seconds / total, 1)
    finally:
        model_module.difference_information = difference_information

    # Vectorised comparison vs a Python loop over the memory samples (same selection).
    with torch.inference_mode():
        frozen = model.encoder.frozen_features(batch8)
        features = [frozen.level1, frozen.level2, frozen.level3]
        bank = model.memory.features
        vectorised = time_call(lambda: difference_information(features, bank, "paper"), repeat=REPEAT)
        looped = time_call(lambda: loop_difference(features, bank), repeat=REPEAT)
        assert torch.equal(difference_information(features, bank, "paper")[1], loop_difference(features, bank))
        for rule in ("official", "tootouch"):
            rule_seconds = time_call(partial(difference_information, features, bank, rule), repeat=REPEAT)
            result[f"memory_comparison_batch8_{rule}_ms"] = round(1000 * rule_seconds, 1)
    result["memory_comparison_batch8_paper_ms"] = round(1000 * vectorised, 1)
    result["memory_comparison_batch8_python_loop_ms"] = round(1000 * looped, 1)
    result["memory_comparison_speedup_vs_loop"] = round(looped / vectorised, 2)
    result["memory_share_target_percent"] = 10

    # Training step at batch 8, against the inference forward at batch 8.
    model.train()
    loss_function = MemSegLoss()
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=5e-4)
    target = torch.zeros(8, IMAGE_SIZE, IMAGE_SIZE)
    target[:, 96:160, 96:160] = 1.0

    def training_step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss_function(model(batch8), target).total.backward()
        optimiser.step()

    train_seconds = time_call(training_step, repeat=2)  # the slowest part: fewer repeats keep the run short
    model.eval()
    result["train_step_batch8_s"] = round(train_seconds, 3)
    result["train_step_ms_per_image"] = round(1000 * train_seconds / 8, 1)
    result["train_step_vs_inference_forward"] = round(train_seconds / forward_seconds[8], 2)

    counts = parameter_counts(model)
    result["parameters_trainable"] = counts["total"]["trainable"]
    result["parameters_frozen"] = counts["total"]["frozen"]
    result["parameters_by_part"] = {part: counts[part] for part in ("encoder", "msff", "decoder")}
    result["memory_bank_megabytes"] = round(4 * counts["memory_bank_values"] / 2**20, 1)
    write_result("bench_model", result)


if __name__ == "__main__":
    main()
