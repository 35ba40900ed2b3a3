"""Anomaly simulation throughput: the numpy/opencv synthesizer (one core) vs the batched torch one.

One "sample" is a full 256 x 256 anomalous training sample: Perlin mask, foreground mask, a texture
or a structure noise image (half each), and the blend. Measured in the same run:

- numpy, one image at a time, ``torch.set_num_threads(1)`` and ``cv2.setNumThreads(1)`` (what one
  data-loader worker does);
- torch, batch 32 on the CPU, with one thread and with all threads;
- torch, batch 32 on CUDA, when available.

Reported: samples per second, the per-stage cost of the numpy path, and the ratios to numpy.
Run from the repository root: ``python benchmarks/bench_synthesis.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import time_call, write_result  # noqa: E402

from memseg_lite.simulation.foreground import foreground_mask  # noqa: E402
from memseg_lite.simulation.perlin import perlin_mask  # noqa: E402
from memseg_lite.simulation.synthesis import AnomalySynthesizer, TorchAnomalySynthesizer, structure_noise  # noqa: E402
from memseg_lite.simulation.textures import TextureSource, augment_texture, texture_bank  # noqa: E402

SIZE = 256
BATCH = 32
NUMPY_SAMPLES = 48
FOREGROUND = "otsu"


def object_images(count: int, seed: int = 0) -> np.ndarray:
    """Shaded, textured disks on a plain background: uint8 ``[N, SIZE, SIZE, 3]`` (an object category)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = []
    for _ in range(count):
        cy, cx = rng.uniform(0.4, 0.6, 2) * SIZE
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < (rng.uniform(0.25, 0.35) * SIZE) ** 2
        shade = 1.0 - 0.4 * ((yy - cy) ** 2 + (xx - cx) ** 2) / SIZE**2
        colour = rng.uniform(120, 220, 3)
        picture = np.where(inside[..., None], colour * shade[..., None], 35.0) + rng.normal(0, 4, (SIZE, SIZE, 3))
        images.append(np.clip(picture, 0, 255).astype(np.uint8))
    return np.stack(images)


def numpy_stages(image: np.ndarray, source: TextureSource) -> dict:
    """Median milliseconds of each stage of one numpy sample."""
    rng = np.random.default_rng(0)
    stages = {
        "perlin_mask": lambda: perlin_mask((SIZE, SIZE), rng),
        "foreground_mask": lambda: foreground_mask(image, FOREGROUND),
        "texture_noise": lambda: augment_texture(source.sample(rng, SIZE), rng),
        "structure_noise": lambda: structure_noise(image, rng, (4, 8)),
    }
    return {name: round(1000 * time_call(stage, repeat=15, warmup=2), 2) for name, stage in stages.items()}


def numpy_throughput(images: np.ndarray, source: TextureSource) -> float:
    synthesizer = AnomalySynthesizer(FOREGROUND, source, p_normal=0.0, p_texture=0.5)

    def run() -> None:
        for index in range(NUMPY_SAMPLES):
            synthesizer.sample(images[index % len(images)], np.random.default_rng(index))

    return NUMPY_SAMPLES / time_call(run, repeat=3, warmup=1)


def torch_throughput(images: np.ndarray, bank: np.ndarray, device: torch.device) -> float:
    synthesizer = TorchAnomalySynthesizer(FOREGROUND, bank, p_normal=0.0, p_texture=0.5, device=device)
    batch = torch.from_numpy(images[:BATCH]).permute(0, 3, 1, 2).contiguous().to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    def run() -> None:
        synthesizer(batch, generator)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return BATCH / time_call(run, repeat=5, warmup=2)


def main() -> dict:
    all_threads = torch.get_num_threads()
    images = object_images(BATCH)
    source = TextureSource(None, seed=0)  # the procedural bank: the same on every machine
    for index in range(len(source)):
        source.image(index)  # generate the bank up front; it is built once per run in training

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    stages = numpy_stages(images[0], source)
    numpy_rate = numpy_throughput(images, source)
    start = time.perf_counter()
    bank = texture_bank(source, np.random.default_rng(0), 64, SIZE)
    bank_seconds = time.perf_counter() - start
    torch_one_thread = torch_throughput(images, bank, torch.device("cpu"))

    torch.set_num_threads(all_threads)
    cv2.setNumThreads(-1)
    torch_all_threads = torch_throughput(images, bank, torch.device("cpu"))
    result = {
        "image_size": SIZE,
        "batch_size": BATCH,
        "foreground": FOREGROUND,
        "numpy_1_thread_samples_per_s": round(numpy_rate, 1),
        "numpy_stage_ms": stages,
        "torch_cpu_1_thread_samples_per_s": round(torch_one_thread, 1),
        f"torch_cpu_{all_threads}_threads_samples_per_s": round(torch_all_threads, 1),
        "ratio_torch_cpu_1_thread_vs_numpy": round(torch_one_thread / numpy_rate, 2),
        f"ratio_torch_cpu_{all_threads}_threads_vs_numpy": round(torch_all_threads / numpy_rate, 2),
        "texture_bank_64_build_s": round(bank_seconds, 2),
    }
    if torch.cuda.is_available():
        cuda_rate = torch_throughput(images, bank, torch.device("cuda"))
        result["torch_cuda_samples_per_s"] = round(cuda_rate, 1)
        result["ratio_torch_cuda_vs_numpy"] = round(cuda_rate / numpy_rate, 2)
    write_result("synthesis", result)
    return result


if __name__ == "__main__":
    main()
