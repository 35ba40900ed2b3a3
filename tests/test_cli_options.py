"""The command-line options generated from TrainConfig, and the run resolution behind ``train`` / ``evaluate``."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from memseg_lite.cli import ABLATE_OPTIONS, REPRODUCE_OPTIONS, build_parser
from memseg_lite.experiments.runs import checkpoints_to_evaluate
from memseg_lite.training.config import TrainConfig
from memseg_lite.training.options import add_config_options, cli_fields, flag_for, given_options, shown_default
from memseg_lite.training.presets import authors_code_options
from memseg_lite.training.resolve import category_from_folder, config_for_run, resolve_options


def _sample_value(name: str):
    """A valid non-default value for field ``name`` as the user would type it, and the value the config gets."""
    default = getattr(TrainConfig(), name)
    choices = cli_fields()[name].metadata["cli"]["choices"]
    if choices is not None:
        other = next(choice for choice in choices if choice != default)
        return [other], other
    if name == "image_size":
        return ["128x256"], (128, 256)
    if name == "center_crop":
        return ["--image-size", "288", "224"], 224  # needs a square image_size
    if isinstance(default, bool):
        return [], not default  # --no-X / --X, see below
    if name in ("good_dir", "test_good_dir", "test_defect_dir", "mask_dir", "simulation_file", "foreground"):
        return None, None  # need files or other options: covered by their own tests
    if isinstance(default, int) and default is not True:
        return [str(default + 3)], default + 3
    if isinstance(default, float):
        return [repr(default / 2)], default / 2
    if name == "num_workers":
        return ["2"], 2
    if isinstance(default, str):
        return ["some-value"], "some-value"
    raise AssertionError(f"no sample for {name}")


def test_every_cli_field_is_a_train_option_that_reaches_the_config():
    parser = build_parser()
    checked = 0
    for name in cli_fields():
        typed, expected = _sample_value(name)
        if typed is None:
            continue
        flag = flag_for(name)
        if isinstance(expected, bool):
            argv = [flag if expected else "--no-" + flag[2:]]
        elif typed and typed[0].startswith("--"):
            argv = [*typed[:2], flag, typed[2]]
        else:
            argv = [flag, *typed]
        args = parser.parse_args(["train", *argv])
        given = given_options(args)
        assert given[name] is not None, name
        if name in ("backbone_weights", "device", "texture_root", "data_root", "category", "out_dir"):
            assert given[name] == expected, name  # free-form strings: checked where they are used
        else:
            config = TrainConfig(**given)
            assert getattr(config, name) == expected, (name, getattr(config, name), expected)
        checked += 1
    assert checked >= 30


def test_unset_options_are_not_given_and_defaults_come_from_trainconfig():
    args = build_parser().parse_args(["train"])
    assert given_options(args) == {}
    args = build_parser().parse_args(["train", "--steps", "7", "--no-memory"])
    assert given_options(args) == {"steps": 7, "use_memory": False}
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    defaults = TrainConfig()
    for name in ("steps", "batch_size", "lr", "memory_size", "val_images", "top_k", "seed", "val_recipe"):
        assert f"[{getattr(defaults, name)}]" in " ".join(help_text.split()), name


@pytest.mark.parametrize("command, names", [("ablate", ABLATE_OPTIONS), ("reproduce", REPRODUCE_OPTIONS)])
def test_study_commands_show_the_trainconfig_defaults(command, names):
    subparsers = build_parser()._subparsers._group_actions[0]
    help_text = " ".join(subparsers.choices[command].format_help().split())
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name in names:
        assert flag_for(name) in help_text, name
        default = fields[name].default
        if cli_fields()[name].metadata["cli"]["shown"] is None and default is not None:
            assert f"[{default}" in help_text, (command, name, default)  # the number the code uses
    assert "the authors_code variant sets its own" in help_text or command != "ablate"


def test_ablate_passes_only_what_was_given():
    args = build_parser().parse_args(["ablate", "--data-root", "d", "--category", "c", "--out", "o",
                                      "--steps", "12", "--image-size", "64", "--workers", "0"])
    assert given_options(args) == {"steps": 12, "image_size": "64", "num_workers": 0}


def test_add_config_options_rejects_unknown_names_and_stray_notes():
    with pytest.raises(KeyError, match="warmup_fraction"):
        add_config_options(argparse.ArgumentParser(), ["steps", "warmup_fraction"])
    with pytest.raises(KeyError, match="lr"):
        add_config_options(argparse.ArgumentParser(), ["steps"], notes={"lr": "x"})
    with pytest.raises(ValueError, match="add_config_options"):
        given_options(argparse.Namespace(steps=3))


def test_shown_default_of_switches_and_unset_values():
    assert shown_default("use_memory") == "on"
    assert shown_default("compile") == "off"
    assert shown_default("center_crop") == "off"
    assert shown_default("out_dir") == "runs/<category>"
    assert flag_for("out_dir") == "--out" and flag_for("num_workers") == "--workers"
    with pytest.raises(KeyError):
        flag_for("warmup_fraction")


def test_category_from_a_plain_folder(tmp_path):
    (tmp_path / "photos" / "good").mkdir(parents=True)
    assert category_from_folder(tmp_path / "photos" / "good") == "photos"
    assert category_from_folder(tmp_path / "photos") == "photos"
    assert category_from_folder(tmp_path / "photos" / "GOOD") == "photos"


def test_resolve_options_applies_the_rules_in_order(tmp_path):
    options = resolve_options({"good_dir": str(tmp_path / "cans" / "good")})
    assert options["category"] == "cans" and options["out_dir"] == "runs/cans"
    given = {"category": "screw", "memory_size": 7}
    options = resolve_options(given, variant="authors_code")
    assert given == {"category": "screw", "memory_size": 7}  # the caller's dict is untouched
    assert options == {**authors_code_options("screw"), "category": "screw", "memory_size": 7,
                       "out_dir": "runs/screw"}  # the user's memory_size wins over the preset's 120
    assert resolve_options({}, variant="paper") == {"out_dir": f"runs/{TrainConfig.category}"}
    with pytest.raises(ValueError, match="unknown variant"):
        resolve_options({}, variant="mine")


def test_config_for_run_starts_a_resumed_run_from_its_saved_settings(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = TrainConfig(out_dir=str(run), steps=40, memory_size=5, image_size=64)
    saved.save(run / "config.json")
    # No checkpoint yet: nothing to resume, the options over the defaults.
    assert config_for_run({"out_dir": str(run), "steps": 80}, resume=True).memory_size == TrainConfig.memory_size
    (run / "checkpoint.pt").write_bytes(b"placeholder: only its existence matters here")
    resumed = config_for_run({"out_dir": str(run), "steps": 80}, resume=True)
    assert (resumed.steps, resumed.memory_size, resumed.image_size) == (80, 5, 64)
    fresh = config_for_run({"out_dir": str(run), "steps": 80}, resume=False)
    assert fresh.memory_size == TrainConfig.memory_size
    (run / "config.json").write_text(json.dumps({"steps": 3, "no_such_option": 1}))
    with pytest.raises(ValueError, match="config.json"):
        config_for_run({"out_dir": str(run)}, resume=True)


def test_checkpoints_to_evaluate(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match="without best.pt or checkpoint.pt"):
        checkpoints_to_evaluate(run)
    (run / "checkpoint.pt").write_bytes(b"x")
    only_last = checkpoints_to_evaluate(run)
    assert (only_last.best, only_last.last) == (run / "checkpoint.pt", None) and "no best.pt" in only_last.note
    (run / "best.pt").write_bytes(b"x")
    both = checkpoints_to_evaluate(run)
    assert (both.run_dir, both.best, both.last, both.note) == (run, run / "best.pt", run / "checkpoint.pt", None)
    assert checkpoints_to_evaluate(run / "best.pt").last is None
    assert checkpoints_to_evaluate(run / "best.pt", also_last=True).last == run / "checkpoint.pt"
    assert checkpoints_to_evaluate(run / "checkpoint.pt", also_last=True).last is None  # the last model itself
    other = tmp_path / "other"
    other.mkdir()
    (other / "best.pt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="--also-last"):
        checkpoints_to_evaluate(other / "best.pt", also_last=True)
