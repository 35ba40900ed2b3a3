"""The ``memseg-lite`` command line: one sub-command per job, each a thin wrapper over the package.

Errors a user can fix (a bad path or option, a full disk, a read-only or busy folder, a corrupt
file) print one line, ``memseg-lite COMMAND: error: ...``, naming the path, the cause and the
remedy; ``--debug`` (or ``MEMSEG_DEBUG=1``) adds the full traceback. Exit codes: 0 done, 1 such
an error, 2 a usage error (unknown option, from argparse), 130 stopped by Ctrl-C, 143 stopped by
SIGTERM (training saves a checkpoint first in both cases).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# The backends of memseg_lite.deployment.fast.BACKENDS (kept here so --help imports no torch; a test keeps them equal).
BACKEND_CHOICES = ("fast", "eager", "folded", "onnx", "openvino", "openvino-int8")
BACKEND_HELP = (
    "inference backend: fast (default) = folded on the CPU, eager on GPUs; eager = the model as trained; folded = "
    "PyTorch fp32 with batch norms folded, channels_last, images in parallel streams (the eager maps); onnx = ONNX "
    "Runtime; openvino = OpenVINO fp32; openvino-int8 = OpenVINO INT8 (NNCF, calibrated on the run's good images; "
    "approximate, see docs/deployment.md) [fast]"
)

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
    parser.add_argument("--force", action="store_true",
                        help="replace an existing demo set (refused if it holds files you added)")
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
    from memseg_lite.training.options import add_config_options
    from memseg_lite.training.presets import VARIANT_NAMES

    parser = subparsers.add_parser(
        "train",
        help="train MemSeg on one category (MVTec AD layout) or a plain folder of good images",
        description=(
            "Train MemSeg on the good images of one category. Writes RUN_DIR/checkpoint.pt (latest, "
            "resumable), RUN_DIR/best.pt (best on validation), RUN_DIR/log.jsonl and RUN_DIR/config.json. "
            "Unset options take the defaults shown (those of memseg_lite.training.config.TrainConfig, where the "
            "options are declared), or, with --resume, the values the run was started with."
        ),
    )
    # The TrainConfig options, each defaulting to None so --resume and --variant can tell what the user set.
    add_config_options(parser)
    option = parser.add_argument
    option("--variant", choices=VARIANT_NAMES,
           help="authors_code: the authors' released code's settings for the category (memory size, avgpool3, "
                "scales, selection rule; memseg_lite.training.presets); options you set win [paper]")
    option("--nproc", type=int, default=1,
           help="data-parallel processes on this machine (one per GPU; gloo on the CPU); --batch-size is the "
                "global batch, split evenly. Several machines: torchrun --nnodes ... -m memseg_lite.cli train [1]")
    option("--resume", action="store_true", help="continue RUN_DIR/checkpoint.pt")
    option("--restart", action="store_true",
           help="start over in a RUN_DIR that holds a run: deletes its run files (checkpoint.pt, best.pt, "
                "log.jsonl, config.json, split.json, thresholds.json), nothing else; without --resume or "
                "--restart a RUN_DIR holding any of them is refused")
    option("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from memseg_lite.training.distributed import launched_world
    from memseg_lite.training.options import given_options
    from memseg_lite.training.resolve import config_for_run, resolve_options
    from memseg_lite.training.trainer import check_run_folder, train

    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    options = resolve_options(given_options(args), variant=args.variant)
    # The run folder first, before any data is read: --resume needs a run there, a run is never
    # overwritten without --restart, and a folder another process trains in is refused.
    out_dir = Path(options["out_dir"])
    if launched_world()[0] == 0:  # under torchrun, rank 0 alone checks (and later owns) the folder
        check_run_folder(out_dir, resume=args.resume, restart=args.restart)
        _check_output_folder(out_dir, "--out")
    config = config_for_run(options, resume=args.resume)
    if args.nproc > 1 or launched_world()[1] > 1:
        return _run_train_distributed(args, config)
    result = train(config, resume=args.resume, progress=not args.no_progress, restart=args.restart)
    print(result)
    if result.interrupted and result.stop_signal == "SIGTERM":
        return 143
    return 130 if result.interrupted else 0


def _run_train_distributed(args: argparse.Namespace, config) -> int:
    """``--nproc N`` (N local workers through torchrun's launcher) or this process as one rank under torchrun."""
    from memseg_lite.training.distributed import LaunchStopped, fit_on_rank, launch_training, launched_world
    from memseg_lite.training.trainer import Trainer

    progress = not args.no_progress
    if launched_world()[1] > 1:
        if args.nproc > 1:
            raise ValueError("--nproc starts its own processes; under torchrun use --nproc_per_node instead")
        summaries = [fit_on_rank(Trainer, config.to_dict(), args.resume, None, progress, None, args.restart)]
    else:
        try:
            summaries = launch_training(Trainer, config, args.nproc, resume=args.resume, progress=progress,
                                        restart=args.restart)
        except LaunchStopped as stopped:
            print(stopped, file=sys.stderr)
            return 143 if stopped.signal_name == "SIGTERM" else 130
    mine = summaries[0]
    if mine["rank"] == 0:
        state = "interrupted" if mine["interrupted"] else "finished"
        print(f"training {state} at step {mine['step']} in {mine['seconds']:.0f} s on {mine['world_size']} "
              f"processes; run folder {mine['out_dir']}")
    if mine["interrupted"]:
        return 143 if mine.get("stop_signal") == "SIGTERM" else 130
    return 0


def _add_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint (or a run's best and last checkpoints) on a category's test split",
        description="Image AUROC, pixel AUROC and AU-PRO, and precision, recall and F1 at the checkpoint's "
                    "thresholds, on DATA_ROOT/CATEGORY/test, on --test-good/--test-defect folders, or (neither "
                    "given) on the test images the run was trained with; per-image scores and figures. "
                    "--checkpoint RUN_DIR (a run folder) or --also-last: the run's best.pt into OUT and its "
                    "checkpoint.pt (the last model) into OUT/last, with a side-by-side table (OUT/best_vs_last.md).",
    )
    _add_test_data_options(parser)
    parser.add_argument("--also-last", action="store_true",
                        help="also evaluate checkpoint.pt (the last model) beside --checkpoint, side by side")
    parser.add_argument("--out", type=Path, help="output folder [next to the checkpoint: RUN_DIR/evaluation]")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default=None, help=BACKEND_HELP)
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from memseg_lite.evaluation.evaluate import evaluate_checkpoint
    from memseg_lite.experiments.runs import best_vs_last_table, checkpoints_to_evaluate, evaluate_best_and_last

    # What to evaluate: a checkpoint file, or a run folder's best.pt and checkpoint.pt (also --also-last).
    targets = checkpoints_to_evaluate(args.checkpoint, also_last=args.also_last)
    if targets.note:
        print(targets.note, file=sys.stderr)
    run_dir, best, last = targets.run_dir, targets.best, targets.last
    out = args.out or run_dir / "evaluation"
    _check_output_folder(out, "--out")  # before the evaluation runs, not after

    from memseg_lite.deployment.fast import BACKENDS

    backend = BACKENDS[args.backend or "fast"]

    def evaluate(checkpoint: Path, folder: Path) -> dict:
        return evaluate_checkpoint(checkpoint, args.data_root, args.category, folder, device=args.device,
                                   batch_size=args.batch_size, figures=not args.no_figures,
                                   folders=_test_folders(args), backend=backend)

    if last is not None:
        best_metrics, last_metrics = evaluate_best_and_last(best, last, out, evaluate)
        table = best_vs_last_table(best_metrics, last_metrics)
        from memseg_lite.core.io import write_text_atomic

        write_text_atomic(out / "best_vs_last.md", table + "\n")
        print(table)
        print(f"written to {out} (best), {out / 'last'} (last) and {out / 'best_vs_last.md'}")
        return 0
    metrics = evaluate(best, out)

    def number(key: str) -> str:
        return "n/a" if metrics.get(key) is None else f"{metrics[key]:.4f}"

    print(
        f"{metrics['category']}: image AUROC {number('image_auroc')}, pixel AUROC {number('pixel_auroc')}, "
        f"AU-PRO {number('aupro')} ({metrics['n_images']} images, {metrics['images_per_second']:.1f} images/s)"
    )
    if metrics.get("threshold_source"):
        print(
            f"at the {metrics['threshold_source']} threshold {metrics['image_threshold']:.4f}: precision "
            f"{number('image_precision')}, recall {number('image_recall')}, F1 {number('image_f1')}"
            + (f"; pixel F1 {number('pixel_f1')}" if metrics.get("pixel_f1") is not None else "")
        )
    print(f"written to {out}")
    return 0


def _add_test_data_options(parser) -> None:
    """The checkpoint and the labelled images of evaluate and calibrate."""
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="checkpoint file (RUN_DIR/best.pt or checkpoint.pt)"
    )
    parser.add_argument("--data-root", type=Path, help="data folder in the MVTec AD layout [the run's]")
    parser.add_argument("--category", help="category folder name [the run's]")
    parser.add_argument("--test-good", dest="test_good_dir", type=Path, help="a plain folder of good test images")
    parser.add_argument("--test-defect", dest="test_defect_dir", type=Path,
                        help="a plain folder of defective test images (sub-folders = defect types)")
    parser.add_argument(
        "--masks", dest="mask_dir", type=Path, help="masks of the defective images [none: image level only]"
    )


def _test_folders(args: argparse.Namespace) -> dict | None:
    folders = {name: getattr(args, name) for name in ("test_good_dir", "test_defect_dir", "mask_dir")}
    return folders if any(folders.values()) else None


def _fraction(name: str, low_open: bool):
    """An argparse type: a number in (0, 1] (``low_open``) or in [0, 1); the error names the option."""
    interval = "(0, 1]" if low_open else "[0, 1)"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not ((0 < value <= 1) if low_open else (0 <= value < 1)):
            raise argparse.ArgumentTypeError(f"{name} must be a number in {interval}, e.g. 0.95 or 0.05; got {text!r}")
        return value

    return parse


def _add_calibrate(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="decision thresholds from labelled good and defective images (F1-optimal or an operating point)",
        description="Choose the image threshold (and the pixel threshold, when there are masks) with the best F1 "
                    "on labelled images (or the image threshold by --target-recall / --max-false-alarm-rate), and "
                    "store them in the checkpoint and, when it is the run's deployed model (best.pt, or the only "
                    "checkpoint), in thresholds.json beside it. Numbers evaluated afterwards on the same images are "
                    "optimistic: calibrate on images you do not report on.",
    )
    _add_test_data_options(parser)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default=None, help=BACKEND_HELP)
    operating_point = parser.add_mutually_exclusive_group()
    operating_point.add_argument("--target-recall", type=_fraction("--target-recall", low_open=True), metavar="R",
                                 help="image threshold: the highest one that finds at least R (0 < R <= 1) of the "
                                      "defective images [F1-optimal]")
    operating_point.add_argument("--max-false-alarm-rate", type=_fraction("--max-false-alarm-rate", low_open=False),
                                 metavar="F", help="image threshold: the lowest one that flags at most F (0 <= F < 1) "
                                                   "of the good images [F1-optimal]")
    parser.set_defaults(handler=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> int:
    from memseg_lite.deployment.fast import BACKENDS
    from memseg_lite.evaluation.evaluate import calibrate_checkpoint, calibration_targets

    backend = {"backend": BACKENDS[args.backend or "fast"]}
    import warnings

    from memseg_lite.evaluation.thresholds import DegenerateThresholdWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateThresholdWarning)  # printed below, one line each
        # The progress bar only on a terminal: in a log its redraws would start the warning lines.
        thresholds = calibrate_checkpoint(args.checkpoint, args.data_root, args.category, device=args.device,
                                          batch_size=args.batch_size, progress=sys.stderr.isatty(),
                                          folders=_test_folders(args),
                                          target_recall=args.target_recall,
                                          max_false_alarm_rate=args.max_false_alarm_rate, **backend)
    details = thresholds.details
    print(
        f"image threshold {thresholds.image:.4f} ({details['image_rule']}: precision {details['image_precision']:.3f}, "
        f"recall {details['image_recall']:.3f}, false-alarm rate {details['image_false_alarm_rate']:.3f}, F1 "
        f"{details['image_f1']:.3f} on {details['n_good']} good + {details['n_defective']} defective images), "
        f"pixel threshold {thresholds.pixel:.4f}"
    )
    for message in details["warnings"]:
        print(f"warning: calibrate {args.checkpoint}: {message}", file=sys.stderr)
    print(f"stored in {' and '.join(str(path) for path in calibration_targets(args.checkpoint))}")
    return 0


def _add_predict(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="verdicts, scores, defect masks and overlays for image files, folders and globs",
        description="Predict images with a trained checkpoint: per image a verdict (normal / defective), score, "
                    "normalised score (threshold at 0.5), a binary mask PNG and an overlay, in --out with "
                    "predictions.jsonl and predictions.csv. A re-run replaces only the files predict wrote in --out "
                    "(no stale results; your own files there are kept); input images inside --out are refused. "
                    "Unreadable images are reported and skipped. Exit code: 0 all predicted, 3 some images "
                    "failed (the rest written), 1 none could be predicted.",
    )
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns (quote them: 'photos/*.jpg')")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("outputs/predictions"), help="output folder")
    parser.add_argument("--recursive", action="store_true", help="also the images in sub-folders of a folder")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="fast", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of the backend [torch's default]; 1 is fastest for one image per call on a "
                             "shared CPU")
    parser.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from memseg_lite.deployment.predict import predict_images

    report = predict_images(args.images, args.checkpoint, args.out, device=args.device, batch_size=args.batch_size,
                            recursive=args.recursive, backend=args.backend, threads=args.threads)
    width = max(len(str(r.path)) for r in report.results)
    for result in report.results:
        verdict = result.verdict or "(no thresholds)"
        extra = f"  normalised {result.normalised_score:.3f}" if result.normalised_score is not None else ""
        print(f"{str(result.path):<{width}}  {verdict:<10} score {result.score:.4f}{extra}")
    defective = sum(r.verdict == "defective" for r in report.results)
    print(
        f"{len(report.results)} predicted ({defective} defective), {len(report.failed)} failed; written to {args.out}"
    )
    if report.results and report.results[0].verdict is None:
        print("the checkpoint has no thresholds: retrain, or run memseg-lite calibrate", file=sys.stderr)
    return report.exit_code


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
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a category (MVTec AD) or DTD's folders that already exist; nothing else is touched",
    )
    parser.set_defaults(handler=_run_download)


def _run_download(args: argparse.Namespace) -> int:
    from memseg_lite.datasets.download import download_dtd, download_mvtec

    checksum = {"sha256": args.sha256} if args.sha256 else {}
    if args.dataset == "mvtec":
        dest = download_mvtec(args.dest or Path("data/mvtec"), category=args.category, archive=args.archive,
                              url=args.url, keep_archive=args.keep_archive, force=args.force, **checksum)
    else:
        if args.category:
            raise ValueError("--category only applies to mvtec")
        dest = download_dtd(args.dest or Path("data/dtd"), archive=args.archive, url=args.url,
                            keep_archive=args.keep_archive, force=args.force, **checksum)
    print(f"ready: {dest}")
    return 0


def _add_reproduce(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="train + evaluate every MVTec AD category present (resumable)",
        description="Train and evaluate each category, skipping finished ones; writes results.md/.csv "
                    "with the paper's and re-implementations' numbers beside.",
    )
    from memseg_lite.training.options import add_config_options

    parser.add_argument("--data-root", type=Path, default=Path("data/mvtec"), help="MVTec AD folder [data/mvtec]")
    parser.add_argument("--categories", nargs="+", help="categories to run [all present]")
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce"), help="the study's folder [runs/reproduce]")
    add_config_options(parser, REPRODUCE_OPTIONS)
    parser.add_argument("--jobs", type=int, default=1,
                        help="categories trained at the same time: one per GPU, or processes sharing the CPU "
                             "cores; under torchrun each rank takes its share instead [1]")
    parser.set_defaults(handler=_run_reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    from memseg_lite.experiments.reproduce import reproduce
    from memseg_lite.training.options import given_options

    rows = reproduce(args.data_root, args.categories, args.out, jobs=args.jobs, **given_options(args))
    if rows:  # under torchrun only rank 0 writes the table
        print(f"results: {args.out / 'results.md'}")
    return 0


#: The TrainConfig options ``reproduce`` passes to every category's run (the paper's settings otherwise).
REPRODUCE_OPTIONS = ("steps", "device", "backbone_weights", "num_workers", "amp")
#: The TrainConfig options ``ablate`` passes to every run (the variants set the others).
ABLATE_OPTIONS = ("steps", "image_size", "batch_size", "device", "backbone_weights", "texture_root", "num_workers",
                  "memory_size", "val_images", "val_anomalies_per_image", "val_every", "checkpoint_every", "top_k",
                  "lr", "amp")
def _add_ablate(subparsers) -> None:
    from memseg_lite.experiments.variants import DEFAULT_VARIANTS, VARIANTS
    from memseg_lite.training.options import add_config_options

    parser = subparsers.add_parser(
        "ablate", help="train + evaluate ablation variants per seed (resumable), one results table",
        description=f"Train each variant ({', '.join(VARIANTS)}) per seed into OUT/<variant>/seed<k>, evaluate "
                    "each on the test split and write OUT/results.md and OUT/results.csv (mean and spread over "
                    "seeds). Finished runs are skipped, interrupted ones resumed. Unset options take the defaults "
                    "shown (memseg_lite.training.config.TrainConfig).",
    )
    parser.add_argument("--data-root", type=Path, required=True, help="data folder in the MVTec AD layout")
    parser.add_argument("--category", required=True, help="category folder name")
    parser.add_argument("--variants", help=f"comma-separated variant names [{','.join(DEFAULT_VARIANTS)}]")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds [0]")
    parser.add_argument("--out", type=Path, required=True, help="the study's folder")
    add_config_options(parser, ABLATE_OPTIONS,
                       notes={"memory_size": "the authors_code variant sets its own per category"})
    parser.add_argument("--figures", action="store_true", help="also write each run's evaluation figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_run_ablate)


def _run_ablate(args: argparse.Namespace) -> int:
    from memseg_lite.experiments.ablate import ablate
    from memseg_lite.training.options import given_options

    ablate(args.data_root, args.category, args.out, variants=args.variants, seeds=args.seeds,
           progress=not args.no_progress, figures=args.figures, **given_options(args))
    print(f"results: {args.out / 'results.md'}")
    return 0


def _add_grade(subparsers) -> None:
    parser = subparsers.add_parser(
        "grade", help="grade students' notebooks with the instructor's hidden tests (student x exercise points)",
        description="Execute each notebook with nbclient in a throwaway copy (scrubbed environment, CPU, offline, "
                    "within --timeout seconds), then run the hidden tests of its chapter on the functions the "
                    "student wrote; what the notebook prints does not count. Prints one row per student (the "
                    "notebook's folder) with the points per exercise; a notebook that cannot be read or run gets "
                    "its own error row and the others are graded.",
    )
    parser.add_argument("notebooks", nargs="+", type=Path, metavar="NOTEBOOK.ipynb", help="students' notebooks")
    parser.add_argument("--csv", type=Path, help="also write the table (one row per student) to this CSV file")
    parser.add_argument("--tests", type=Path, help="the hidden tests folder [instructor/hidden_tests of this checkout]")
    parser.add_argument("--data", type=Path, help="data folder copied as ../data beside each notebook's working copy "
                                                  "[the notebook's ../data, else this checkout's data]")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per notebook [600]")
    parser.add_argument("--profile", choices=("smoke", "demo", "full"), default="smoke",
                        help="MEMSEG_PROFILE for the runs [smoke: CI sizes, quickest]")
    parser.add_argument("--track", choices=("worked", "assignment"), default="worked",
                        help="worked: the exercises; assignment: the core pieces too (assignments/ notebooks) [worked]")
    parser.set_defaults(handler=_run_grade)


def _run_grade(args: argparse.Namespace) -> int:
    from memseg_lite.teaching.grading import GradingUnavailableError, format_table, grade_notebooks, write_csv

    try:
        grades = grade_notebooks(args.notebooks, tests=args.tests, data=args.data, timeout=args.timeout,
                                 profile=args.profile, track=args.track)
    except (GradingUnavailableError, ValueError) as error:
        print(f"memseg-lite grade: error: {error}", file=sys.stderr)
        return 1
    print(format_table(grades))
    if args.csv is not None:
        print(f"csv: {write_csv(grades, args.csv)}")
    return 0


def _add_handout(subparsers) -> None:
    parser = subparsers.add_parser(
        "handout", help="write the student zip (notebooks, package, docs; no solutions, instructor files or tests)",
        description="Pack the student edition of the workbook into a zip: notebooks/, the package, the student "
                    "docs and the install files. solutions/, instructor/ (sources, hidden tests), tests/ and "
                    "benchmarks/ stay out. Refuses stale student editions (run make editions first).",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/handout.zip"), help="zip to write [outputs/handout.zip]"
    )
    parser.set_defaults(handler=_run_handout)


def _run_handout(args: argparse.Namespace) -> int:
    from memseg_lite.teaching.handout import write_handout

    try:
        print(f"handout: {write_handout(args.out)}")
    except (ValueError, FileNotFoundError) as error:
        print(f"memseg-lite handout: error: {error}", file=sys.stderr)
        return 1
    return 0


def _add_export(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export a checkpoint for deployment (ONNX or OpenVINO, optionally INT8)",
        description="Write the checkpoint's model with its preprocessing and decision built in: input uint8 "
                    "[batch, H, W, 3] RGB letterboxed (or stretched) to the network size; outputs anomaly_map "
                    "[batch, H, W], score [batch], normalised_score [batch], mask uint8 [batch, H, W], defective "
                    "[batch]; memory bank and thresholds inside, metadata memseg.* (docs/deployment.md).",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file (RUN_DIR/best.pt)")
    parser.add_argument("--format", choices=("onnx", "openvino"), default="onnx", help="export format [onnx]")
    parser.add_argument("--out", type=Path,
                        help="output file [the checkpoint's path with .onnx, or .xml (+ .bin) for openvino]")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version [17]")
    parser.add_argument("--thresholds", type=Path, help="a thresholds.json to build in [the checkpoint's own]")
    parser.add_argument("--int8", action="store_true",
                        help="openvino only: post-training INT8 by NNCF, calibrated on the run's good images")
    parser.add_argument("--calibration-data", type=Path, help="--int8: a folder of good images [the run's own]")
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    if args.format == "onnx":
        if args.int8 or args.calibration_data is not None:
            raise ValueError("--int8 / --calibration-data need --format openvino")
        from memseg_lite.deployment.export import export_onnx, read_metadata

        out = export_onnx(args.checkpoint, args.out, opset=args.opset, thresholds=args.thresholds)
        metadata = read_metadata(out)
        size = out.stat().st_size
    else:
        from memseg_lite.deployment.openvino_runtime import export_openvino, read_openvino_metadata

        out = export_openvino(args.checkpoint, args.out, int8=args.int8, calibration=args.calibration_data,
                              thresholds=args.thresholds)
        metadata = read_openvino_metadata(out)
        size = out.stat().st_size + out.with_suffix(".bin").stat().st_size
    print(f"exported {args.checkpoint} -> {out} ({size / 1e6:.1f} MB, input uint8 {metadata['image_size']} x 3, "
          f"image threshold {metadata['image_threshold']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memseg-lite",
        description="MemSeg rebuilt from scratch: demo data, training, evaluation and prediction.",
    )
    from memseg_lite import __version__

    parser.add_argument("--version", action="version", version=f"memseg-lite {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (or MEMSEG_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo_data(subparsers)
    _add_train(subparsers)
    _add_evaluate(subparsers)
    _add_calibrate(subparsers)
    _add_predict(subparsers)
    _add_download(subparsers)
    _add_reproduce(subparsers)
    _add_ablate(subparsers)
    _add_grade(subparsers)
    _add_handout(subparsers)
    _add_export(subparsers)
    for subparser in subparsers.choices.values():  # --debug also after the sub-command
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                               help="show the full traceback of an error (or MEMSEG_DEBUG=1)")
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors whose message already says what went wrong and what to do: no traceback needed."""
    from memseg_lite.datasets.download import DownloadError
    from memseg_lite.network.encoder import BackboneUnavailableError
    from memseg_lite.simulation.synthesis import SimulationError
    from memseg_lite.training.trainer import NonFiniteLossError, RunFolderBusyError

    return (NonFiniteLossError, DownloadError, BackboneUnavailableError, SimulationError, RunFolderBusyError)


# Sub-commands whose options name output FOLDERS, checked before any work starts
# (:func:`_check_output_folder`). A sub-command whose --out is a file is not listed.
OUTPUT_FOLDER_OPTIONS = {
    "demo-data": {"out": "--out"},
    "train": {"out_dir": "--out"},
    "evaluate": {"out": "--out"},
    "predict": {"out": "--out"},
    "download": {"dest": "--dest"},
    "reproduce": {"out": "--out"},
    "ablate": {"out": "--out"},
}


def _check_output_folder(path: str | os.PathLike, option: str = "--out") -> None:
    """Fail at once, in one line, if ``path`` cannot become a folder we write to.

    A file at ``path`` (or at one of its parents) is an error; so is a folder we cannot write in
    (read-only file system, no permission): the nearest existing folder gets a temporary file,
    removed at once. Nothing is created.
    """
    import tempfile

    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        if existing == path:
            raise NotADirectoryError(f"{option} {path} is a file, not a folder; choose another {option} (a folder)")
        raise NotADirectoryError(f"{option} {path}: {existing} is a file, not a folder; choose another {option}")
    import errno

    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".memseg-lite-write-test-")
    except OSError as error:
        if error.errno in (
            errno.EACCES,
            errno.EPERM,
            errno.EROFS,
            errno.ENOSPC,
            getattr(errno, "EDQUOT", errno.ENOSPC),
        ):
            raise OSError(error.errno, error.strerror, str(existing)) from None
        # The folder exists, but files cannot be made in it (/proc, /sys, some network mounts):
        # the OS's own word ("no such file") would wrongly say that the folder is missing.
        raise OSError(
            f"{option} {path}: files cannot be created in the existing folder {existing} "
            f"({errno.errorcode.get(error.errno, error.errno)}); choose a folder on an ordinary writable disk"
        ) from None
    os.close(handle)
    os.unlink(probe)


# ... and options that name output FILES: not a folder, in a folder we can write to.
OUTPUT_FILE_OPTIONS = {
    "export": {"out": "--out"},
    "grade": {"csv": "--csv"},
    "handout": {"out": "--out"},
}


def _check_output_file(path: str | os.PathLike, option: str) -> None:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a folder, not a file; pass a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{option} {path}: {folder} is a file, not a folder; choose another {option}")
    _check_output_folder(folder, option)  # can we write there?


def _check_paths(args: argparse.Namespace) -> None:
    """The checks every sub-command gets before its work starts: data root and output folders."""
    data_root = getattr(args, "data_root", None)
    if data_root is not None and Path(data_root).exists() and not Path(data_root).is_dir():
        raise NotADirectoryError(
            f"--data-root {data_root} is a file, not a folder; point it at a folder in the MVTec AD layout "
            "(unpack an archive with `memseg-lite download mvtec --archive FILE`)"
        )
    for name, option in OUTPUT_FOLDER_OPTIONS.get(args.command, {}).items():
        if getattr(args, name, None) is not None:
            _check_output_folder(getattr(args, name), option)
    for name, option in OUTPUT_FILE_OPTIONS.get(args.command, {}).items():
        if getattr(args, name, None) is not None:
            _check_output_file(getattr(args, name), option)


def _describe_os_error(error: OSError) -> str:
    """One line for an error from the operating system: the cause, the path, the remedy."""
    import errno

    path = str(error.filename) if error.filename is not None else None
    if path is not None and error.filename2 is not None:
        path = f"{path} -> {error.filename2}"
    where = f": {path}" if path else ""
    code = error.errno
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}; check its owner and permissions, or choose a folder you can write to"
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return (f"no space left on device{' while writing ' + path if path else ''}; free space "
                "(or choose a folder on another disk) and try again")
    if code == errno.EROFS:
        return f"read-only file system{where}; choose a folder on a writable disk"
    if code == errno.ENOENT:
        return f"no such file or folder{where}; check the path"
    if code == errno.ENOTDIR:
        return f"{path}: a part of this path is a file, not a folder; check the path"
    if code == errno.EISDIR:
        return f"{path} is a folder, not a file; pass a file"
    if code == errno.EEXIST:
        return (f"{path} already exists and is in the way (a file where a folder is needed?); "
                "move it or choose another path")
    cause = (error.strerror or os.strerror(code)).lower()
    return f"{cause}{where} ({errno.errorcode.get(code, code)}); check the disk and the path"


def _error_line(error: BaseException, args: argparse.Namespace) -> str:
    """The one line a user-facing error prints (newlines folded)."""
    import gzip
    import lzma
    import pickle
    import tarfile
    import zipfile
    import zlib

    archive = getattr(args, "archive", None)
    if isinstance(
        error, (tarfile.TarError, zipfile.BadZipFile, EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile)
    ):
        what = f"the archive {archive}" if archive else "an archive"
        text = (f"cannot read {what}: {type(error).__name__}: {error}; the file is corrupt or truncated "
                "(an interrupted download?): download it again")
    elif isinstance(error, pickle.UnpicklingError):
        text = (f"cannot read a saved file: {type(error).__name__}: {error}; it is corrupt, truncated, "
                "or not a memseg-lite file")
    elif isinstance(error, OSError) and error.errno is not None:  # from the OS: errno, strerror, path
        text = _describe_os_error(error)
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def _debug_wanted(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("MEMSEG_DEBUG", "").lower() not in (
        "",
        "0",
        "false",
        "no",
    )


def main(argv: list[str] | None = None) -> int:
    import lzma
    import pickle
    import tarfile
    import traceback
    import zipfile
    import zlib

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        _check_paths(args)  # output folders and data roots, before any long work starts
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, EOFError, tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, zlib.error,
            pickle.UnpicklingError, *_user_errors()) as error:
        # Expected user-facing failures: one clear line; the traceback only on request.
        if _debug_wanted(args):
            traceback.print_exc()
        print(f"memseg-lite {args.command}: error: {_error_line(error, args)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
