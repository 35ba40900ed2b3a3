"""Inference speed on the CPU: every backend against the eager model, in one run.

Backends (memseg_lite.deployment.fast.BACKENDS), at 256 x 256 with N = 30 memory images:

- ``eager``: the MemSeg module as trained (the baseline);
- ``folded``: PyTorch fp32, batch norms folded, channels_last, parallel streams (the ``fast`` default on the CPU);
- ``onnx``: ONNX Runtime fp32 on the exported network graph;
- ``openvino``: OpenVINO fp32 (``INFERENCE_PRECISION_HINT=f32``);
- ``openvino-int8``: OpenVINO with NNCF post-training INT8 (calibrated on 16 images here; its
  accuracy cost on trained demo models is in docs/deployment.md).

Images/s at batch 1 and 8, with ``BENCH_THREADS`` threads (default torch's count), the ratio
against the eager model measured in the same run, and the max abs map difference to it (the
exact backends < 1e-4; INT8 is an approximation). The model is untrained (random encoder):
speed does not depend on the weights, but random inputs are almost equally far from random memory
images, so the exact backends often meet near ties and hand those images to the eager model
(``exact_selections``); trained models on real images rarely do. Backends are timed in turns
(one call each per round, ``BENCH_REPEAT`` rounds after a warm-up); medians. Also the time each
backend takes to build (export, conversion, quantization).

Run from the repository root: ``python benchmarks/bench_inference.py`` (in ``make bench``).
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

from _common import write_result

from memseg_lite.deployment.fast import BACKENDS
from memseg_lite.network.model import build_memseg

IMAGE_SIZE = 256
MEMORY_SIZE = 30
BATCHES = (1, 8)
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
TARGET = 2.0
MAP_TOLERANCE = 1e-4
NAMES = ("eager", "folded", "onnx", "openvino", "openvino-int8")


def measure(backends: dict, images: torch.Tensor, rounds: int) -> dict:
    """Median wall seconds per call of each backend, timed in turns."""
    wall: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(rounds):
        for name, backend in backends.items():
            start = time.perf_counter()
            backend(images)
            wall[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in wall.items()}


def main() -> None:
    os.environ.setdefault("MEMSEG_OFFLINE", "1")
    threads = int(os.environ.get("BENCH_THREADS", str(torch.get_num_threads())))
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    memory = torch.randn(MEMORY_SIZE, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    model = build_memseg(memory, backbone_weights="none", device="cpu").eval()
    device = torch.device("cpu")
    calibration = torch.randn(16, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    inputs = {batch: torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) for batch in BATCHES}

    result: dict = {
        "image_size": IMAGE_SIZE,
        "memory_size": MEMORY_SIZE,
        "rounds": REPEAT,
        "threads": threads,
        "cpu": _cpu_name(),
        "note": "medians of REPEAT rounds, backends timed in turns; speed-up = eager s / backend s, same run",
    }
    backends = {}
    for name in NAMES:
        options = {"calibration": calibration} if name == "openvino-int8" else {}
        started = time.perf_counter()
        try:
            backends[name] = BACKENDS[name](model, {}, device, threads=threads, **options)
        except ImportError as error:
            print(f"skipping {name}: {error}")
            continue
        result[f"{name}_build_seconds"] = round(time.perf_counter() - started, 2)
    lines = []
    for batch, images in inputs.items():
        reference_maps, _ = backends["eager"](images)
        for name, backend in backends.items():  # warm-up, and the accuracy check
            maps, _ = backend(images)
            result[f"batch{batch}_{name}_max_abs_map_difference"] = float((maps - reference_maps).abs().max())
        wall = measure(backends, images, REPEAT)
        for name in backends:
            result[f"batch{batch}_{name}_images_per_s"] = round(batch / wall[name], 3)
            ratio = wall["eager"] / wall[name]
            result[f"batch{batch}_{name}_speedup_vs_eager"] = round(ratio, 2)
            lines.append(f"batch {batch}  {name:14s} {batch / wall[name]:7.2f} img/s  x{ratio:.2f}  "
                         f"max map diff {result[f'batch{batch}_{name}_max_abs_map_difference']:.1e}")
        fastest = max(backends, key=lambda name: result[f"batch{batch}_{name}_speedup_vs_eager"])
        result[f"batch{batch}_fastest"] = fastest
        result[f"batch{batch}_fastest_meets_{TARGET}x"] = result[f"batch{batch}_{fastest}_speedup_vs_eager"] >= TARGET
    for name in ("folded", "onnx", "openvino"):
        if name in backends:
            result[f"{name}_exact_selections"] = getattr(backends[name], "exact_selections", None)
    write_result("inference", result)
    print(f"\n{threads} thread(s), {result['cpu']}; speed-up against the eager model, same run:")
    print("\n".join("  " + line for line in lines))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
