"""Simulation settings files: what the anomaly explorer saves and ``memseg-lite train --simulation`` reads.

A settings file fixes everything the anomaly simulator (:class:`~memseg_lite.simulation.synthesis.AnomalySynthesizer`)
draws its samples from, so settings tuned on your own images in the explorer
(:mod:`memseg_lite.teaching.widgets`) give the same simulated samples in training. JSON
(``.json``), or YAML (``.yaml`` / ``.yml``, needs PyYAML)::

    {
      "format": "memseg-lite simulation settings",
      "version": 1,
      "foreground": {"mode": "threshold", "threshold": 40, "invert": false,
                     "min_fraction": 0.02, "kernel_size": 5, "fill_holes": true},
      "p_normal": 0.5,             # share of training samples left normal
      "p_texture": 0.5,            # texture (else structure) anomalies
      "delta_range": [0.15, 1.0],  # blend factor delta ~ U[low, high]; the method's range is [0.15, 1]
      "perlin_scale_range": [0, 5],
      "perlin_threshold": 0.5,
      "structure_grid": [4, 8],
      "max_tries": 50,
      "texture_root": null,        # a texture folder, or null: the training run's own (--texture-root)
      "notes": {}                  # free-form: where the settings came from (not used by training)
    }

Every key but ``format`` and ``version`` may be left out (then the training default applies); an
unknown key, a wrong type or a value out of range is an error naming the file and the key.
``version`` is the format version: files of a newer version than this code reads are refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from memseg_lite.core.io import write_text_atomic
from memseg_lite.simulation.foreground import ForegroundSettings

FORMAT_NAME = "memseg-lite simulation settings"
FORMAT_VERSION = 1
#: The simulator options a settings file holds besides the foreground (TrainConfig has a field for each).
SIMULATION_OPTIONS = (
    "p_normal", "p_texture", "delta_range", "perlin_scale_range", "perlin_threshold", "structure_grid", "max_tries",
)
#: The method's range of the blend factor delta (MemSeg, section 3.1).
METHOD_DELTA_RANGE = (0.15, 1.0)
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class SimulationSettings:
    """Foreground settings and simulator options (defaults: the training defaults)."""

    foreground: ForegroundSettings = field(default_factory=lambda: ForegroundSettings(mode="otsu", invert=None))
    p_normal: float = 0.5
    p_texture: float = 0.5
    delta_range: tuple[float, float] = METHOD_DELTA_RANGE
    perlin_scale_range: tuple[int, int] = (0, 5)
    perlin_threshold: float = 0.5
    structure_grid: tuple[int, int] = (4, 8)
    max_tries: int = 50
    texture_root: str | None = None
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from memseg_lite.simulation.synthesis import AnomalySynthesizer

        if not isinstance(self.foreground, ForegroundSettings):
            raise TypeError(f"foreground must be a ForegroundSettings, got {type(self.foreground).__name__}")
        # The simulator validates every option (its texture source is created lazily: nothing is loaded).
        AnomalySynthesizer(foreground=self.foreground, **self.options())
        low, high = self.delta_range
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(
                f"delta_range must satisfy 0 < low <= high <= 1 (the method uses [0.15, 1]), got {self.delta_range!r}"
            )
        if self.texture_root is not None and not isinstance(self.texture_root, str):
            raise TypeError(f"texture_root must be a folder name or None, got {type(self.texture_root).__name__}")
        if not isinstance(self.notes, dict):
            raise TypeError(f"notes must be a dict, got {type(self.notes).__name__}")

    def options(self) -> dict:
        """The simulator keyword arguments besides ``foreground`` and the texture source."""
        return {name: getattr(self, name) for name in SIMULATION_OPTIONS}

    def synthesizer_kwargs(self) -> dict:
        """Keyword arguments for :class:`~memseg_lite.simulation.synthesis.AnomalySynthesizer` (no texture source)."""
        return {"foreground": self.foreground, **self.options()}

    def to_dict(self) -> dict:
        data = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "foreground": dataclasses.asdict(self.foreground)}
        for name in SIMULATION_OPTIONS:
            value = getattr(self, name)
            data[name] = list(value) if isinstance(value, tuple) else value
        data["texture_root"] = self.texture_root
        data["notes"] = dict(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str = "simulation settings") -> SimulationSettings:
        """Parse and validate; errors name ``source`` (the file) and the key."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of settings at the top level, got {type(data).__name__}")
        if data.get("format") != FORMAT_NAME:
            raise ValueError(
                f"{source}: not a simulation settings file (expected \"format\": \"{FORMAT_NAME}\"); "
                "save one with the anomaly explorer's Save settings button or save_simulation_settings()"
            )
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"{source}: \"version\" must be a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{source}: format version {version} is newer than this memseg-lite reads ({FORMAT_VERSION}); "
                "update memseg-lite or save the settings again"
            )
        known = {"format", "version", "foreground", "texture_root", "notes", *SIMULATION_OPTIONS}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known keys: {sorted(known)}")
        kwargs: dict = {}
        if "foreground" in data:
            foreground = data["foreground"]
            if not isinstance(foreground, dict):
                raise ValueError(
                    f'{source}: "foreground" must be a mapping of ForegroundSettings fields, got {foreground!r}'
                )
            fields = {f.name for f in dataclasses.fields(ForegroundSettings)}
            unknown = sorted(set(foreground) - fields)
            if unknown:
                raise ValueError(f"{source}: unknown foreground key(s) {unknown}; known: {sorted(fields)}")
            try:
                kwargs["foreground"] = ForegroundSettings(**foreground)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{source}: foreground: {error}") from error
        for name in ("delta_range", "perlin_scale_range", "structure_grid"):
            if name in data:
                value = data[name]
                if not isinstance(value, (list, tuple)) or len(value) != 2:
                    raise ValueError(f"{source}: \"{name}\" must be a list of two numbers, got {value!r}")
                kwargs[name] = tuple(value)
        for name in ("p_normal", "p_texture", "perlin_threshold", "max_tries", "texture_root", "notes"):
            if name in data:
                kwargs[name] = data[name]
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from error


def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in YAML_SUFFIXES


def _yaml():
    try:
        import yaml
    except ImportError as error:  # pragma: no cover - PyYAML is in the dev extra
        raise ValueError("YAML settings files need PyYAML (pip install pyyaml); or use a .json file") from error
    return yaml


def save_simulation_settings(settings: SimulationSettings, path: str | os.PathLike) -> Path:
    """Write ``settings`` to ``path`` (JSON, or YAML for ``.yaml`` / ``.yml``), atomically."""
    if not isinstance(settings, SimulationSettings):
        raise TypeError(f"settings must be a SimulationSettings, got {type(settings).__name__}")
    path = Path(path)
    if path.suffix.lower() not in (".json", *YAML_SUFFIXES):
        raise ValueError(f"{path}: a settings file must end in .json, .yaml or .yml")
    data = settings.to_dict()
    text = _yaml().safe_dump(data, sort_keys=False) if _is_yaml(path) else json.dumps(data, indent=2) + "\n"
    return write_text_atomic(path, text)


def load_simulation_settings(path: str | os.PathLike) -> SimulationSettings:
    """Read and validate a settings file; ``FileNotFoundError`` / ``ValueError`` name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"simulation settings file {path} not found; save one with the anomaly explorer (Save settings) "
            "or memseg_lite.simulation.settings.save_simulation_settings"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:  # a binary file (an image, an archive) passed by mistake
        raise ValueError(
            f"simulation settings file {path} is not a text file (byte {error.start} is not UTF-8); pass the "
            ".json / .yaml file the anomaly explorer saved"
        ) from None
    try:
        data = _yaml().safe_load(text) if _is_yaml(path) else json.loads(text)
    except ValueError as error:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path}: not valid {'YAML' if _is_yaml(path) else 'JSON'}: {error}") from error
    except Exception as error:  # yaml.YAMLError
        raise ValueError(f"{path}: not valid YAML: {error}") from error
    return SimulationSettings.from_dict(data, source=str(path))
