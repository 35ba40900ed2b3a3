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

from memseg_lite.network.selection import SELECTION_RULES

AMP_MODES = ("auto", "off", "bf16", "fp16")
SYNTHESIS_PLACES = ("loader", "device")


@dataclass
class TrainConfig:
    # data
    data_root: str = "data/demo"
    category: str = "button"
    out_dir: str = "runs/button"
    image_size: int = 256
    center_crop: int | None = None  # e.g. image_size=288, center_crop=256 as in tootouch
    memory_size: int = 30
    val_images: int = 10  # held-out train/good images for validation (never the test split)
    val_anomalies_per_image: int = 2
    # optimisation
    steps: int = 5000
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.1
    l1_weight: float = 0.6
    focal_weight: float = 0.4
    focal_gamma: float = 4.0
    focal_alpha: float | None = None
    # model
    backbone_weights: str = "auto"
    selection_rule: str = "paper"
    top_k: int = 100
    # anomaly simulation
    p_normal: float = 0.5
    p_texture: float = 0.5
    delta_range: tuple[float, float] = (0.15, 1.0)
    perlin_scale_range: tuple[int, int] = (0, 5)
    perlin_threshold: float = 0.5
    structure_grid: tuple[int, int] = (4, 8)
    foreground: str | None = None  # None: the category's settings; or "none" / "otsu" / a category name
    max_tries: int = 50  # Perlin redraws before a sample on a tiny foreground gives up
    texture_root: str = "data/dtd"
    # Where anomalies are simulated: "loader" (numpy, in the DataLoader's worker processes) or
    # "device" (batched torch on the training device, e.g. the GPU; memseg_lite.simulation.synthesis.TorchAnomalySynthesizer)
    synthesis: str = "loader"
    # runtime
    device: str = "auto"
    amp: str = "auto"  # autocast: bf16 where supported on CUDA, else fp16 with a grad scaler; off on CPU
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool = False
    num_workers: int = 0
    seed: int = 0
    val_every: int = 100
    checkpoint_every: int = 100
    extra: dict = field(default_factory=dict)  # free-form notes kept with the run

    # Options that may differ when a run is resumed: where the files are (the trainer checks that
    # the split and the texture source are the same) and how fast it runs.
    RESUMABLE_CHANGES = ("device", "num_workers", "compile", "out_dir", "data_root", "texture_root")

    def __post_init__(self) -> None:
        # Absolute, so the same config finds the same textures whatever the working folder.
        self.texture_root = str(Path(self.texture_root).expanduser().resolve())
        self.delta_range = tuple(float(v) for v in self.delta_range)
        self.perlin_scale_range = tuple(int(v) for v in self.perlin_scale_range)
        self.structure_grid = tuple(int(v) for v in self.structure_grid)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and its allowed values."""

        def need(condition: bool, message: str) -> None:
            if not condition:
                raise ValueError(f"TrainConfig: {message}")

        need(self.image_size >= 32, f"image_size must be at least 32, got {self.image_size}")
        if self.center_crop is None:
            need(self.image_size % 32 == 0,
                 f"image_size must be a multiple of 32 (the encoder downsamples 32x), got {self.image_size}")
        if self.center_crop is not None:
            need(self.center_crop % 32 == 0 and 32 <= self.center_crop <= self.image_size,
                 f"center_crop must be a multiple of 32 and at most image_size, got {self.center_crop}")
        need(self.memory_size >= 1, f"memory_size must be >= 1, got {self.memory_size}")
        need(self.val_images >= 1, f"val_images must be >= 1, got {self.val_images}")
        need(self.val_anomalies_per_image >= 1, "val_anomalies_per_image must be >= 1")
        need(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
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
        need(0 <= self.p_normal <= 1 and 0 <= self.p_texture <= 1, "p_normal and p_texture must be in [0, 1]")
        need(0 < self.delta_range[0] <= self.delta_range[1] <= 1, f"delta_range must satisfy 0 < lo <= hi <= 1, got {self.delta_range}")
        need(self.max_tries >= 1, f"max_tries must be >= 1, got {self.max_tries}")
        need(self.synthesis in SYNTHESIS_PLACES, f"synthesis must be one of {SYNTHESIS_PLACES}, got {self.synthesis!r}")
        need(self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        need(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        need(self.val_every >= 1 and self.checkpoint_every >= 1, "val_every and checkpoint_every must be >= 1")

    @property
    def input_size(self) -> int:
        """Side length of the network input (after the optional center crop)."""
        return self.center_crop or self.image_size

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for key in ("delta_range", "perlin_scale_range", "structure_grid"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown option(s) {unknown}; known options: {sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        from memseg_lite.core.io import write_text_atomic

        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def changes_blocking_resume(self, saved: TrainConfig) -> list[str]:
        """Fields that differ from the config a run was started with and forbid resuming it."""
        mine, theirs = self.to_dict(), saved.to_dict()
        return [name for name in mine if mine[name] != theirs[name] and name not in self.RESUMABLE_CHANGES]
