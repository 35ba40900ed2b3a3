"""Training cost on this machine: step time, peak memory, data synthesis share, evaluation speed.

Measured in one run, at 256 x 256, batch 8, N = 30 memory images, on the CPU (and CUDA if present):

- training step time per image (forward + loss + backward + AdamW; the trainer adds only the
  scheduler and data loading to this);
- peak resident memory of a CPU training process (target: under 4 GiB), against the same
  process's peak right after ``import torch`` (the baseline: libraries alone) and after building
  the model and its memory bank;
- anomaly simulation time per sample (numpy, one thread, what one DataLoader worker does) as a
  share of the training step time per sample (target: under 10 %, so data never starves training);
- evaluation throughput (images/s of ``evaluate_checkpoint`` on the demo data, figures off),
  against the bare forward pass on the same images.

Run from the repository root: ``python benchmarks/bench_training.py``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

IMAGE_SIZE = 256
BATCH = 8
MEMORY = 30
STEPS = 4  # timed steps after one warm-up step


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (VmHWM; ru_maxrss would include the parent's)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: an upper bound


def child_training_memory() -> None:
    """Runs in a fresh process: the peak after importing torch, after building the model, after training."""
    import torch

    from memseg_lite.network.losses import MemSegLoss
    from memseg_lite.network.model import build_memseg

    after_import = peak_rss_mib()
    torch.manual_seed(0)
    memory_images = torch.randn(MEMORY, 3, IMAGE_SIZE, IMAGE_SIZE)
    model = build_memseg(memory_images, backbone_weights="none").train()
    images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)
    masks = (torch.rand(BATCH, IMAGE_SIZE, IMAGE_SIZE) > 0.97).float()
    baseline = peak_rss_mib()
    criterion = MemSegLoss()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(3):
        loss = criterion(model(images), masks).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    print(json.dumps({"import_mib": after_import, "baseline_mib": baseline, "training_mib": peak_rss_mib()}))


def training_step_seconds(device) -> float:
    import torch

    from memseg_lite.network.losses import MemSegLoss
    from memseg_lite.network.model import build_memseg

    torch.manual_seed(0)
    model = build_memseg(torch.randn(MEMORY, 3, IMAGE_SIZE, IMAGE_SIZE), backbone_weights="none", device=device).train()
    images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    masks = (torch.rand(BATCH, IMAGE_SIZE, IMAGE_SIZE, device=device) > 0.97).float()
    criterion = MemSegLoss()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step():
        loss = criterion(model(images), masks).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    return (time.perf_counter() - start) / STEPS


def synthesis_seconds_per_sample(data_root: Path) -> float:
    import cv2
    import numpy as np
    import torch

    from memseg_lite.datasets.mvtec import load_images, scan_category
    from memseg_lite.simulation.synthesis import AnomalySynthesizer
    from memseg_lite.simulation.textures import TextureSource

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        files = scan_category(data_root, "button", require_test=False)
        images = load_images(files.train_good[:16], IMAGE_SIZE)
        synthesizer = AnomalySynthesizer(foreground="button", texture_source=TextureSource(None), p_normal=0.5)
        for index in range(4):  # warm-up: builds part of the procedural texture bank
            synthesizer(images[index % len(images)], np.random.default_rng(index))
        count = 64
        start = time.perf_counter()
        for index in range(count):
            synthesizer(images[index % len(images)], np.random.default_rng(1000 + index))
        return (time.perf_counter() - start) / count
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(-1)


def evaluation_speed(data_root: Path) -> dict:
    import torch

    from memseg_lite.core.checkpoint import save_checkpoint
    from memseg_lite.datasets.mvtec import images_to_tensor, load_images, scan_category
    from memseg_lite.evaluation.evaluate import evaluate_checkpoint
    from memseg_lite.network.model import build_memseg

    files = scan_category(data_root, "button")
    memory = images_to_tensor(load_images(files.train_good[:MEMORY], IMAGE_SIZE))
    model = build_memseg(memory, backbone_weights="none").eval()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = save_checkpoint({"model_config": model.config(), "model": model.state_dict(),
                                      "train_config": {"image_size": IMAGE_SIZE}}, Path(folder) / "model.pt")
        metrics = evaluate_checkpoint(checkpoint, data_root, "button", out_dir=None, device="cpu", figures=False,
                                      progress=False)
        images = torch.stack([torch.randn(3, IMAGE_SIZE, IMAGE_SIZE) for _ in range(16)])
        with torch.inference_mode():
            model(images)
            start = time.perf_counter()
            model(images)
            forward = 16 / (time.perf_counter() - start)
    return {"evaluate_images_per_s": metrics["images_per_second"], "bare_forward_images_per_s": round(forward, 2),
            "n_test_images": metrics["n_images"]}


def main() -> None:
    os.environ.setdefault("MEMSEG_OFFLINE", "1")
    import torch
    from _common import write_result

    from memseg_lite.datasets.demo.writer import ensure_demo_data

    data_root = ensure_demo_data(ROOT / "data" / "demo")
    result: dict = {"image_size": IMAGE_SIZE, "batch_size": BATCH, "memory_size": MEMORY}

    cpu_step = training_step_seconds(torch.device("cpu"))
    result["cpu_train_step_s"] = round(cpu_step, 3)
    result["cpu_train_s_per_image"] = round(cpu_step / BATCH, 3)
    if torch.cuda.is_available():
        cuda_step = training_step_seconds(torch.device("cuda"))
        result["cuda_train_s_per_image"] = round(cuda_step / BATCH, 4)

    synthesis = synthesis_seconds_per_sample(data_root)
    result["synthesis_ms_per_sample_1_thread"] = round(1000 * synthesis, 2)
    result["synthesis_share_of_cpu_train_step"] = round(synthesis / (cpu_step / BATCH), 4)
    result["synthesis_share_target"] = "< 0.10"
    if torch.cuda.is_available():
        result["synthesis_share_of_cuda_train_step"] = round(synthesis / (cuda_step / BATCH), 4)

    child = subprocess.run([sys.executable, __file__, "--child-memory"], capture_output=True, text=True, check=True,
                           env={**os.environ, "MEMSEG_OFFLINE": "1"})
    memory = json.loads(child.stdout.strip().splitlines()[-1])
    result["cpu_training_peak_rss_mib"] = round(memory["training_mib"])
    result["peak_rss_after_import_torch_mib (baseline)"] = round(memory["import_mib"])
    result["peak_rss_after_building_model_mib"] = round(memory["baseline_mib"])
    result["training_peak_over_import_ratio"] = round(memory["training_mib"] / memory["import_mib"], 2)
    result["peak_rss_target"] = "< 4096 MiB"

    result.update(evaluation_speed(data_root))
    write_result("training", result)


if __name__ == "__main__":
    if "--child-memory" in sys.argv:
        child_training_memory()
    else:
        main()
