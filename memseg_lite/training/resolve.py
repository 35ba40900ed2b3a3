"""From what a user typed to the :class:`TrainConfig` of a run: the rules ``memseg-lite train`` applies.

1. A plain folder of good images names the product: ``--good photos/good`` -> category ``photos``.
2. A preset (``--variant authors_code``: :mod:`memseg_lite.training.presets`) fills in its
   options under the ones given: what the user set wins.
3. The run folder defaults to ``runs/<category>``.
4. ``--resume`` starts from the settings the run was made with (its ``config.json``); options
   given now go on top, and the trainer refuses those that may not change mid-run.
"""

from __future__ import annotations

import os
from pathlib import Path

from memseg_lite.training.config import TrainConfig
from memseg_lite.training.presets import preset_options
from memseg_lite.training.trainer import CHECKPOINT_NAME, CONFIG_NAME


def category_from_folder(good_dir: str | os.PathLike) -> str:
    """The product a folder of good images is named after: ``photos/good`` -> ``photos``, ``photos`` -> ``photos``."""
    good = Path(good_dir).expanduser().resolve()
    return good.parent.name if good.name.lower() == "good" and good.parent.name else good.name


def resolve_options(given: dict, variant: str | None = None) -> dict:
    """``given`` (TrainConfig options the user set) completed by rules 1-3 above; ``given`` is not changed."""
    options = dict(given)
    if "good_dir" in options and "category" not in options:
        options["category"] = category_from_folder(options["good_dir"])
    category = options.get("category", TrainConfig.category)
    options = {**preset_options(variant, category), **options}
    options["out_dir"] = str(options.get("out_dir", Path("runs") / category))
    return options


def config_for_run(options: dict, resume: bool = False) -> TrainConfig:
    """The TrainConfig of a run (rule 4): with ``resume`` and a saved run in ``options["out_dir"]``,
    its saved settings under ``options``; otherwise ``options`` over the defaults."""
    out_dir = Path(options.get("out_dir", TrainConfig.out_dir))
    saved = out_dir / CONFIG_NAME
    if resume and (out_dir / CHECKPOINT_NAME).is_file() and saved.is_file():
        return TrainConfig.from_dict({**TrainConfig.load(saved).to_dict(), **options})
    return TrainConfig(**options)
