"""Inference speed on the CPU: the fast backends against today's eager ``predict`` model, same run.

The issue's target (issue 11, item 8): the deployed path reaches at least 1.5x the images/s of the
eager ``predict`` model at 256 x 256, batch 1 and 8, with the same anomaly maps (max abs
difference < 1e-4). Backends (memseg_lite.deployment.fast):

- ``eager``: the MemSeg module as ``predict`` ran it before the fast backends (the baseline; the
  network code is unchanged);
- ``folded``: the torch "fast" path: batch norms folded, oneDNN convolutions with prepacked
  weights and fused activations, the wide 3x3 convolutions by Winograd F(4x4, 3x3),
  channels_last, inference_mode, batches in chunks of 2, a batch of several images split over
  parallel streams (one thread each);
- ``folded_one_stream``: the same in one stream (every image on all threads);
- ``folded_direct``: one stream and no Winograd (every convolution direct: the previous version);
- ``folded_plain``: the first folded version (plain ``F.conv2d``, whole batches), for comparison;
- ``onnx``: ONNX Runtime (CPU execution provider) on the exported graph.

Every setting runs twice: with torch's default thread count (what ``make bench`` measures; ONNX
Runtime gets the same count) and with 1 thread. With 1 thread the CPU time of the process is also
reported (``cpu_images_per_s``): it hardly moves when other programs share the machine, unlike wall
time. The model is untrained (random encoder with calibrated batch norms, N = 30 memory images):
speed does not depend on the weights. Random inputs are almost equally far from random memory
images, so the fast path often meets near ties and recomputes the choice of memory sample with
the eager encoder (``exact_selections``); trained models on real images rarely do. Backends are
timed in turns (one call each per round, ``BENCH_REPEAT`` rounds after a warm-up); medians.

Run from the repository root: ``python benchmarks/bench_inference.py``; ``BENCH_REPEAT=N`` rounds,
``BENCH_THREADS=2,1`` the thread counts.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import write_result  # noqa: E402

from memseg_lite.deployment.export import DeployedMemSeg, trace_to_onnx  # noqa: E402
from memseg_lite.deployment.fast import (  # noqa: E402
    EagerBackend,
    FoldedTorchBackend,
    OnnxBackend,
    eager_selection,
)
from memseg_lite.network.model import build_memseg  # noqa: E402

IMAGE_SIZE = 256
MEMORY_SIZE = 30
BATCHES = (1, 8)
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
TARGET = 1.5
MAP_TOLERANCE = 1e-4


def thread_counts() -> list[int]:
    default = torch.get_num_threads()
    text = os.environ.get("BENCH_THREADS", f"{default},1")
    counts = [int(part) for part in text.split(",") if part.strip()]
    return list(dict.fromkeys(counts))  # in order, without repeats


def measure(backends: dict, images: torch.Tensor, rounds: int) -> tuple[dict, dict]:
    """Median wall and process (CPU) seconds per call of each backend, timed in turns."""
    wall: dict[str, list[float]] = {name: [] for name in backends}
    cpu: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(rounds):
        for name, backend in backends.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            backend(images)
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    return ({name: statistics.median(v) for name, v in wall.items()},
            {name: statistics.median(v) for name, v in cpu.items()})


def main() -> None:
    os.environ.setdefault("MEMSEG_OFFLINE", "1")
    default_threads = torch.get_num_threads()
    generator = torch.Generator().manual_seed(0)
    memory = torch.randn(MEMORY_SIZE, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    model = build_memseg(memory, backbone_weights="none", device="cpu").eval()
    payload = {"train_config": {"amp": "auto"}}
    device = torch.device("cpu")
    inputs = {batch: torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) for batch in BATCHES}

    onnx_file = None
    export_seconds = None
    scratch = tempfile.TemporaryDirectory(prefix="memseg-bench-")  # the exported graph; removed at the end
    try:
        import onnxruntime  # noqa: F401

        started = time.perf_counter()
        onnx_file = Path(scratch.name) / "model.onnx"
        trace_to_onnx(DeployedMemSeg(model, fold=True), onnx_file)
        export_seconds = round(time.perf_counter() - started, 2)
    except ImportError as error:
        print(f"skipping onnx: {error}")

    result: dict = {
        "image_size": IMAGE_SIZE, "memory_size": MEMORY_SIZE, "rounds": REPEAT, "default_torch_threads": default_threads,
        "onnx_export_seconds": export_seconds,
        "note": "medians of REPEAT rounds, backends timed in turns; speed-up = eager seconds / backend seconds, same run",
    }
    summary = []
    try:
        for threads in thread_counts():
            torch.set_num_threads(threads)
            backends = {
                "eager": EagerBackend(model, payload, device),
                "folded": FoldedTorchBackend(model, payload, device),
                "folded_one_stream": FoldedTorchBackend(model, payload, device, streams=1),
                "folded_direct": FoldedTorchBackend(model, payload, device, winograd=False, streams=1),
                "folded_plain": FoldedTorchBackend(model, payload, device, packed=False, chunk_size=None),
            }
            if onnx_file is not None:
                backends["onnx"] = OnnxBackend(onnx_path=onnx_file, threads=threads)
            for batch, images in inputs.items():
                prefix = f"threads{threads}_batch{batch}"
                reference_maps, reference_scores = backends["eager"](images)
                reference_indices = eager_selection(model, images)
                for name, backend in backends.items():  # warm-up, and the accuracy check
                    maps, scores = backend(images)
                    result[f"{prefix}_{name}_max_abs_map_difference"] = float((maps - reference_maps).abs().max())
                    result[f"{prefix}_{name}_max_abs_score_difference"] = float((scores - reference_scores).abs().max())
                    if isinstance(backend, FoldedTorchBackend):
                        result[f"{prefix}_{name}_same_selection"] = bool(torch.equal(backend.last_indices, reference_indices))
                selections_before = backends["folded"].exact_selections
                wall, cpu = measure(backends, images, REPEAT)
                result[f"{prefix}_folded_exact_selections_per_call"] = (
                    (backends["folded"].exact_selections - selections_before) / max(1, REPEAT)
                )
                for name in backends:
                    result[f"{prefix}_{name}_images_per_s"] = round(batch / wall[name], 3)
                    if threads == 1:
                        result[f"{prefix}_{name}_cpu_images_per_s"] = round(batch / cpu[name], 3)
                    if name == "eager":
                        continue
                    ratio = wall["eager"] / wall[name]
                    exact = result[f"{prefix}_{name}_max_abs_map_difference"] < MAP_TOLERANCE
                    result[f"{prefix}_{name}_speedup_vs_eager"] = round(ratio, 2)
                    result[f"{prefix}_{name}_meets_{TARGET}x"] = bool(ratio >= TARGET and exact)
                    line = f"threads {threads} batch {batch} {name:12s} x{ratio:.2f} (wall)"
                    if threads == 1:
                        cpu_ratio = cpu["eager"] / cpu[name]
                        result[f"{prefix}_{name}_cpu_speedup_vs_eager"] = round(cpu_ratio, 2)
                        line += f"  x{cpu_ratio:.2f} (cpu time)"
                    summary.append(line + ("  meets 1.5x" if ratio >= TARGET and exact else ""))
    finally:
        torch.set_num_threads(default_threads)
        scratch.cleanup()
    result["onnx_available"] = onnx_file is not None
    write_result("inference", result)
    print("\nspeed-up against the eager model, same run:")
    print("\n".join("  " + line for line in summary))


if __name__ == "__main__":
    main()
