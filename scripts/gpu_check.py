"""One pass over everything a GPU changes, with a markdown table of what happened (docs/gpu.md).

    python scripts/gpu_check.py                              # on the GPU: about 5 minutes at 256 x 256
    python scripts/gpu_check.py --device cpu --tiny          # the same checks at tiny sizes (CI, ~1 minute)

Checks, each a row (a failure is a row too, and the others still run): versions and the autocast
choice; training with anomalies simulated in the loader and on the device (steps/s, peak GPU
memory); fp16 with a gradient scaler; ``--compile`` (graph breaks); resume (losses against an
uninterrupted run); evaluation; every inference backend (images/s). The table is printed and
written to ``OUT/gpu_check.md`` (default ``outputs/gpu_check``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import traceback
from pathlib import Path

ROWS: list[tuple[str, str, str, str]] = []  # (check, result, seconds, details)


def check(name: str):
    """Run the decorated function as one row: ``ok`` with its details, or ``FAILED`` with the error."""

    def wrap(function):
        def run(*args, **kwargs):
            started = time.perf_counter()
            try:
                details = function(*args, **kwargs)
                status = "skipped" if str(details).startswith("skipped") else "ok"
            except Exception as error:  # one failed check must not hide the others
                traceback.print_exc()
                details, status = f"{type(error).__name__}: {error}".replace("|", "/").splitlines()[0], "FAILED"
            ROWS.append((name, status, f"{time.perf_counter() - started:.1f}", str(details)))
            print(f"[{status}] {name}: {details}", flush=True)

        return run

    return wrap


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (64 x 64, 4 steps): the CPU run in CI")
    parser.add_argument("--steps", type=int, help="training steps per run [30; --tiny 4]")
    parser.add_argument("--image-size", type=int, help="[256; --tiny 64]")
    parser.add_argument("--batch-size", type=int, help="[8; --tiny 2]")
    parser.add_argument("--out", default="outputs/gpu_check", help="work folder; the table goes to OUT/gpu_check.md")
    parser.add_argument("--compile-on-cpu", action="store_true", help="also try --compile on the CPU (minutes)")
    args = parser.parse_args(argv)
    tiny = args.tiny
    args.steps = args.steps or (4 if tiny else 30)
    args.image_size = args.image_size or (64 if tiny else 256)
    args.batch_size = args.batch_size or (2 if tiny else 8)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    from memseg_lite.core.runtime import autocast_settings, resolve_device
    from memseg_lite.datasets.demo.writer import write_demo_dataset
    from memseg_lite.training.config import TrainConfig
    from memseg_lite.training.trainer import read_log, train

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    data = out / "data"
    if not (data / "manifest.json").is_file():
        write_demo_dataset(data, categories=["button"], size=max(64, args.image_size), n_train=16 if args.tiny else 40,
                           n_test_good=4, n_per_defect=2, seed=0)

    def config(name: str, **overrides) -> TrainConfig:
        options = dict(data_root=str(data), category="button", out_dir=str(out / "runs" / name),
                       image_size=args.image_size, steps=args.steps, batch_size=args.batch_size,
                       memory_size=4 if args.tiny else 10, val_images=3, val_every=args.steps,
                       checkpoint_every=args.steps, backbone_weights="none", device=str(device), seed=0)
        options.update(overrides)
        return TrainConfig(**options)

    def peak_memory() -> str:
        return f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB" if cuda else ""

    def timed_train(cfg: TrainConfig, **kwargs):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        return train(cfg, progress=False, restart=not kwargs.get("resume", False), **kwargs)

    @check("versions and autocast")
    def versions():
        dtype, scaler = autocast_settings(device, "auto")
        where = torch.cuda.get_device_name(device) if cuda else platform.processor() or "CPU"
        cudnn = torch.backends.cudnn.version() if cuda else None
        return (f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
                f"cuDNN {cudnn}, {where}; amp=auto gives {dtype} (gradient scaler: {scaler})")

    @check("train, anomalies in the loader")
    def loader_run():
        result = timed_train(config("loader"))
        return f"{args.steps / result.seconds:.2f} steps/s (with validation){peak_memory()}"

    @check("train, anomalies on the device")
    def device_run():
        result = timed_train(config("device", synthesis="device"))
        return f"{args.steps / result.seconds:.2f} steps/s{peak_memory()}"

    @check("fp16 + gradient scaler")
    def fp16_run():
        if not cuda:
            return "skipped (the gradient scaler is for CUDA)"
        result = timed_train(config("fp16", amp="fp16"))
        skipped = sum(bool(r.get("skipped")) for r in result.history)
        return f"{args.steps / result.seconds:.2f} steps/s, {skipped} step(s) skipped by the scaler{peak_memory()}"

    @check("--compile (graph breaks)")
    def compile_run():
        if not cuda and not args.compile_on_cpu:
            return "skipped on the CPU (pass --compile-on-cpu)"
        from memseg_lite.network.model import build_memseg

        model = build_memseg(torch.rand(2, 3, args.image_size, args.image_size), backbone_weights="none",
                             device=device, seed=0)
        images = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
        explained = torch._dynamo.explain(model)(images)
        result = timed_train(config("compile", compile=True))
        return (f"{explained.graph_break_count} graph break(s), {explained.graph_count} graph(s); "
                f"{args.steps / result.seconds:.2f} steps/s including compilation")

    @check("resume (stopped halfway, continued)")
    def resume_run():
        whole = [r["loss"] for r in read_log(out / "runs" / "loader")[0]]
        halves = config("resumed")
        timed_train(halves, stop_after=max(1, args.steps // 2))
        timed_train(halves, resume=True)
        resumed = [r["loss"] for r in read_log(out / "runs" / "resumed")[0]]
        difference = float(np.max(np.abs(np.array(whole) - np.array(resumed))))
        if not cuda and difference != 0.0:
            raise AssertionError(f"a resumed CPU run must repeat exactly; largest loss difference {difference:g}")
        return f"largest loss difference vs the uninterrupted run: {difference:.3g} (bit-exact on the CPU only)"

    @check("evaluate (test split)")
    def evaluate_run():
        from memseg_lite.evaluation.evaluate import evaluate_checkpoint

        started = time.perf_counter()
        metrics = evaluate_checkpoint(out / "runs" / "loader" / "best.pt", data, "button", out / "evaluation",
                                      device=str(device), progress=False)
        return (f"image AUROC {metrics['image_auroc']:.3f}, pixel AUROC {metrics['pixel_auroc']:.3f} "
                f"in {time.perf_counter() - started:.1f} s (an untrained check: numbers only show it runs)")

    versions()
    loader_run()
    device_run()
    fp16_run()
    compile_run()
    resume_run()
    evaluate_run()

    from memseg_lite.deployment.inferencer import BACKENDS, Inferencer

    photos = [np.random.default_rng(i).integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)
              for i in range(2 * args.batch_size)]
    for backend in sorted(BACKENDS):
        @check(f"inference backend {backend}")
        def backend_run(backend=backend):
            inferencer = Inferencer(out / "runs" / "loader" / "best.pt", device=str(device), backend=backend,
                                    batch_size=args.batch_size)
            inferencer.predict(photos[: args.batch_size])  # warm-up (ONNX export, kernels)
            started = time.perf_counter()
            results = inferencer.predict(photos)
            seconds = time.perf_counter() - started
            return f"{len(results) / seconds:.1f} images/s, first score {results[0].score:.4f}"

        backend_run()

    table = ["| check | result | seconds | details |", "|---|---|---|---|"]
    table += [f"| {name} | {status} | {seconds} | {details} |" for name, status, seconds, details in ROWS]
    text = (f"# memseg-lite GPU check on {device} ({'tiny' if args.tiny else 'full'} sizes: {args.image_size} px, "
            f"{args.steps} steps, batch {args.batch_size})\n\n" + "\n".join(table) + "\n")
    (out / "gpu_check.md").write_text(text)
    print("\n" + text + f"\nwritten to {out / 'gpu_check.md'}")
    return 1 if any(status == "FAILED" for _, status, _, _ in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
