"""The trainer: simulated anomalies in, checkpoints out; resumable and reproducible.

What one step does (notebook 08 writes it out by hand first)::

    images, masks = next(batches)            # good images + simulated anomalies, masks M
    logits = model(images)                   # [B, 2, H, W]
    loss = 0.6 * L1(softmax(logits)[:, 1], M) + 0.4 * Focal(logits, M; gamma=4)
    loss.backward(); optimizer.step(); scheduler.step()

Files in the run folder:

- ``config.json``   the :class:`TrainConfig` used
- ``split.json``    which train/good files went to the memory bank, training and validation
- ``log.jsonl``     one JSON line per step (loss parts, learning rate) and per validation (loss,
  image AUROC, pixel AUROC, pixel AP, AU-PRO, the selection score, seconds)
- ``checkpoint.pt`` the latest state (model, optimiser, scheduler, memory bank, step, RNG);
  ``--resume`` continues from it; once training ends, the *last* model
- ``best.pt``       the model with the best validation score (``TrainConfig.selection_metric``,
  default the mean of pixel average precision and AU-PRO; on held-out good images with synthetic anomalies,
  ``TrainConfig.val_recipe``; the test split is never used)
- ``.memseg-lite.lock`` / ``.memseg-lite.owner.json`` while a run trains: one process owns the
  folder (a second one is refused with the first one's pid)
- ``thresholds.json`` the image and pixel decision thresholds, chosen on the validation set with
  the best model when training ends (also stored in ``best.pt``; ``checkpoint.pt`` stores the
  thresholds chosen the same way for the last model; rule in :mod:`memseg_lite.evaluation.thresholds`;
  ``memseg-lite calibrate`` replaces them using labelled defects)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from torch.utils.data import DataLoader

from memseg_lite.core.checkpoint import load_checkpoint, save_checkpoint
from memseg_lite.core.io import missing_folders, remove_empty_folders, write_text_atomic
from memseg_lite.core.runtime import autocast_settings, resolve_device, seed_everything
from memseg_lite.core.transforms import normalise_batch
from memseg_lite.datasets.folder import files_for_config
from memseg_lite.datasets.mvtec import images_to_tensor, load_images, valid_region
from memseg_lite.training.config import TrainConfig
from memseg_lite.training.data import (
    GoodImageDataset,
    StepBatchSampler,
    SyntheticAnomalyDataset,
    build_validation_set,
    init_loader_worker,
    loader_context,
    loader_workers,
    split_train_images,
)
from memseg_lite.training.distributed import DistContext

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
LOG_NAME = "log.jsonl"
CONFIG_NAME = "config.json"
SPLIT_NAME = "split.json"
#: The files a run writes; a folder holding any of them is never overwritten without resume or restart.
RUN_ARTIFACTS = (CHECKPOINT_NAME, BEST_NAME, LOG_NAME, CONFIG_NAME, SPLIT_NAME, "thresholds.json")
LOCK_NAME = ".memseg-lite.lock"
OWNER_NAME = ".memseg-lite.owner.json"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite (on any rank); the last good checkpoint is kept."""


#: With fp16 (a gradient scaler), steps with a non-finite loss are skipped, up to this many in a row.
MAX_SKIPPED_STEPS = 10


class RunFolderBusyError(RuntimeError):
    """Another process is training in the same run folder."""


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    best_checkpoint: Path | None
    step: int
    interrupted: bool
    best: dict
    history: list[dict] = field(default_factory=list)
    last: dict = field(default_factory=dict)  # the validation record of the last step (the last model)
    validation: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    stop_signal: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped the run

    def __str__(self) -> str:
        state = "interrupted" if self.interrupted else "finished"
        def summary(record: dict) -> str:
            shown = ("score", "pixel_ap", "aupro", "image_auroc", "pixel_auroc", "loss")
            text = ", ".join(f"{k}={record[k]:.4f}" for k in shown if isinstance(record.get(k), float))
            return f"step {record['step']}: {text}" if "step" in record else text

        latest = f" ({summary(self.last)})" if self.last else ""
        return (
            f"training {state} at step {self.step} in {self.seconds:.0f} s; run folder {self.out_dir}\n"
            f"  latest: {self.checkpoint}{latest}\n  best:   {self.best_checkpoint} ({summary(self.best)})"
        )


# --------------------------------------------------------------------------------------------
# Building blocks (each usable on its own from a notebook)
# --------------------------------------------------------------------------------------------
SIMULATION_OPTIONS = (
    "p_normal", "p_texture", "delta_range", "perlin_scale_range", "perlin_threshold", "structure_grid", "max_tries",
)


def _simulation_settings(config: TrainConfig) -> dict:
    """The settings both simulators share: the foreground (per category by default) and the options."""
    foreground = config.foreground if config.foreground is not None else config.category
    if config.foreground_settings is not None:  # from a simulation settings file (TrainConfig.simulation_file)
        from memseg_lite.simulation.foreground import ForegroundSettings

        foreground = ForegroundSettings(**config.foreground_settings)
    return {"foreground": foreground, **{name: getattr(config, name) for name in SIMULATION_OPTIONS}}


def make_synthesizer(config: TrainConfig):
    """The anomaly simulator configured from ``config`` (foreground settings per category)."""
    from memseg_lite.simulation.synthesis import AnomalySynthesizer
    from memseg_lite.simulation.textures import TextureSource

    texture_source = TextureSource(config.texture_root, seed=config.seed)
    return AnomalySynthesizer(texture_source=texture_source, **_simulation_settings(config))


def make_device_synthesizer(config: TrainConfig, device: torch.device, bank_size: int = 64):
    """The batched torch simulator on ``device``, with the same settings as :func:`make_synthesizer`."""
    from memseg_lite.simulation.synthesis import TorchAnomalySynthesizer
    from memseg_lite.simulation.textures import TextureSource

    return TorchAnomalySynthesizer.from_texture_source(
        TextureSource(config.texture_root, seed=config.seed),
        np.random.default_rng([config.seed, 0x7E47]),
        bank_size=bank_size,
        image_size=config.input_size,
        device=device,
        **_simulation_settings(config),
    )


def make_loss(config: TrainConfig):
    from memseg_lite.network.losses import MemSegLoss

    return MemSegLoss(
        l1_weight=config.l1_weight,
        focal_weight=config.focal_weight,
        gamma=config.focal_gamma,
        alpha=config.focal_alpha,
    )


def warmup_cosine(step: int, total_steps: int, warmup_fraction: float) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""
    warmup = int(round(total_steps * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def rng_state(device: torch.device | None = None) -> dict:
    """The CPU generator's state and, on a CUDA ``device``, that GPU's own (not every visible GPU's)."""
    state = {"torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(_cuda_index(device))
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore :func:`rng_state`'s ``state``; a GPU state goes to ``device`` (ignored elsewhere).

    Older checkpoints hold a list (one state per GPU that was visible): this device's entry, or the
    first when fewer GPUs were visible then, is used, so resuming with fewer GPUs works.
    """
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda")
    if saved is None or device is None or device.type != "cuda":
        return
    index = _cuda_index(device)
    if isinstance(saved, (list, tuple)):
        if not saved:
            return
        saved = saved[index] if index < len(saved) else saved[0]
    torch.cuda.set_rng_state(saved, index)


@contextlib.contextmanager
def cudnn_benchmark(device: torch.device):
    """cuDNN picks its fastest convolution algorithms while training on CUDA (fixed input shapes);
    the previous setting is restored afterwards. Nothing changes on other devices."""
    previous = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


class _StopRequest:
    """Turns the first Ctrl-C (SIGINT) or SIGTERM into a polite request: the step finishes and a
    checkpoint is saved. SIGTERM is what cluster schedulers and containers send before they kill
    a job, so it saves exactly like Ctrl-C.

    A second signal interrupts at once, as usual.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None  # which signal asked to stop
        self._previous: dict = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.getsignal(number)
                    signal.signal(number, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        what = "Ctrl-C" if signum == signal.SIGINT else self.signal_name
        print(f"\n{what}: finishing this step and saving a checkpoint (send it again to abort at once)", flush=True)

    def __exit__(self, *exc) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous if previous is not None else signal.SIG_DFL)


def is_better(metrics: dict, best: dict) -> bool:
    """Whether validation ``metrics`` beat the ``best`` record so far: a higher score, or as high with a lower loss."""
    if not best:
        return True
    return metrics["score"] > best["score"] or (metrics["score"] == best["score"] and metrics["loss"] < best["loss"])


def read_log(run_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """(per-step training records, validation records) from a run folder's ``log.jsonl``."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}")
    steps, validations = [], []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            (validations if record.get("kind") == "validation" else steps).append(record)
    return steps, validations


# --------------------------------------------------------------------------------------------
# The run folder: one owner at a time, never overwritten by accident
# --------------------------------------------------------------------------------------------
def _busy_error(out_dir: Path) -> RunFolderBusyError:
    try:
        owner = json.loads((out_dir / OWNER_NAME).read_text())
        who = f"pid {owner['pid']} on {owner.get('host', '?')}, started {owner.get('started', '?')}"
    except (OSError, ValueError, KeyError, TypeError):
        who = "pid unknown: it is just starting"
    return RunFolderBusyError(
        f"run folder {out_dir} is in use by another training process ({who}); wait for it to finish, stop it "
        "(Ctrl-C or SIGTERM saves a checkpoint, then --resume continues), or choose another --out"
    )


@contextlib.contextmanager
def run_folder_lock(out_dir: str | Path):
    """Own ``out_dir`` for the duration of the block: a lock file (``filelock``) plus an owner note.

    The lock is an OS lock on ``out_dir/.memseg-lite.lock``, released by the OS when the process
    ends, however it ends (so a crash never leaves a stale lock). A second process (or a second
    lock in the same process) gets :class:`RunFolderBusyError` naming the owner's pid and the folder.
    """
    import socket

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise _busy_error(out_dir) from None
    owner = out_dir / OWNER_NAME
    try:
        write_text_atomic(owner, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }) + "\n")
        yield out_dir
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def run_artifacts(out_dir: str | Path) -> list[str]:
    """The names of the run files (:data:`RUN_ARTIFACTS`) present in ``out_dir``."""
    out_dir = Path(out_dir)
    return [name for name in RUN_ARTIFACTS if (out_dir / name).exists()]


def check_run_folder(
    out_dir: str | Path, resume: bool = False, restart: bool = False, check_lock: bool = True
) -> list[str]:
    """Check ``out_dir`` before any work starts; return the run files present in it.

    - ``resume``: there must be a run with a ``checkpoint.pt`` to continue;
    - neither: a folder holding any run file (:data:`RUN_ARTIFACTS`) is refused, naming the files;
    - ``restart``: allowed over an existing run (:meth:`Trainer.fit` deletes its files, and only those);
    - ``check_lock``: another process training there is an error naming its pid.
    """
    out_dir = Path(out_dir)
    if resume and restart:
        raise ValueError("--resume continues a run and --restart starts it over: pass one of them, not both")
    for folder in (out_dir, *out_dir.parents):
        if folder.exists() and not folder.is_dir():
            where = "" if folder == out_dir else f" (in --out {out_dir})"
            raise NotADirectoryError(f"run folder {folder}{where} is a file, not a folder; choose another --out")
        if folder.is_dir():
            break
    if check_lock and (out_dir / LOCK_NAME).exists():
        with run_folder_lock(out_dir):
            pass  # free: nobody trains there now
    present = run_artifacts(out_dir)
    if resume:
        if CHECKPOINT_NAME in present:
            return present
        if not present:
            raise FileNotFoundError(
                f"there is no run at {out_dir} to resume (no {out_dir / CHECKPOINT_NAME}); "
                "check --out, or start a new run there without --resume"
            )
        raise FileNotFoundError(
            f"cannot resume {out_dir}: it holds {', '.join(present)} but no {CHECKPOINT_NAME} (the resumable state, "
            f"written every --checkpoint-every steps); start over with --restart (replaces {', '.join(present)}) "
            "or choose another --out"
        )
    if present and not restart:
        how = (
            "to continue it"
            if CHECKPOINT_NAME in present
            else f"to continue it (not possible here: no {CHECKPOINT_NAME})"
        )
        raise FileExistsError(
            f"{out_dir} already holds a training run ({', '.join(present)}); nothing was changed. "
            f"pass --resume (resume=True) {how}, --restart (restart=True) to delete those files and start over, "
            "or choose another --out"
        )
    return present


def _remove_leftover_temporaries(out_dir: Path) -> list[str]:
    """Delete the temporary files of the run's own files (``.best.pt.<random>.tmp``, ...) left by a killed process.

    A ``kill -9`` during an atomic write leaves one behind (tens of MB for a checkpoint); with the run
    folder locked no other process can be writing them, so each start or resume cleans them up.
    Other files, hidden or not, are never touched.
    """
    removed = []
    for name in RUN_ARTIFACTS:
        for leftover in sorted(out_dir.glob(f".{name}.*.tmp")):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
                removed.append(leftover.name)
    if removed:
        print(
            f"removed {len(removed)} temporary file(s) left by an interrupted write in {out_dir}: {', '.join(removed)}"
        )
    return removed


def _remove_unused_run_folder(out_dir: Path, created: list[Path]) -> None:
    """A run that failed before writing anything leaves no folder behind (only one this run created).

    A bad option found once the folder was locked (a missing backbone file, say) would otherwise
    leave an empty run folder holding only the lock file.
    """
    if not created or created[-1] != out_dir or not out_dir.is_dir():
        return
    if any(entry.name not in (LOCK_NAME, OWNER_NAME) for entry in out_dir.iterdir()):
        return
    for name in (OWNER_NAME, LOCK_NAME):
        (out_dir / name).unlink(missing_ok=True)
    remove_empty_folders(created)  # a folder something else was put into meanwhile is kept


def _clear_run(out_dir: Path) -> None:
    """``--restart``: delete the run files (and leftover temporary files of them); nothing else."""
    removed = [name for name in RUN_ARTIFACTS if (out_dir / name).exists()]
    for name in RUN_ARTIFACTS:
        (out_dir / name).unlink(missing_ok=True)
        for leftover in out_dir.glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)
    if removed:
        print(f"restart: deleted {', '.join(removed)} in {out_dir}")
    if (out_dir / "evaluation").is_dir():
        print(f"restart: {out_dir / 'evaluation'} still holds the evaluation of the earlier run (kept; "
              "evaluate again to replace it)")


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------
class Trainer:
    """Trains MemSeg on one category; see the module docstring for the files it writes.

    >>> result = Trainer(TrainConfig(category="button", steps=200, out_dir="runs/button")).fit()
    """

    def __init__(self, config: TrainConfig, progress: bool = True, dist: DistContext | None = None):
        config.validate()
        self.config = config
        # Data-parallel runs: this process's rank (memseg_lite.training.distributed); one process: no-ops.
        self.dist = dist if dist is not None else DistContext()
        self.progress = progress
        self.out_dir = Path(config.out_dir)
        self.device = resolve_device(config.device)
        self.autocast_dtype, needs_scaler = autocast_settings(self.device, config.amp)
        self.scaler = torch.amp.GradScaler("cuda") if needs_scaler else None
        self.channels_last = config.channels_last if config.channels_last is not None else self.device.type == "cuda"
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1) if self.dist.active else 1
        self.num_workers = loader_workers(config.num_workers, self.device, local_processes)

        seed_everything(config.seed)
        self.synthesizer = make_synthesizer(config)  # before loading images: bad settings fail at once
        files = files_for_config(config)  # MVTec AD layout or plain folders (config.good_dir)
        self.split = split_train_images(files.train_good, config.memory_size, config.val_images, config.seed)
        size, crop = config.image_size, config.center_crop
        # One call for all of train/good, so images of mixed shapes are reported in one warning.
        ordered = [*self.split.memory, *self.split.train, *self.split.validation]
        pixels, shapes = load_images(ordered, size, crop, progress=progress, resize=config.resize, return_shapes=True)
        n_memory, n_train = len(self.split.memory), len(self.split.train)
        self.memory_pixels = pixels[:n_memory]
        self.train_pixels = pixels[n_memory : n_memory + n_train]
        validation_pixels = pixels[n_memory + n_train :]
        # Letterbox padding is left out of the validation's pixel metrics and pixel threshold.
        regions = [valid_region(shape, size, crop, config.resize) for shape in shapes[n_memory + n_train :]]
        self.validation = build_validation_set(
            self.split.validation, validation_pixels, self.synthesizer, config.seed, config.val_anomalies_per_image,
            recipe=config.val_recipe, valid=regions,
        )
        if config.synthesis == "device":
            self.device_synthesizer = make_device_synthesizer(config, self.device)
            self.dataset = GoodImageDataset(self.train_pixels)
            with torch.no_grad():  # bool [N, H, W] on the device: 64 KiB per 256 x 256 image
                self.foreground_cache = self.device_synthesizer.foreground_masks(
                    torch.from_numpy(np.ascontiguousarray(self.train_pixels)).permute(0, 3, 1, 2).to(self.device))
        else:
            self.device_synthesizer = None
            self.dataset = SyntheticAnomalyDataset(self.train_pixels, self.synthesizer)
        self.criterion = make_loss(config)
        self.model = None
        self.backbone = "unknown"
        self.step = 0
        self.non_finite_in_a_row = 0  # steps the gradient scaler skipped in a row (fp16)
        self.best: dict = {}
        self.thresholds: dict | None = None  # set at the end of training (memseg_lite.evaluation.thresholds)

    # ---- setup -------------------------------------------------------------------------------
    def _build_model(self):
        from memseg_lite.network.model import build_memseg

        return build_memseg(
            images_to_tensor(self.memory_pixels),
            backbone_weights=self.config.backbone_weights,
            selection_rule=self.config.selection_rule,
            top_k=self.config.top_k,
            device=self.device,
            seed=self.config.seed,
            # the ablation switches (memseg_lite.network.model.ABLATION_DEFAULTS)
            use_memory=self.config.use_memory,
            use_attention=self.config.use_attention,
            fusion=self.config.fusion,
            feature_smoothing=self.config.feature_smoothing,
            di_scale=float(self.config.di_scale),
            feature_scale=float(self.config.feature_scale),
        )

    def _restore_model(self, payload: dict):
        from memseg_lite.network.model import memseg_from_state

        return memseg_from_state(payload["model_config"], payload["model"]).to(self.device)

    def _make_optimizer(self, model):
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.config.lr, weight_decay=self.config.weight_decay)
        steps, warmup = self.config.steps, self.config.warmup_fraction
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, warmup))
        return optimizer, scheduler

    def _split_names(self) -> dict[str, list[str]]:
        """The split as file names (not paths), so a moved data folder still compares equal."""
        return {name: [p.name for p in getattr(self.split, name)] for name in ("memory", "train", "validation")}

    def _texture_summary(self) -> dict:
        source = self.synthesizer.texture_source
        return {"kind": source.kind, "count": len(source)}

    def _best_on_disk(self, best: dict) -> dict:
        """The best record to continue with: ``best.pt``'s, if it is newer than the checkpoint.

        ``best.pt`` is written at validation steps, the checkpoint every ``checkpoint_every``
        steps; after an interruption ``best.pt`` can be the newer of the two. It holds a real,
        validated model, so the resumed run compares against it.
        """
        path = self.out_dir / BEST_NAME
        if path.is_file():
            stored = load_checkpoint(path)
            if int(stored.get("step", 0)) > int(best.get("step", -1)):
                return {"step": int(stored["step"]), **stored.get("validation", {})}
        return best

    def _check_resumable(self, payload: dict) -> None:
        where = self.out_dir / CHECKPOINT_NAME
        # Changed settings first: a changed memory size also changes the split, and the split
        # message would wrongly blame added or renamed image files.
        saved = TrainConfig.from_dict(payload["train_config"])
        changed = self.config.changes_blocking_resume(saved)
        if changed:
            details = ", ".join(f"{n}: {getattr(saved, n)!r} -> {getattr(self.config, n)!r}" for n in changed)
            raise ValueError(
                f"cannot resume {self.out_dir / CHECKPOINT_NAME}: the run was started with other settings "
                f"({details}). Resume with the original settings, or start a new run in another --out folder"
            )
        split_file = self.out_dir / SPLIT_NAME
        if split_file.is_file():
            try:
                saved_split = json.loads(split_file.read_text())
                saved_names = {k: [Path(p).name for p in v] for k, v in saved_split.items()}
            except (ValueError, AttributeError, TypeError) as error:
                raise ValueError(
                    f"cannot resume {where}: {split_file} is unreadable ({type(error).__name__}: {error}); it should "
                    "map memory/train/validation to file names. Restore it, or start over with --restart"
                ) from None
            if saved_names != self._split_names():
                raise ValueError(
                    f"cannot resume {where}: the good training images under {self.config.data_root} do not "
                    f"give the split recorded in {split_file} (files were added, removed or renamed). "
                    "Restore them, or start a new run in another --out folder"
                )
        textures = payload.get("textures")
        if textures is not None and textures != self._texture_summary():
            raise ValueError(
                f"cannot resume {where}: it was trained with {textures['count']} {textures['kind']} textures, "
                f"now {self._texture_summary()['count']} {self._texture_summary()['kind']} textures would be used "
                f"(texture_root {self.config.texture_root}); point --texture-root at the original textures"
            )

    # ---- checkpoints -------------------------------------------------------------------------
    def _rerun_hint(self) -> str:
        """How to run again after a failed save: the run folder already holds this run's files."""
        if (self.out_dir / CHECKPOINT_NAME).is_file():
            return f"run again with --resume (continues from {self.out_dir / CHECKPOINT_NAME})"
        return f"run again with --restart (the run folder {self.out_dir} holds this run's first files, no checkpoint)"

    def _model_payload(self) -> dict:
        """What a checkpoint needs to rebuild and describe the model: best.pt is this and its validation."""
        return {
            "model_config": self.model.config(),
            "model": self.model.state_dict(),
            "backbone": self.backbone,
            "textures": self._texture_summary(),
            "train_config": self.config.to_dict(),
            "step": self.step,
        }

    def _payload(self, optimizer, scheduler) -> dict:
        """The resumable checkpoint: the model and everything that continues the run exactly."""
        return {
            **self._model_payload(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_state(self.device),
            "best": dict(self.best),
            "thresholds": self.thresholds,
        }

    def _save_best(self, metrics: dict) -> None:
        if not self.dist.is_main:
            return
        save_checkpoint({**self._model_payload(), "validation": metrics}, self.out_dir / BEST_NAME,
                        rerun=self._rerun_hint())

    def _rewrite_log(self, up_to_step: int) -> None:
        """Drop log lines written after the checkpoint we resume from (they will be redone)."""
        path = self.out_dir / LOG_NAME
        if not path.is_file() or not self.dist.is_main:
            return
        kept = [
            line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= up_to_step
        ]
        write_text_atomic(path, "".join(line + "\n" for line in kept))

    # ---- validation --------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, batch_size: int = 16) -> dict:
        """Loss, image AUROC, pixel AUROC, pixel AP and AU-PRO on the validation set (synthetic anomalies).

        ``score`` is the selection score (``TrainConfig.selection_metric``); ``seconds`` the time taken.
        """
        from memseg_lite.evaluation.selection_metrics import (
            selection_score,
            validation_metrics,
        )

        started = time.perf_counter()
        model = self.model
        was_training = model.training
        model.eval()
        maps, losses = [], []
        try:
            for start in range(0, len(self.validation), batch_size):
                images = self.validation.images[start : start + batch_size].to(self.device)
                masks = self.validation.masks[start : start + batch_size].to(self.device)
                if self.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with self._autocast():
                    logits = model(images)
                logits = logits.float()
                losses.append(float(self.criterion(logits, masks).total) * len(images))
                maps.append(torch.softmax(logits, dim=1)[:, 1].cpu())
        finally:
            model.train(was_training)
        maps = torch.cat(maps)
        scores = model.image_score(maps)
        metrics = {"loss": sum(losses) / len(self.validation)}
        metrics.update(validation_metrics(scores.numpy(), self.validation.labels.numpy(), maps.numpy(),
                                          self.validation.masks.numpy(), valid=self._validation_valid()))
        metrics["score"] = selection_score(metrics, self.config.selection_metric)
        metrics["seconds"] = time.perf_counter() - started
        return metrics

    def _validation_valid(self):
        """The validation set's valid pixels (numpy, letterbox padding 0), or ``None`` when it has no padding."""
        return None if self.validation.valid is None else self.validation.valid.numpy()

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ---- starting or resuming a run ----------------------------------------------------------
    def _resume_run(self, checkpoint_path: Path):
        """Restore model, optimiser, scheduler, scaler, RNG and step from ``checkpoint_path``."""
        try:
            payload = load_checkpoint(checkpoint_path, map_location="cpu")
        except ValueError as error:
            raise ValueError(
                f"{error}; to start this run over, pass --restart (restart=True: deletes the run's files), "
                "or choose another --out"
            ) from error
        self._check_resumable(payload)
        self.model = self._restore_model(payload)
        self.backbone = payload.get("backbone", "unknown")
        optimizer, scheduler = self._make_optimizer(self.model)
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        set_rng_state(payload["rng"], self.device)
        self.step = int(payload["step"])
        if self.device_synthesizer is not None:  # the texture pool as the uninterrupted run has it at this step
            self.device_synthesizer.seek(self.step, self.config.batch_size // self.dist.world_size)
        self.thresholds = payload.get("thresholds")
        self.best = self._best_on_disk(dict(payload.get("best", {})))
        self._rewrite_log(self.step)
        print(f"resuming {checkpoint_path} at step {self.step} of {self.config.steps}")
        return optimizer, scheduler

    def _start_run(self, checkpoint_path: Path):
        """Build the model (and its memory bank) and write the run's config, split and empty log."""
        if checkpoint_path.is_file():
            raise FileExistsError(
                f"{checkpoint_path} already exists; pass --resume (resume=True) to continue that run, "
                "or choose another --out folder"
            )
        self.model = self.dist.build_once(self._build_model, self._restore_model)  # rank 0 builds, all check
        # Where the frozen encoder's weights came from ("imagenet", "random", "file:<path>").
        self.backbone = self.model.encoder.weights_source
        optimizer, scheduler = self._make_optimizer(self.model)
        if self.dist.is_main:  # rank 0 alone writes the run folder
            (self.out_dir / LOG_NAME).write_text("")
            (self.out_dir / BEST_NAME).unlink(missing_ok=True)  # a leftover from an unfinished earlier run
            (self.out_dir / "thresholds.json").unlink(missing_ok=True)  # likewise
            self.config.save(self.out_dir / "config.json")
            write_text_atomic(self.out_dir / "split.json", json.dumps(self._split_names(), indent=2) + "\n")
        return optimizer, scheduler

    def _batches(self) -> DataLoader:
        """The remaining steps' batches: a pure function of (seed, step), whatever the workers."""
        config = self.config
        return DataLoader(
            self.dataset,
            batch_sampler=StepBatchSampler(len(self.dataset), config.batch_size, config.steps, config.seed, self.step,
                                           rank=self.dist.rank, world_size=self.dist.world_size),
            num_workers=self.num_workers,
            worker_init_fn=init_loader_worker,
            multiprocessing_context=loader_context(self.num_workers),
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    # ---- one step ----------------------------------------------------------------------------
    def _to_device(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move a batch to the device; with ``synthesis="device"`` simulate its anomalies there."""
        if self.device_synthesizer is not None:
            # ``images`` are good uint8 pixels and ``masks`` rows of [sample seed, image index]: simulate here,
            # with each image's foreground mask computed once (hole filling is the costly part).
            generator = torch.Generator(device=self.device).manual_seed(int(masks[0, 0]))
            foreground = self.foreground_cache[masks[:, 1].to(self.foreground_cache.device)]
            simulated = self.device_synthesizer.sample(images.to(self.device, non_blocking=True), generator,
                                                       foreground_masks=foreground)
            pixels, masks = simulated.images, simulated.masks
            images = normalise_batch(pixels)
        else:
            images = images.to(self.device, non_blocking=True)
            masks = masks.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks

    def _optimisation_step(self, step_fn, optimizer, scheduler, images: torch.Tensor, masks: torch.Tensor) -> dict:
        """Forward, loss, backward, optimiser and scheduler step; returns the step's log record."""
        with self._autocast():
            logits = step_fn(images)
        parts = self.criterion(logits.float(), masks)
        loss = parts.total
        # Every rank learns whether any rank's loss is non-finite, so all stop (or skip) together:
        # one rank raising alone would leave the others waiting in the gradient all-reduce.
        non_finite = self.dist.any_rank(not bool(torch.isfinite(loss.detach())))
        skipped = False
        if non_finite:
            self.non_finite_in_a_row += 1
            # fp16: the gradient scaler skips the step and lowers its scale; stop only if that keeps failing.
            if self.scaler is None or self.non_finite_in_a_row > MAX_SKIPPED_STEPS:
                raise self._non_finite_error(loss)
            skipped = True
        else:
            self.non_finite_in_a_row = 0
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        learning_rate = optimizer.param_groups[0]["lr"]
        scheduler.step()
        self.step += 1
        record = {"kind": "train", "step": self.step, "lr": learning_rate}
        record.update({name: float(value.detach()) for name, value in parts._asdict().items()})
        record["loss"] = record.pop("total")
        if skipped:
            record["skipped"] = True  # non-finite loss: the gradient scaler skipped this optimiser step
        return record

    def _non_finite_error(self, loss: torch.Tensor) -> NonFiniteLossError:
        """The error every rank raises when the loss of some rank is NaN or infinite."""
        values = self.dist.gather_object(float(loss.detach()))
        if self.dist.active:
            where = ", ".join(
                f"{value} on rank {rank}" for rank, value in enumerate(values) if not math.isfinite(value)
            )
        else:
            where = str(values[0])
        skipped = (f" after the gradient scaler skipped {MAX_SKIPPED_STEPS} steps in a row"
                   if self.scaler is not None else "")
        return NonFiniteLossError(
            f"the loss became {where} at step {self.step + 1}{skipped}; training stopped. "
            f"The last good checkpoint ({self.out_dir / CHECKPOINT_NAME}, step {self._saved_step()}) is kept; "
            "try a lower --lr, or amp='off'"
        )

    def _validate_and_keep_best(self, log, progress) -> None:
        """Validate, log the result, and save ``best.pt`` when the score improved (ties: lower loss)."""
        metrics = self.dist.agree(self.validate, self.model)  # every rank validates; rank 0's result counts
        log.write(json.dumps({"kind": "validation", "step": self.step, **metrics}) + "\n")
        if is_better(metrics, self.best):
            self.best = {"step": self.step, **metrics}
            self._save_best(metrics)
        if progress is not None:
            progress.write(
                f"step {self.step}: val loss {metrics['loss']:.4f}, pixel AP {metrics['pixel_ap']:.3f}, "
                f"AU-PRO {metrics['aupro']:.3f}, image AUROC {metrics['image_auroc']:.3f}, pixel AUROC "
                f"{metrics['pixel_auroc']:.3f} ({self.config.selection_metric} {metrics['score']:.4f})"
            )

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_after: int | None = None, restart: bool = False) -> TrainResult:
        """Train to ``config.steps``; ``resume=True`` continues ``out_dir/checkpoint.pt``.

        ``stop_after`` ends this session after that many steps (saving a checkpoint), e.g. to
        train in time-boxed sessions; a later ``fit(resume=True)`` continues exactly.
        The run folder is locked while training (:func:`run_folder_lock`); a folder that already
        holds a run is refused unless ``resume`` or ``restart`` (which deletes the run's files).
        """
        if not self.dist.is_main:  # rank 0 owns the folder for all ranks
            self.dist.barrier()  # ... and has checked (and with restart, cleared) it
            return self._fit(resume, stop_after)
        created = missing_folders(self.out_dir)
        try:
            with run_folder_lock(self.out_dir):
                check_run_folder(self.out_dir, resume=resume, restart=restart, check_lock=False)
                if restart:
                    _clear_run(self.out_dir)
                _remove_leftover_temporaries(self.out_dir)
                self.dist.barrier()
                return self._fit(resume, stop_after)
        except BaseException:
            _remove_unused_run_folder(self.out_dir, created)
            raise

    def _fit(self, resume: bool, stop_after: int | None) -> TrainResult:
        """:meth:`fit` once the run folder is owned."""
        self.stop_signal = None
        config = self.config
        checkpoint_path = self.out_dir / CHECKPOINT_NAME
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume and not checkpoint_path.is_file():
            raise FileNotFoundError(
                f"cannot resume: there is no checkpoint at {checkpoint_path}; "
                "drop --resume (resume=False) to start a new run there"
            )
        optimizer, scheduler = self._resume_run(checkpoint_path) if resume else self._start_run(checkpoint_path)

        model = self.model
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        stepped = self.dist.wrap_model(model, config.sync_batchnorm)  # DistributedDataParallel with several ranks
        step_fn = torch.compile(stepped) if config.compile else stepped
        model.train()

        started = time.perf_counter()
        first_step = self.step
        interrupted = False
        progress = None
        if self.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            progress = tqdm(total=config.steps, initial=self.step, desc=f"train {config.category}", unit="step")
        # line-buffered: tail -f works; only rank 0 writes the log
        log = (self.out_dir / LOG_NAME if self.dist.is_main else Path(os.devnull)).open("a", buffering=1)
        try:
            with _StopRequest() as stop, cudnn_benchmark(self.device):
                for images, masks in self._batches():
                    images, masks = self._to_device(images, masks)
                    record = self._optimisation_step(step_fn, optimizer, scheduler, images, masks)
                    record = self.dist.mean_record(record)  # several ranks: the global batch's loss
                    log.write(json.dumps(record) + "\n")
                    if progress is not None:
                        progress.update(1)
                        progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")

                    last = self.step == config.steps
                    if self.step % config.val_every == 0 or last:
                        self._validate_and_keep_best(log, progress)
                    if stop_after is not None and self.step - first_step >= stop_after and not last:
                        stop.requested = True
                    stopping = self.dist.any_rank(stop.requested)  # a signal on any rank stops all after this step
                    if self.step % config.checkpoint_every == 0 or last or stopping:
                        log.flush()
                        if self.dist.is_main:
                            save_checkpoint(self._payload(optimizer, scheduler), checkpoint_path,
                                            rerun=self._rerun_hint())
                        self.dist.barrier()
                    if stopping:
                        interrupted = True
                        self.stop_signal = stop.signal_name
                        print(f"stopped at step {self.step}; continue with --resume (resume=True)")
                        break
        finally:
            log.close()
            if progress is not None:
                progress.close()
        if not interrupted and self.step == config.steps and self.thresholds is None and self.dist.is_main:
            self._store_thresholds(optimizer, scheduler)
        return self._result(interrupted, time.perf_counter() - started)

    # ---- decision thresholds -----------------------------------------------------------------
    @torch.no_grad()
    def _validation_predictions(self, model, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """(image scores ``[M]``, anomaly maps ``[M, H, W]``) of ``model`` on the validation set, on the CPU."""
        model.eval()
        maps = []
        for start in range(0, len(self.validation), batch_size):
            images = self.validation.images[start : start + batch_size].to(self.device)
            with self._autocast():
                logits = model(images)
            maps.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
        maps = torch.cat(maps)
        return model.image_score(maps), maps

    def _thresholds_for(self, model, step: int):
        """The validation thresholds of ``model``.

        Rule: :func:`memseg_lite.evaluation.thresholds.validation_thresholds`."""
        from memseg_lite.evaluation.thresholds import validation_thresholds

        was_training = self.model.training
        try:
            scores, maps = self._validation_predictions(model)
        finally:
            self.model.train(was_training)
        thresholds = validation_thresholds(
            scores.numpy(), self.validation.labels.numpy(), maps.numpy(), self.validation.masks.numpy(),
            valid=self._validation_valid(),
        )
        thresholds.details["step"] = int(step)
        return thresholds

    def _store_thresholds(self, optimizer, scheduler) -> None:
        """Choose the image and pixel thresholds on the validation set for the best and the last model.

        The best model's go into ``best.pt`` and ``thresholds.json``; the last model's into
        ``checkpoint.pt`` (the last model), so each checkpoint carries its own. When the best model
        is the last one they are the same, computed once.
        """
        from memseg_lite.evaluation.thresholds import THRESHOLDS_NAME, save_thresholds
        from memseg_lite.network.model import memseg_from_state

        best_path = self.out_dir / BEST_NAME
        best_payload = load_checkpoint(best_path) if best_path.is_file() else None
        last = self._thresholds_for(self.model, self.step)
        best = last
        if best_payload is not None and int(best_payload["step"]) != self.step:
            best_model = memseg_from_state(best_payload["model_config"], best_payload["model"]).to(self.device)
            best = self._thresholds_for(best_model, int(best_payload["step"]))
        self.thresholds = last.to_dict()
        if best_payload is not None:
            save_checkpoint({**best_payload, "thresholds": best.to_dict()}, best_path, rerun=self._rerun_hint())
        save_checkpoint(self._payload(optimizer, scheduler), self.out_dir / CHECKPOINT_NAME, rerun=self._rerun_hint())
        save_thresholds(self.out_dir / THRESHOLDS_NAME, best)

    def _result(self, interrupted: bool, seconds: float) -> TrainResult:
        history, validation = read_log(self.out_dir)
        best_path = self.out_dir / BEST_NAME
        last = validation[-1] if validation and validation[-1]["step"] == self.step else {}
        return TrainResult(
            out_dir=self.out_dir,
            checkpoint=self.out_dir / CHECKPOINT_NAME,
            best_checkpoint=best_path if best_path.is_file() else None,
            step=self.step,
            interrupted=interrupted,
            best=dict(self.best),
            history=history,
            last={k: v for k, v in last.items() if k != "kind"},
            validation=validation,
            seconds=seconds,
            stop_signal=getattr(self, "stop_signal", None),
        )

    def _saved_step(self) -> int | str:
        path = self.out_dir / CHECKPOINT_NAME
        if not path.is_file():
            return "none yet"
        return int(load_checkpoint(path)["step"])


def train(config: TrainConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None,
          restart: bool = False) -> TrainResult:
    """Train with ``config`` (see :class:`Trainer`); ``resume=True`` continues ``out_dir/checkpoint.pt``.

    The run folder is checked before the data is loaded (:func:`check_run_folder`): a folder
    holding a run needs ``resume=True`` (continue) or ``restart=True`` (delete its files, start over).
    """
    check_run_folder(config.out_dir, resume=resume, restart=restart)
    return Trainer(config, progress=progress).fit(resume=resume, stop_after=stop_after, restart=restart)
