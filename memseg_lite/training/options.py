"""Command-line options generated from :class:`~memseg_lite.training.config.TrainConfig`.

A field declared with :func:`memseg_lite.training.config.cli` becomes ``--flag`` (its name with
dashes, unless the field names another flag) with the field's help text and its default in
brackets, so ``train --help`` and ``ablate --help`` always show the defaults the code uses.
Every generated option defaults to ``None`` on the parser: :func:`given_options` then returns
only what the user typed, which is what ``--resume`` (the run's saved settings under what was
given) and the ``authors_code`` preset (options you set win) need.

Imports no torch, so ``memseg-lite --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence

from memseg_lite.training.config import TrainConfig

_CONFIG_FIELDS = "_config_fields"  # the parser default that records which fields a command took


def cli_fields() -> dict[str, dataclasses.Field]:
    """Field name -> field, for the TrainConfig fields that are command-line options, in field order."""
    return {f.name: f for f in dataclasses.fields(TrainConfig) if "cli" in f.metadata}


def flag_for(name: str) -> str:
    """The command-line flag of TrainConfig field ``name`` (``out_dir`` -> ``--out``)."""
    fields = cli_fields()
    if name not in fields:
        raise KeyError(f"{name!r} is not a command-line option of TrainConfig; options: {', '.join(fields)}")
    return fields[name].metadata["cli"]["flag"] or "--" + name.replace("_", "-")


def _value_type(name: str):
    """The argparse type of a field from its annotation: ``int | None`` -> int, ``bool`` -> bool."""
    annotation = typing.get_type_hints(TrainConfig)[name]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
        if len(kinds) != 1:
            raise TypeError(f"TrainConfig.{name}: give cli(type=...) for the union {annotation}")
        annotation = kinds[0]
    if annotation not in (bool, int, float, str):
        raise TypeError(f"TrainConfig.{name}: give cli(type=...) for the type {annotation}")
    return annotation


def shown_default(name: str) -> str:
    """The default of field ``name`` as ``--help`` shows it."""
    spec = cli_fields()[name]
    if spec.metadata["cli"]["shown"] is not None:
        return spec.metadata["cli"]["shown"]
    default = spec.default
    if isinstance(default, bool):
        return "on" if default else "off"
    return "off" if default is None else str(default)


def add_config_options(parser: argparse.ArgumentParser, names: Sequence[str] | None = None,
                       notes: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Add the options of the TrainConfig fields ``names`` (default: every command-line field) to ``parser``.

    ``notes`` adds a command's own remark to a field's default, e.g. ``{"memory_size": "the
    authors_code variant sets its own"}``. Returns the names added; :func:`given_options` reads them.
    """
    fields = cli_fields()
    names = tuple(fields) if names is None else tuple(names)
    unknown = [name for name in names if name not in fields]
    if unknown:
        raise KeyError(f"not command-line options of TrainConfig: {unknown}; options: {', '.join(fields)}")
    notes = dict(notes or {})
    stray = set(notes) - set(names)
    if stray:
        raise KeyError(f"notes for options this command does not take: {sorted(stray)}")
    for name in names:
        spec = fields[name].metadata["cli"]
        shown = shown_default(name) + (f"; {notes[name]}" if name in notes else "")
        value_type = spec["type"] or _value_type(name)
        keywords = {"dest": name, "default": None, "help": f"{spec['help']} [{shown}]"}
        if value_type is bool:
            keywords["action"] = argparse.BooleanOptionalAction
        else:
            keywords["type"] = value_type
            if spec["choices"] is not None:
                keywords["choices"] = tuple(spec["choices"])
            else:  # "--workers WORKERS", not the field name
                keywords["metavar"] = flag_for(name).lstrip("-").upper().replace("-", "_")
        parser.add_argument(flag_for(name), **keywords)
    already = parser.get_default(_CONFIG_FIELDS) or ()
    parser.set_defaults(**{_CONFIG_FIELDS: (*already, *names)})
    return names


def given_options(args: argparse.Namespace) -> dict:
    """The TrainConfig options the user set on the command line (those left unset are absent)."""
    names = getattr(args, _CONFIG_FIELDS, None)
    if names is None:
        raise ValueError("these arguments come from a parser without add_config_options")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}
