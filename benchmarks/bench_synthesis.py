"""Anomaly simulation throughput: the loader path (numpy/opencv, one image at a time) vs the
device path (batched torch, textures streamed through a pool on the device), in the same run.

One "sample" is a full 256 x 256 anomalous training sample: Perlin mask, foreground mask, a texture
or a structure noise image (half each), and the blend. Both paths draw a fresh texture and fresh
augmentations for every texture anomaly. Measured:

- the loader path, ``torch.set_num_threads(1)`` and ``cv2.setNumThreads(1)`` (what one data-loader
  worker does), with its per-stage cost;
- the device path, batch 32 on the CPU (one thread, all threads) and on CUDA when available;
- with a DTD-like source (JPEG files, more textures than the pool holds, so the pool refreshes):
  both paths again on one CPU thread (and CUDA), the device path with and without refreshing and
  with and without the prefetch thread (ratio: the simulation's speed-up from prefetching),
  the host time the refreshes take per batch and per image read. DTD itself is not needed: the
  benchmark writes 320 JPEGs of 640 x 480 (procedural textures with photo-like grain) to a
  temporary folder. Real DTD photos decode somewhat slower than these.

Reported: samples per second and ratios. Run from the repository root: ``python benchmarks/bench_synthesis.py``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2
import numpy as np
import torch
from _common import time_call, write_result

from memseg_lite.core.io import write_image
from memseg_lite.simulation.foreground import foreground_mask
from memseg_lite.simulation.perlin import perlin_mask
from memseg_lite.simulation.synthesis import AnomalySynthesizer, TorchAnomalySynthesizer, structure_noise
from memseg_lite.simulation.textures import TextureSource, augment_texture

SIZE = 256
BATCH = 32
NUMPY_SAMPLES = 48
DEVICE_BATCHES = 16  # four refresh cycles with refresh_every=4
FOREGROUND = "otsu"
SETTINGS = {"p_normal": 0.0, "p_texture": 0.5}
JPEG_COUNT, JPEG_SHAPE = 320, (480, 640)


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


def write_jpeg_textures(folder: Path, procedural: TextureSource) -> TextureSource:
    """A DTD-like folder (``images/<class>/*.jpg``) of JPEG_COUNT photo-sized textures."""
    rng = np.random.default_rng(1)
    for index in range(JPEG_COUNT):
        texture = procedural.image(index % len(procedural))
        texture = cv2.resize(texture, JPEG_SHAPE[::-1], interpolation=cv2.INTER_LINEAR)
        grain = rng.normal(0, 6, texture.shape)  # photo-like noise, so the JPEGs are not trivially compressible
        photo = np.clip(texture + grain, 0, 255).astype(np.uint8)
        write_image(folder / "images" / f"class{index % 8}" / f"{index:04d}.jpg", photo)
    return TextureSource(folder)


def numpy_stages(image: np.ndarray, source: TextureSource) -> dict:
    """Median milliseconds of each stage of one loader-path sample."""
    rng = np.random.default_rng(0)
    stages = {
        "perlin_mask": lambda: perlin_mask((SIZE, SIZE), rng),
        "foreground_mask": lambda: foreground_mask(image, FOREGROUND),
        "texture_noise": lambda: augment_texture(source.sample(rng, SIZE), rng),
        "structure_noise": lambda: structure_noise(image, rng, (4, 8)),
    }
    return {name: round(1000 * time_call(stage, repeat=15, warmup=2), 2) for name, stage in stages.items()}


def numpy_throughput(images: np.ndarray, source: TextureSource) -> float:
    synthesizer = AnomalySynthesizer(FOREGROUND, source, **SETTINGS)

    def run() -> None:
        for index in range(NUMPY_SAMPLES):
            synthesizer.sample(images[index % len(images)], np.random.default_rng(index))

    return NUMPY_SAMPLES / time_call(run, repeat=3, warmup=1)


def device_synthesizer(source: TextureSource, device: torch.device, **pool) -> TorchAnomalySynthesizer:
    return TorchAnomalySynthesizer.from_texture_source(
        source,
        np.random.default_rng(0),
        bank_size=64,
        image_size=SIZE,
        foreground=FOREGROUND,
        device=device,
        **SETTINGS,
        **pool,
    )


def device_throughput(synthesizer: TorchAnomalySynthesizer, images: np.ndarray, device: torch.device) -> dict:
    """Samples/s over DEVICE_BATCHES consecutive batches (refreshes included) and the pool's host cost."""
    batch = torch.from_numpy(images[:BATCH]).permute(0, 3, 1, 2).contiguous().to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    def run() -> None:
        for _ in range(DEVICE_BATCHES):
            synthesizer(batch, generator)
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up (also the first refreshes)
    pool = synthesizer.texture_pool
    loaded, seconds, batches = pool.textures_loaded, pool.load_seconds, pool.batches_done
    waited = pool.wait_seconds
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    loaded, seconds = pool.textures_loaded - loaded, pool.load_seconds - seconds
    waited = pool.wait_seconds - waited
    return {
        "samples_per_s": round(BATCH * DEVICE_BATCHES / elapsed, 1),
        "refresh_ms_per_batch": round(1000 * seconds / (pool.batches_done - batches), 2),
        # what the simulating thread waited for textures (the rest was read by the prefetch thread)
        "texture_wait_ms_per_batch": round(1000 * waited / (pool.batches_done - batches), 2),
        "textures_read_per_batch": round(loaded / (pool.batches_done - batches), 2),
        "ms_per_texture_read": round(1000 * seconds / loaded, 2) if loaded else None,
    }


def main() -> dict:
    all_threads = torch.get_num_threads()
    images = object_images(BATCH)
    procedural = TextureSource(None, seed=0)  # the procedural bank (40): the same on every machine
    for index in range(len(procedural)):
        procedural.image(index)  # generate it up front; training builds it once per run
    cpu = torch.device("cpu")
    result: dict = {"image_size": SIZE, "batch_size": BATCH, "foreground": FOREGROUND, **SETTINGS}

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    result["loader_stage_ms"] = numpy_stages(images[0], procedural)
    loader_rate = numpy_throughput(images, procedural)
    start = time.perf_counter()
    synthesizer = device_synthesizer(procedural, cpu)
    result["pool_build_procedural_s"] = round(time.perf_counter() - start, 2)
    one_thread = device_throughput(synthesizer, images, cpu)["samples_per_s"]
    torch.set_num_threads(all_threads)
    cv2.setNumThreads(-1)
    all_rate = device_throughput(device_synthesizer(procedural, cpu), images, cpu)["samples_per_s"]
    result.update({
        "procedural_loader_1_thread_samples_per_s": round(loader_rate, 1),
        "procedural_device_cpu_1_thread_samples_per_s": one_thread,
        f"procedural_device_cpu_{all_threads}_threads_samples_per_s": all_rate,
        "ratio_device_cpu_1_thread_vs_loader": round(one_thread / loader_rate, 2),
        f"ratio_device_cpu_{all_threads}_threads_vs_loader": round(all_rate / loader_rate, 2),
    })
    devices = [cpu] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if torch.cuda.is_available():
        cuda = device_throughput(device_synthesizer(procedural, devices[1]), images, devices[1])["samples_per_s"]
        result["procedural_device_cuda_samples_per_s"] = cuda
        result["ratio_device_cuda_vs_loader"] = round(cuda / loader_rate, 2)

    with tempfile.TemporaryDirectory() as folder:
        jpegs = write_jpeg_textures(Path(folder), procedural)
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        result["jpeg_loader_1_thread_samples_per_s"] = round(numpy_throughput(images, jpegs), 1)
        # The device path stays on one CPU thread here too (compute on one core, like the loader
        # worker); the pool's reads still use its load_threads.
        for device in devices:
            for label, pool in (("refreshing", {}), ("refreshing_no_prefetch", {"prefetch_textures": False}),
                                ("no_refresh", {"refresh_rate": 0.0})):
                measured = device_throughput(device_synthesizer(jpegs, device, **pool), images, device)
                for key, value in measured.items():
                    result[f"jpeg_device_{device.type}_{label}_{key}"] = value
            refreshing = result[f"jpeg_device_{device.type}_refreshing_samples_per_s"]
            frozen = result[f"jpeg_device_{device.type}_no_refresh_samples_per_s"]
            result[f"jpeg_device_{device.type}_refresh_overhead_pct"] = round(100 * (frozen / refreshing - 1), 1)
            unfetched = result[f"jpeg_device_{device.type}_refreshing_no_prefetch_samples_per_s"]
            result[f"ratio_jpeg_device_{device.type}_prefetch_vs_no_prefetch"] = round(refreshing / unfetched, 2)
    write_result("synthesis", result)
    return result


if __name__ == "__main__":
    main()
