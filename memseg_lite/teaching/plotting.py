"""Figures for the workbook: the MemSeg data-flow diagram, and saving any figure for slides."""

from __future__ import annotations

import os
import re
from pathlib import Path

from memseg_lite.core.io import atomic_output

#: the formats :func:`save_figure` writes: PNG for slides and documents, SVG for editing and print
FIGURE_FORMATS = ("png", "svg")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def save_figure(fig, name: str, out_dir: str | os.PathLike = "outputs/figures", dpi: int = 200) -> dict[str, Path]:
    """Save a matplotlib figure as ``<out_dir>/<name>.png`` and ``<out_dir>/<name>.svg``, each atomically.

    Args:
        fig: a ``matplotlib.figure.Figure`` (``plt.gcf()`` for the current one).
        name: the file stem: letters, digits, ``.``, ``_`` and ``-`` (no folders, no extension).
        out_dir: created when missing; relative paths are relative to the working directory
            (the notebook's folder in Jupyter).
        dpi: resolution of the PNG (the SVG is vector graphics).

    Returns:
        ``{"png": path, "svg": path}``. An existing file of the same name is replaced in one rename,
        so a reader never sees half a picture.
    """
    if not hasattr(fig, "savefig"):
        raise ValueError(f"fig must be a matplotlib Figure (e.g. plt.gcf()), got {type(fig).__name__}")
    name = str(name)
    if name.lower().endswith(tuple(f".{extension}" for extension in FIGURE_FORMATS)):
        raise ValueError(f"name={name!r}: give the file stem without an extension; PNG and SVG are both written")
    if not _NAME.match(name):
        raise ValueError(f"name={name!r} is not a plain file stem: use letters, digits, '.', '_' and '-' only "
                         "(no folders: pass those as out_dir)")
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"out_dir={str(folder)!r} exists and is not a folder; pass a folder path")
    written = {}
    for extension in FIGURE_FORMATS:
        path = folder / f"{name}.{extension}"
        with atomic_output(path) as temporary:
            fig.savefig(temporary, format=extension, dpi=dpi, bbox_inches="tight")
        written[extension] = path
    return written


def memseg_diagram(axis=None):
    """Draw MemSeg's data flow (encoder, memory pool, MSFF, decoder) on a matplotlib axis."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if axis is None:
        _, axis = plt.subplots(figsize=(13, 6.4))
    frozen, trainable, memory, fusion, io = "#d9d9d9", "#b7e1a1", "#f6d186", "#a9c9f5", "#ffffff"
    gold = "#a07400"

    def box(x, y, text, colour, width=2.2, height=0.62):
        axis.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.04",
                                      facecolor=colour, edgecolor="#333333", lw=1, zorder=3))
        axis.text(x, y, text, ha="center", va="center", fontsize=7.6, zorder=4)

    def arrow(start, end, colour="#333333", ls="-", head=True):
        axis.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>" if head else "-", mutation_scale=11, color=colour,
                                       lw=1.1, ls=ls, shrinkA=0, shrinkB=0, zorder=2))

    half = 0.35  # half box height plus padding
    encoder_x, concat_x, msff_x, decoder_x = 0.0, 3.4, 6.6, 9.9
    box(encoder_x, 6.1, "input image\n3 @ H x W", io)
    arrow((encoder_x, 6.1 - half), (encoder_x, 5.0 + half))
    box(encoder_x, 5.0, "stem\n64 @ H/2", frozen)
    decoder_widths = {2.0: 256, 3.0: 128, 4.0: 64}
    for level, (y, channels, scale) in enumerate([(4.0, 64, 4), (3.0, 128, 8), (2.0, 256, 16)], start=1):
        box(encoder_x, y, f"layer{level}\n{channels} @ H/{scale}", frozen)
        arrow((encoder_x, y + 1 - half), (encoder_x, y + half))
        box(concat_x, y, f"concat [II{level}, DI*{level}]\n{2 * channels} @ H/{scale}", fusion)
        arrow((encoder_x + 1.15, y), (concat_x - 1.15, y))
        box(msff_x, y, f"MSFF: conv + CA, 2 convs\n{channels} @ H/{scale}, times M{level}", fusion, width=2.7)
        arrow((concat_x + 1.15, y), (msff_x - 1.4, y))
        box(decoder_x, y, f"up x2, concat skip, convs\n{decoder_widths[y]} @ H/{scale}", trainable, width=2.6)
        arrow((msff_x + 1.4, y), (decoder_x - 1.35, y))
    box(decoder_x, 5.0, "up x2, concat stem, convs\n48 @ H/2", trainable, width=2.6)
    box(encoder_x, 1.0, "layer4 (trained)\n512 @ H/32", trainable)
    arrow((encoder_x, 2.0 - half), (encoder_x, 1.0 + half))
    arrow((encoder_x + 1.15, 1.0), (decoder_x, 1.0), head=False)
    arrow((decoder_x, 1.0), (decoder_x, 2.0 - half))
    for y in (2.0, 3.0, 4.0, 5.0):
        arrow((decoder_x, y + half), (decoder_x, y + 1 - half))
    box(decoder_x, 6.1, "up x2, convs: 2 logits @ H x W\nsoftmax -> anomaly map", io, width=2.9)
    arrow((encoder_x + 1.15, 5.0), (decoder_x - 1.35, 5.0), ls="--")
    axis.text(4.9, 5.1, "stem skip", fontsize=7.5, color="#555555")
    axis.text(msff_x, 4.5, "top-down: coarser level upsampled, convolved, added", ha="center", fontsize=7.5,
              color="#1f4e99")
    for y in (2.0, 3.0):
        arrow((msff_x + 0.9, y + half), (msff_x + 0.9, y + 1 - half), colour="#1f4e99")

    box(concat_x - 0.4, -0.15, "memory pool: layer1-3 features of\nN good images; DI* = |MI* - II|", memory,
        width=3.4, height=0.7)
    box(msff_x + 0.4, -0.15, "spatial attention from DI*:\nM3, M2 = mean(DI*2) Up(M3), M1", memory, width=3.4,
        height=0.7)
    arrow((concat_x + 1.3, -0.15), (msff_x - 1.3, -0.15), colour=gold)
    arrow((concat_x, 0.2), (concat_x, 2.0 - half), colour=gold)
    arrow((msff_x - 0.3, 0.2), (msff_x - 0.3, 2.0 - half), colour=gold)
    for y in (2.0, 3.0):
        arrow((concat_x, y + half), (concat_x, y + 1 - half), colour=gold)
        arrow((msff_x - 0.3, y + half), (msff_x - 0.3, y + 1 - half), colour=gold)

    legend = [(frozen, "frozen (ImageNet or random init)"), (trainable, "trained"), (fusion, "fusion (trained)"),
              (memory, "memory / attention (no parameters)")]
    for i, (colour, label) in enumerate(legend):
        axis.add_patch(FancyBboxPatch((11.9, 5.9 - 0.5 * i), 0.35, 0.28, boxstyle="round,pad=0.02",
                                      facecolor=colour, edgecolor="#333333"))
        axis.text(12.4, 6.04 - 0.5 * i, label, va="center", fontsize=8)
    axis.set_xlim(-1.3, 15.6)
    axis.set_ylim(-0.65, 6.6)
    axis.set_axis_off()
    axis.set_title("MemSeg data flow (shapes for an H x W input)", fontsize=11)
    return axis
