"""Inference speed on the CPU: ONNX Runtime and folded PyTorch against today's eager model, same run.

The issue's target (issue 11, item 8): the deployed path reaches at least 1.5x the images/s of the
eager ``predict`` model at 256 x 256, batch 1 and 8, with the same anomaly maps (max abs
difference < 1e-4). Backends (memseg_lite.deployment.fast):

- ``eager``: the MemSeg module as ``predict`` ran it (the baseline);
- ``folded``: fp32 PyTorch, batch norms folded into the convolutions, channels_last, inference_mode;
- ``onnx``: ONNX Runtime (CPU execution provider) on the exported graph (export time reported apart).

The model is untrained (random encoder with calibrated batch norms, N = 30 memory images): speed
does not depend on the weights. The machine is shared, so the backends are timed in turns (one
call each per round, ``REPEAT`` rounds after a warm-up) and the median of each is reported.

Run from the repository root: ``python benchmarks/bench_inference.py`` (``BENCH_REPEAT=N`` to
change the number of rounds).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import write_result  # noqa: E402

from memseg_lite.deployment.fast import EagerBackend, FoldedTorchBackend, OnnxBackend  # noqa: E402
from memseg_lite.network.model import build_memseg  # noqa: E402

IMAGE_SIZE = 256
MEMORY_SIZE = 30
BATCHES = (1, 8)
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
TARGET = 1.5


def main() -> None:
    os.environ.setdefault("MEMSEG_OFFLINE", "1")
    generator = torch.Generator().manual_seed(0)
    memory = torch.randn(MEMORY_SIZE, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    model = build_memseg(memory, backbone_weights="none", device="cpu").eval()
    payload = {"train_config": {"amp": "auto"}}
    device = torch.device("cpu")
    backends = {"eager": EagerBackend(model, payload, device), "folded": FoldedTorchBackend(model, payload, device)}
    onnx_available = True
    try:
        started = time.perf_counter()
        backends["onnx"] = OnnxBackend(model, payload, device)
        export_seconds = time.perf_counter() - started
    except ImportError as error:
        onnx_available, export_seconds = False, None
        print(f"skipping onnx: {error}")

    result: dict = {
        "image_size": IMAGE_SIZE, "memory_size": MEMORY_SIZE, "rounds": REPEAT, "torch_threads": torch.get_num_threads(),
        "onnx_export_and_session_seconds": None if export_seconds is None else round(export_seconds, 2),
        "note": "medians of REPEAT rounds, backends timed in turns on a shared machine",
    }
    for batch in BATCHES:
        images = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
        reference_maps, reference_scores = backends["eager"](images)
        times: dict[str, list[float]] = {name: [] for name in backends}
        for name, backend in backends.items():  # warm-up, and the accuracy check
            maps, scores = backend(images)
            result[f"batch{batch}_{name}_max_abs_map_difference"] = float((maps - reference_maps).abs().max())
            result[f"batch{batch}_{name}_max_abs_score_difference"] = float((scores - reference_scores).abs().max())
        for _ in range(REPEAT):
            for name, backend in backends.items():
                start = time.perf_counter()
                backend(images)
                times[name].append(time.perf_counter() - start)
        eager_seconds = statistics.median(times["eager"])
        for name, samples in times.items():
            seconds = statistics.median(samples)
            result[f"batch{batch}_{name}_images_per_s"] = round(batch / seconds, 3)
            if name != "eager":
                ratio = eager_seconds / seconds
                result[f"batch{batch}_{name}_speedup_vs_eager"] = round(ratio, 2)
                result[f"batch{batch}_{name}_meets_{TARGET}x"] = bool(ratio >= TARGET)
    result["onnx_available"] = onnx_available
    write_result("inference", result)


if __name__ == "__main__":
    main()
