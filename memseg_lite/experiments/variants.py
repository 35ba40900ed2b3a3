"""The named variants of the ablation study: the TrainConfig options each one changes against ``full``.

Imports no torch, so ``memseg-lite ablate --help`` can list them.
"""

from __future__ import annotations

from memseg_lite.training.presets import authors_code_options

#: Named variants: the TrainConfig options each one sets (a callable takes the category).
VARIANTS: dict = {
    "full": {},
    "no_memory": {"use_memory": False},
    "no_attention": {"use_attention": False},
    "no_msff": {"fusion": "plain"},
    "texture_only": {"p_texture": 1.0},
    "structure_only": {"p_texture": 0.0},
    "no_foreground": {"foreground": "none"},
    "avgpool3": {"feature_smoothing": "avgpool3"},
    "authors_code": authors_code_options,
}
DEFAULT_VARIANTS = ("full", "no_memory", "no_attention", "no_msff", "texture_only", "structure_only", "no_foreground")
#: Options that belong to the whole study, never to a variant.
COMMON_ONLY = ("data_root", "category", "out_dir", "seed")


def variant_options(name: str, category: str) -> dict:
    """The options variant ``name`` sets for ``category``; a clear error for an unknown name."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known variants: {', '.join(VARIANTS)}")
    options = VARIANTS[name]
    return dict(options(category) if callable(options) else options)
