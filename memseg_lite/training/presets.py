"""Named settings of published code, as :class:`~memseg_lite.training.config.TrainConfig` options.

``memseg-lite train --variant authors_code`` (options set on the command line win), the
``authors_code`` variant of ``memseg-lite ablate`` and the accuracy study's ``authors_code`` cell
all read them here.

The authors' released code (areylng/MemSeg, as reviewed in issue 13): memory size 30 images,
except screw 120 and toothbrush 10; layer1-3 features average-pooled 3x3 (stride 1) before the
memory comparison; the closest memory sample chosen per level (the "official" selection rule);
DI and features multiplied by 100 before the decoder, DI by 1000 for transistor, features by 1
for cable and transistor. TooTouch/MemSeg uses 30 memory images for every category and no
scaling; where the two differ, this preset follows the authors' code (it is what their
published numbers were produced with), and the defaults (the "paper" variant) follow neither.
"""

from __future__ import annotations

AUTHORS_MEMORY_SIZE = {"screw": 120, "toothbrush": 10}  # others: 30 (areylng/MemSeg configs)
AUTHORS_DI_SCALE = {"transistor": 1000.0}  # others: 100 (areylng/MemSeg)
AUTHORS_FEATURE_SCALE = {"cable": 1.0, "transistor": 1.0}  # others: 100 (areylng/MemSeg)
#: The values of ``memseg-lite train --variant``.
VARIANT_NAMES = ("paper", "authors_code")


def authors_code_options(category: str) -> dict:
    """The :class:`TrainConfig` options of the authors' released code for ``category``.

    Categories the authors' code does not list get its general values (30 memory images,
    scales 100 / 100).
    """
    if not isinstance(category, str) or not category:
        raise ValueError(f"category must be a non-empty string, got {category!r}")
    return {
        "memory_size": AUTHORS_MEMORY_SIZE.get(category, 30),
        "feature_smoothing": "avgpool3",
        "selection_rule": "official",
        "di_scale": AUTHORS_DI_SCALE.get(category, 100.0),
        "feature_scale": AUTHORS_FEATURE_SCALE.get(category, 100.0),
    }


def preset_options(variant: str | None, category: str) -> dict:
    """The options ``--variant`` sets for ``category`` (``paper`` or None: none, the defaults)."""
    if variant in (None, "paper"):
        return {}
    if variant == "authors_code":
        return authors_code_options(category)
    raise ValueError(f"unknown variant {variant!r}; known variants: {', '.join(VARIANT_NAMES)}")
