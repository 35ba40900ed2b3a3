"""The ``memseg-lite`` command line: one sub-command per job, each a thin wrapper over the package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _add_demo_data(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo-data",
        help="write the procedural demo categories in the MVTec AD layout",
        description="Write small procedural categories in the MVTec AD folder layout, deterministically from --seed.",
    )
    parser.add_argument("--out", type=Path, default=Path("data/demo"), help="output folder (default: data/demo)")
    parser.add_argument("--categories", nargs="+", default=None, help="categories to write (default: all)")
    parser.add_argument("--size", type=int, default=256, help="image side length in pixels (default: 256)")
    parser.add_argument("--train", type=int, default=60, dest="n_train", help="train/good images per category")
    parser.add_argument("--test-good", type=int, default=20, dest="n_test_good", help="test/good images per category")
    parser.add_argument("--per-defect", type=int, default=10, dest="n_per_defect", help="test images per defect type")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    parser.set_defaults(handler=_run_demo_data)


def _run_demo_data(args: argparse.Namespace) -> int:
    from memseg_lite.datasets.demo.writer import write_demo_dataset

    summary = write_demo_dataset(
        args.out,
        categories=args.categories,
        size=args.size,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_per_defect=args.n_per_defect,
        seed=args.seed,
        force=args.force,
    )
    print(summary)
    return 0


def _add_train(subparsers) -> None:
    from memseg_lite.network.selection import SELECTION_RULES
    from memseg_lite.training.config import AMP_MODES, TrainConfig

    defaults = TrainConfig()
    parser = subparsers.add_parser(
        "train",
        help="train MemSeg on one category (MVTec AD layout)",
        description=(
            "Train MemSeg on the good images of one category. Writes RUN_DIR/checkpoint.pt (latest, "
            "resumable), RUN_DIR/best.pt (best on validation), RUN_DIR/log.jsonl and RUN_DIR/config.json. "
            "Unset options take the defaults shown (from memseg_lite.training.config.TrainConfig), or, with --resume, "
            "the values the run was started with."
        ),
    )
    # Every option defaults to None so --resume can tell what the user actually set.
    option = parser.add_argument
    option("--data-root", dest="data_root", help=f"data folder in the MVTec AD layout [{defaults.data_root}]")
    option("--category", help=f"category folder name [{defaults.category}]")
    option("--out", dest="out_dir", type=str, help="run folder [runs/<category>]")
    option("--steps", type=int, help=f"optimisation steps [{defaults.steps}]")
    option("--batch-size", dest="batch_size", type=int, help=f"images per step [{defaults.batch_size}]")
    option("--image-size", dest="image_size", type=int, help=f"resize images to this side [{defaults.image_size}]")
    option("--center-crop", dest="center_crop", type=int, help="then center-crop to this side [off]")
    option("--lr", type=float, help=f"peak learning rate (AdamW) [{defaults.lr}]")
    option("--weight-decay", dest="weight_decay", type=float, help=f"AdamW weight decay [{defaults.weight_decay}]")
    option("--memory-size", dest="memory_size", type=int, help=f"good images in the memory bank [{defaults.memory_size}]")
    option("--val-images", dest="val_images", type=int, help=f"held-out good images for validation [{defaults.val_images}]")
    option("--val-every", dest="val_every", type=int, help=f"validate every N steps [{defaults.val_every}]")
    option("--checkpoint-every", dest="checkpoint_every", type=int, help=f"save every N steps [{defaults.checkpoint_every}]")
    option("--backbone-weights", dest="backbone_weights",
           help="auto | imagenet | none | PATH to a ResNet18 state dict [auto]")
    option("--selection-rule", dest="selection_rule", choices=SELECTION_RULES, help="memory selection rule [paper]")
    option("--texture-root", dest="texture_root", help=f"DTD folder for texture anomalies [{defaults.texture_root}]")
    option("--foreground", help="foreground setting: a category name, 'otsu' or 'none' [the category's own]")
    option("--device", help="auto | cpu | cuda | cuda:N | mps [auto]")
    option("--synthesis", choices=("loader", "device"),
           help="simulate anomalies in the DataLoader (numpy) or batched on the training device [loader]")
    option("--amp", choices=AMP_MODES, help="autocast mode [auto: bf16/fp16 on CUDA, off on CPU]")
    option("--compile", action=argparse.BooleanOptionalAction, default=None, help="use torch.compile [off]")
    option("--workers", dest="num_workers", type=int, help="DataLoader worker processes [0]")
    option("--seed", type=int, help=f"random seed [{defaults.seed}]")
    option("--resume", action="store_true", help="continue RUN_DIR/checkpoint.pt")
    option("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_train)


TRAIN_OPTION_NAMES = (
    "data_root", "category", "out_dir", "steps", "batch_size", "image_size", "center_crop", "lr",
    "weight_decay", "memory_size", "val_images", "val_every", "checkpoint_every", "backbone_weights",
    "selection_rule", "texture_root", "foreground", "device", "amp", "compile", "num_workers", "seed", "synthesis",
)


def _run_train(args: argparse.Namespace) -> int:
    import json

    from memseg_lite.training.config import TrainConfig
    from memseg_lite.training.trainer import CHECKPOINT_NAME, train

    given = {name: getattr(args, name) for name in TRAIN_OPTION_NAMES if getattr(args, name) is not None}
    category = given.get("category", TrainConfig.category)
    out_dir = Path(given.get("out_dir", f"runs/{category}"))
    given["out_dir"] = str(out_dir)
    saved_config = out_dir / "config.json"
    if args.resume and (out_dir / CHECKPOINT_NAME).is_file() and saved_config.is_file():
        # Start from the settings the run was made with; explicit options must not contradict them.
        base = json.loads(saved_config.read_text())
        config = TrainConfig.from_dict({**base, **given})
    else:
        config = TrainConfig(**given)
    result = train(config, resume=args.resume, progress=not args.no_progress)
    print(result)
    return 130 if result.interrupted else 0


def _add_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a category's test split",
        description="Image AUROC, pixel AUROC and AU-PRO on DATA_ROOT/CATEGORY/test, with per-image scores and figures.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file (RUN_DIR/best.pt or checkpoint.pt)")
    parser.add_argument("--data-root", type=Path, default=Path("data/demo"), help="data folder in the MVTec AD layout")
    parser.add_argument("--category", required=True, help="category folder name")
    parser.add_argument("--out", type=Path, help="output folder [next to the checkpoint: RUN_DIR/evaluation]")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from memseg_lite.evaluation.evaluate import evaluate_checkpoint

    out = args.out or args.checkpoint.parent / "evaluation"
    metrics = evaluate_checkpoint(
        args.checkpoint, args.data_root, args.category, out, device=args.device,
        batch_size=args.batch_size, figures=not args.no_figures,
    )
    print(
        f"{args.category}: image AUROC {metrics['image_auroc']:.4f}, pixel AUROC {metrics['pixel_auroc']:.4f}, "
        f"AU-PRO {metrics['aupro']:.4f} ({metrics['n_images']} images, {metrics['images_per_second']:.1f} images/s)"
    )
    print(f"written to {out}")
    return 0


def _add_predict(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="anomaly maps and scores for any images",
        description="Score images with a trained checkpoint; writes overlays and scores.csv to --out.",
    )
    parser.add_argument("images", nargs="+", type=Path, help="image files")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("outputs/predictions"), help="output folder")
    parser.add_argument("--device", default="auto")
    parser.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from memseg_lite.deployment.predict import predict_images

    predictions = predict_images(args.images, args.checkpoint, args.out, device=args.device)
    width = max(len(str(p.path)) for p in predictions)
    for prediction in predictions:
        print(f"{str(prediction.path):<{width}}  score {prediction.score:.4f}  -> {prediction.overlay_path}")
    return 0


def _add_download(subparsers) -> None:
    parser = subparsers.add_parser(
        "download", help="download MVTec AD or DTD (resumable, checksum-verified where a checksum is published)",
        description="Download and unpack MVTec AD or DTD, resuming partial downloads and checking the sha256 of "
                    "the full MVTec AD archive and of DTD (single MVTec categories have no published checksum: "
                    "their folder layout is checked and their sha256 printed). Offline, it says how to get the "
                    "archive by hand.",
    )
    parser.add_argument("dataset", choices=("mvtec", "dtd"))
    parser.add_argument("--dest", type=Path, help="destination folder [data/mvtec or data/dtd]")
    parser.add_argument("--category", help="MVTec AD: only this category")
    parser.add_argument("--archive", type=Path, help="use an archive already on disk instead of downloading")
    parser.add_argument("--url", help="download from this URL (a mirror) instead of the known ones")
    parser.add_argument("--sha256", help="expected checksum when --url points at a repackaged archive")
    parser.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive")
    parser.set_defaults(handler=_run_download)


def _run_download(args: argparse.Namespace) -> int:
    from memseg_lite.datasets.download import download_dtd, download_mvtec

    checksum = {"sha256": args.sha256} if args.sha256 else {}
    if args.dataset == "mvtec":
        dest = download_mvtec(args.dest or Path("data/mvtec"), category=args.category, archive=args.archive,
                              url=args.url, keep_archive=args.keep_archive, **checksum)
    else:
        if args.category:
            raise ValueError("--category only applies to mvtec")
        dest = download_dtd(args.dest or Path("data/dtd"), archive=args.archive, url=args.url,
                            keep_archive=args.keep_archive, **checksum)
    print(f"ready: {dest}")
    return 0


def _add_reproduce(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="train + evaluate every MVTec AD category present (resumable)",
        description="Train and evaluate each category, skipping finished ones; writes results.md/.csv "
                    "with the paper's and re-implementations' numbers beside.",
    )
    parser.add_argument("--data-root", type=Path, default=Path("data/mvtec"))
    parser.add_argument("--categories", nargs="+", help="categories to run [all present]")
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, help="training steps per category [5000]")
    parser.add_argument("--backbone-weights", default="auto", help="auto | imagenet | none | PATH")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers [4]")
    parser.set_defaults(handler=_run_reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    from memseg_lite.experiments.reproduce import reproduce

    overrides = {"device": args.device, "backbone_weights": args.backbone_weights, "num_workers": args.workers}
    if args.steps is not None:
        overrides["steps"] = args.steps
    reproduce(args.data_root, args.categories, args.out, **overrides)
    print(f"results: {args.out / 'results.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memseg-lite",
        description="MemSeg rebuilt from scratch: demo data, training, evaluation and prediction.",
    )
    from memseg_lite import __version__

    parser.add_argument("--version", action="version", version=f"memseg-lite {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo_data(subparsers)
    _add_train(subparsers)
    _add_evaluate(subparsers)
    _add_predict(subparsers)
    _add_download(subparsers)
    _add_reproduce(subparsers)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors whose message already says what went wrong and what to do: no traceback needed."""
    from memseg_lite.datasets.download import DownloadError
    from memseg_lite.network.encoder import BackboneUnavailableError
    from memseg_lite.simulation.synthesis import SimulationError
    from memseg_lite.training.trainer import NonFiniteLossError

    return (NonFiniteLossError, DownloadError, BackboneUnavailableError, SimulationError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, *_user_errors()) as error:
        # Expected user-facing failures: one clear line, no traceback.
        print(f"memseg-lite {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
