"""The training configuration: one dataclass shared by the CLI, the notebooks and the trainer.

Defaults follow the reference settings in the method note (image 256, batch 8, AdamW lr 3e-3,
weight decay 5e-4, cosine schedule with 10 % warm-up, 0.6 L1 + 0.4 focal with gamma 4,
30 memory images).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from memseg_lite.core.sizes import RESIZE_MODES, parse_size
from memseg_lite.evaluation.selection_metrics import SELECTION_METRICS
from memseg_lite.network.selection import SELECTION_RULES

AMP_MODES = ("auto", "off", "bf16", "fp16")
SYNTHESIS_PLACES = ("loader", "device")
#: How the validation anomalies are made (memseg_lite.training.data.anomaly_plan). "basic" stays
#: although "hard" replaced it as the default: the accuracy study (memseg_lite.experiments.study,
#: cell "val_basic") measures what the validation recipe changes in the checkpoint chosen.
VALIDATION_RECIPES = ("hard", "basic")


def cli(default=dataclasses.MISSING, help: str = "", *, flag: str | None = None, choices=None,
        shown: str | None = None, type=None, default_factory=dataclasses.MISSING):
    """A :class:`TrainConfig` field that is also a command-line option of ``train`` (and of the
    commands that pick it up, e.g. ``ablate``): :mod:`memseg_lite.training.options` turns it into
    ``--flag`` with this help text and ``[the default]`` (``shown`` replaces the default's text).
    Adding an option to the CLI is adding such a field: nothing else to edit."""
    metadata = {"cli": {"help": help, "flag": flag, "choices": choices, "shown": shown, "type": type}}
    return field(default=default, default_factory=default_factory, metadata=metadata)


@dataclass
class TrainConfig:
    # data
    data_root: str = cli("data/demo", "data folder in the MVTec AD layout")
    category: str = cli("button", "category folder name")
    out_dir: str = cli("runs/button", "run folder", flag="--out", shown="runs/<category>")
    # Network input: S (square) or (H, W), multiples of 32; "256x512" is accepted and becomes (256, 512).
    image_size: int | tuple[int, int] = cli(
        256, "network input: S or HxW, multiples of 32, e.g. 256 or 256x512", type=str)
    # e.g. image_size=288, center_crop=256 as in tootouch (square sizes only)
    center_crop: int | None = cli(None, "then center-crop to this side")
    # How images of another shape are fitted: "letterbox" (aspect ratio kept, black borders) or
    # "stretch" (memseg_lite.core.transforms.fit_image). Identical for images of the input's aspect ratio.
    resize: str = cli("letterbox", "images of another aspect ratio: letterbox (keep it, black borders) or stretch",
                      choices=RESIZE_MODES)
    # A plain folder of good images instead of the MVTec AD layout (memseg_lite.datasets.folder);
    # optional labelled test images: good ones, defective ones, and masks for the defective ones.
    good_dir: str | None = cli(None, "a plain folder of good images to train on, instead of --data-root/--category",
                               flag="--good", shown="none")
    test_good_dir: str | None = cli(None, "with --good: good test images (for evaluate / calibrate)",
                                    flag="--test-good", shown="none")
    test_defect_dir: str | None = cli(None, "with --good: defective test images (sub-folders = defect types)",
                                      flag="--test-defect", shown="none")
    mask_dir: str | None = cli(None, "with --test-defect: masks <stem>_mask.png or <stem>.png", flag="--masks",
                               shown="none")
    memory_size: int = cli(30, "good images in the memory bank")
    # held-out train/good images for validation (never the test split)
    val_images: int = cli(10, "held-out good training images for validation (never the test split)")
    # Synthetic anomalies per held-out image, made by val_recipe.
    val_anomalies_per_image: int = cli(6, "synthetic anomalies per held-out validation image", flag="--val-anomalies")
    val_recipe: str = cli(
        "hard", "validation anomalies: hard (texture and structure anomalies, each regular, small and faint) or "
        "basic (the two kinds alternating, all regular; a cell of the accuracy study)", choices=VALIDATION_RECIPES)
    # What best.pt is selected by: the mean of pixel average precision and AU-PRO keeps separating
    # checkpoints after the AUROCs saturate.
    selection_metric: str = cli(
        "ap_aupro_mean", "what best.pt is chosen by on validation: pixel average precision, AU-PRO, their mean, or "
        "the mean of image and pixel AUROC (saturates early)", choices=tuple(SELECTION_METRICS))
    # optimisation
    steps: int = cli(5000, "optimisation steps")
    batch_size: int = cli(8, "images per step (with several processes: the global batch)")
    lr: float = cli(3e-3, "peak learning rate (AdamW; cosine schedule after a linear warm-up)")
    weight_decay: float = cli(5e-4, "AdamW weight decay")
    warmup_fraction: float = 0.1
    l1_weight: float = 0.6
    focal_weight: float = 0.4
    focal_gamma: float = 4.0
    focal_alpha: float | None = None
    # model
    backbone_weights: str = cli("auto", "auto | imagenet | none | PATH to a ResNet18 state dict")
    selection_rule: str = cli("paper", "memory selection rule", choices=SELECTION_RULES)
    top_k: int = cli(100, "image score: the mean of the k highest anomaly-map pixels")
    # Ablation switches of the network (memseg_lite.network.model; defaults: the paper's network).
    use_memory: bool = cli(True, "--no-memory: no memory bank, no DI (CI = II, attention maps all ones)",
                           flag="--memory")
    use_attention: bool = cli(True, "--no-attention: spatial attention maps all ones", flag="--attention")
    fusion: str = cli("msff", "msff, or plain (a 1x1 conv per level: no MSFF)", choices=("msff", "plain"))
    feature_smoothing: str = cli(
        "none", "avgpool3: 3x3 average pooling of levels 1-3 before the memory comparison (authors' code)",
        choices=("none", "avgpool3"))
    # CI = concat(feature_scale * II, di_scale * DI*) (authors' code: 100, 100)
    di_scale: float = cli(1.0, "multiply DI* before the decoder (authors' code: 100)")
    feature_scale: float = cli(1.0, "multiply the features in CI before the decoder (authors' code: 100)")
    # anomaly simulation
    p_normal: float = 0.5
    p_texture: float = cli(0.5, "share of texture (else structure) anomalies: 1 texture only, 0 structure only")
    delta_range: tuple[float, float] = (0.15, 1.0)
    perlin_scale_range: tuple[int, int] = (0, 5)
    perlin_threshold: float = 0.5
    structure_grid: tuple[int, int] = (4, 8)
    # None: the category's settings; or "none" / "otsu" / a category name
    foreground: str | None = cli(None, "foreground setting: a category name, 'otsu' or 'none'",
                                 shown="the category's own")
    max_tries: int = 50  # Perlin redraws before a sample on a tiny foreground gives up
    texture_root: str = cli("data/dtd", "DTD folder for texture anomalies (missing: built-in procedural textures)")
    # A simulation settings file (memseg_lite.simulation.settings, e.g. saved by the anomaly explorer):
    # its values replace the simulation options above, its foreground goes to foreground_settings.
    simulation_file: str | None = cli(
        None, "simulation settings file (JSON/YAML, e.g. saved by the anomaly explorer): foreground and "
        "anomaly-simulation options", flag="--simulation")
    foreground_settings: dict | None = None  # ForegroundSettings fields; wins over `foreground`
    # Where anomalies are simulated: "loader" (numpy, in the DataLoader's worker processes) or
    # "device" (batched torch on the training device; memseg_lite.simulation.synthesis.TorchAnomalySynthesizer)
    synthesis: str = cli("loader", "simulate anomalies in the DataLoader (numpy) or batched on the training device",
                         choices=SYNTHESIS_PLACES)
    # runtime
    device: str = cli("auto", "auto | cpu | cuda | cuda:N | mps")
    # autocast: bf16 where supported on CUDA, else fp16 with a grad scaler; off on CPU
    amp: str = cli("auto", "autocast mode", choices=AMP_MODES, shown="auto: bf16/fp16 on CUDA, off on CPU")
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool = cli(False, "use torch.compile")
    # Data-parallel runs (memseg_lite.training.distributed): batch norm in the trained parts uses the
    # statistics of the global batch over all processes (no effect in one process).
    sync_batchnorm: bool = cli(False, "with several processes: batch norm over the global batch")
    # DataLoader worker processes; None: DEFAULT_CUDA_WORKERS on CUDA (the GPU would wait for
    # the simulation otherwise), 0 elsewhere (memseg_lite.training.data.loader_workers).
    num_workers: int | None = cli(None, "DataLoader worker processes", flag="--workers",
                                  shown="auto: 4 on CUDA, 0 elsewhere")
    seed: int = cli(0, "random seed (the same seed repeats a CPU run exactly)")
    val_every: int = cli(100, "validate every N steps")
    checkpoint_every: int = cli(100, "save a resumable checkpoint every N steps")
    extra: dict = field(default_factory=dict)  # free-form notes kept with the run

    # Options that may differ when a run is resumed: where the files are (the trainer checks that
    # the split and the texture source are the same) and how fast it runs.
    RESUMABLE_CHANGES = (
        "device", "num_workers", "compile", "out_dir", "data_root", "texture_root",
        "good_dir", "test_good_dir", "test_defect_dir", "mask_dir",
    )

    def __post_init__(self) -> None:
        # Absolute, so the same config finds the same textures whatever the working folder.
        self.texture_root = str(Path(self.texture_root).expanduser().resolve())
        self.delta_range = tuple(float(v) for v in self.delta_range)
        self.perlin_scale_range = tuple(int(v) for v in self.perlin_scale_range)
        self.structure_grid = tuple(int(v) for v in self.structure_grid)
        self.image_size = _normalise_size(self.image_size)
        if self.simulation_file is not None:
            self._apply_simulation_file()
        for name in ("good_dir", "test_good_dir", "test_defect_dir", "mask_dir"):
            if getattr(self, name) is not None:
                setattr(self, name, str(Path(getattr(self, name)).expanduser().resolve()))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and its allowed values."""

        def need(condition: bool, message: str) -> None:
            if not condition:
                raise ValueError(f"TrainConfig: {message}")

        height, width = self.image_shape
        need(min(height, width) >= 32, f"image_size must be at least 32, got {self.image_size}")
        if self.center_crop is None:
            need(height % 32 == 0 and width % 32 == 0,
                 f"image_size must be a multiple of 32 (the encoder downsamples 32x), got {self.image_size}")
        if self.center_crop is not None:
            need(height == width, f"center_crop needs a square image_size, got {self.image_size}")
            need(self.center_crop % 32 == 0 and 32 <= self.center_crop <= height,
                 f"center_crop must be a multiple of 32 and at most image_size, got {self.center_crop}")
        need(self.resize in RESIZE_MODES, f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        need(self.good_dir is not None or (self.test_good_dir is None and self.test_defect_dir is None),
             "test_good_dir / test_defect_dir need good_dir (a plain folder of good training images)")
        need(self.mask_dir is None or self.test_defect_dir is not None, "mask_dir needs test_defect_dir")
        need(self.memory_size >= 1, f"memory_size must be >= 1, got {self.memory_size}")
        need(self.val_images >= 1, f"val_images must be >= 1, got {self.val_images}")
        need(self.val_anomalies_per_image >= 1,
             f"val_anomalies_per_image must be >= 1, got {self.val_anomalies_per_image}")
        need(self.val_recipe in VALIDATION_RECIPES,
             f"val_recipe must be one of {VALIDATION_RECIPES}, got {self.val_recipe!r}")
        need(self.selection_metric in SELECTION_METRICS,
             f"selection_metric must be one of {tuple(SELECTION_METRICS)}, got {self.selection_metric!r}")
        need(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        need(
            isinstance(self.seed, int) and self.seed >= 0,
            f"seed (--seed) must be a whole number >= 0, got {self.seed!r}",
        )
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.warmup_fraction < 1, f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        need(self.l1_weight >= 0 and self.focal_weight >= 0 and self.l1_weight + self.focal_weight > 0,
             "l1_weight and focal_weight must be >= 0 and not both 0")
        need(self.focal_gamma >= 0, f"focal_gamma must be >= 0, got {self.focal_gamma}")
        need(self.selection_rule in SELECTION_RULES,
             f"selection_rule must be one of {SELECTION_RULES}, got {self.selection_rule!r}")
        need(self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}")
        need(isinstance(self.use_memory, bool) and isinstance(self.use_attention, bool),
             "use_memory and use_attention must be true or false")
        need(self.fusion in ("msff", "plain"), f"fusion must be 'msff' or 'plain' (no MSFF), got {self.fusion!r}")
        need(self.feature_smoothing in ("none", "avgpool3"),
             f"feature_smoothing must be 'none' or 'avgpool3', got {self.feature_smoothing!r}")
        need(self.di_scale > 0 and self.feature_scale > 0,
             f"di_scale and feature_scale must be > 0, got {self.di_scale} and {self.feature_scale}")
        need(0 <= self.p_normal <= 1 and 0 <= self.p_texture <= 1, "p_normal and p_texture must be in [0, 1]")
        need(
            0 < self.delta_range[0] <= self.delta_range[1] <= 1,
            f"delta_range must satisfy 0 < lo <= hi <= 1, got {self.delta_range}",
        )
        need(self.max_tries >= 1, f"max_tries must be >= 1, got {self.max_tries}")
        if self.foreground is not None:  # imported here: the CLI builds a TrainConfig for --help without torch
            from memseg_lite.simulation.foreground import FOREGROUND_SETTINGS

            need(self.foreground in ("none", "otsu", *FOREGROUND_SETTINGS),
                 f"foreground must be 'none', 'otsu' or a category with its own settings "
                 f"({', '.join(sorted(FOREGROUND_SETTINGS))}), got {self.foreground!r}; leave it unset for the "
                 "category's own setting (Otsu for categories not listed)")
        if self.foreground_settings is not None:
            from memseg_lite.simulation.foreground import ForegroundSettings

            try:
                ForegroundSettings(**self.foreground_settings)
            except (TypeError, ValueError) as error:
                raise ValueError(f"TrainConfig: foreground_settings: {error}") from error
        need(self.synthesis in SYNTHESIS_PLACES, f"synthesis must be one of {SYNTHESIS_PLACES}, got {self.synthesis!r}")
        need(self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        need(self.num_workers is None or self.num_workers >= 0,
             f"num_workers must be >= 0 (or None: chosen for the device), got {self.num_workers}")
        need(self.val_every >= 1 and self.checkpoint_every >= 1, "val_every and checkpoint_every must be >= 1")

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(height, width)`` images are fitted to (before the optional center crop)."""
        return parse_size(self.image_size)

    def _apply_simulation_file(self) -> None:
        """Take the simulation options from ``simulation_file``; an option also set here must agree."""
        from memseg_lite.simulation.settings import SIMULATION_OPTIONS, load_simulation_settings

        path = Path(self.simulation_file).expanduser().resolve()
        self.simulation_file = str(path)
        settings = load_simulation_settings(path)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        from_file = {name: getattr(settings, name) for name in SIMULATION_OPTIONS}
        from_file["foreground_settings"] = dataclasses.asdict(settings.foreground)
        if settings.texture_root is not None:  # relative to the settings file's folder
            from_file["texture_root"] = str((path.parent / settings.texture_root).expanduser().resolve())
            defaults["texture_root"] = str(Path(defaults["texture_root"]).expanduser().resolve())
        def plain(value):
            return list(value) if isinstance(value, (tuple, list)) else value

        for name, value in from_file.items():
            mine, theirs = plain(getattr(self, name)), plain(value)
            if mine != plain(defaults[name]) and mine != theirs:
                raise ValueError(
                    f"TrainConfig: {name}={mine!r} contradicts the simulation file {path} ({name}={theirs!r}); "
                    "set it in one place (edit the file, or leave the option unset), or the file changed since the "
                    "run started"
                )
            setattr(self, name, value)
        if self.foreground is not None:
            raise ValueError(
                f"TrainConfig: foreground={self.foreground!r} and the simulation file {path} both set the foreground; "
                "leave --foreground unset (the file's foreground settings are used)"
            )

    @property
    def input_size(self) -> int | tuple[int, int]:
        """The network input: its side (square) or ``(height, width)``, after the optional center crop."""
        return self.center_crop or self.image_size

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for key in ("delta_range", "perlin_scale_range", "structure_grid"):
            data[key] = list(data[key])
        if isinstance(data["image_size"], tuple):
            data["image_size"] = list(data["image_size"])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The config of a saved dict (``config.json``, a checkpoint's ``train_config``).

        Options missing from ``data`` take their defaults.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown option(s) {unknown}; known options: {sorted(known)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """The config saved in ``path`` (a run's ``config.json``); a clear error naming the file if it is bad."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object of options, found a {type(data).__name__}")
            return cls.from_dict(data)
        except (ValueError, TypeError) as error:  # json.JSONDecodeError is a ValueError
            raise ValueError(
                f"the run configuration {path} is unreadable ({type(error).__name__}: {error}); restore it "
                "(it is the TrainConfig the run was started with), or start over with --restart"
            ) from None

    def save(self, path: str | Path) -> Path:
        from memseg_lite.core.io import write_text_atomic

        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def changes_blocking_resume(self, saved: TrainConfig) -> list[str]:
        """Fields that differ from the config a run was started with and forbid resuming it."""
        mine, theirs = self.to_dict(), saved.to_dict()
        return [name for name in mine if mine[name] != theirs[name] and name not in self.RESUMABLE_CHANGES]


def _normalise_size(value) -> int | tuple[int, int]:
    """``S`` stays an int (square runs keep their config unchanged); ``HxW`` becomes ``(H, W)``, or ``S``
    when H == W."""
    try:
        height, width = parse_size(value)
    except ValueError as error:
        raise ValueError(f"TrainConfig: {error}") from None
    return height if height == width else (height, width)
