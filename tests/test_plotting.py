"""save_figure: a PNG and an SVG of the same figure, written atomically, and clear errors on bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from memseg_lite.core.io import read_image
from memseg_lite.teaching.plotting import save_figure


def _figure(width=4, height=3):
    fig, axis = plt.subplots(figsize=(width, height))
    shown = axis.imshow(np.arange(12.0).reshape(3, 4), cmap="magma")
    fig.colorbar(shown, ax=axis, label="value")
    axis.set_xlabel("column")
    axis.set_ylabel("row")
    return fig


def test_save_figure_writes_png_and_svg(tmp_path):
    fig = _figure()
    out = tmp_path / "figures" / "deeper"  # created when missing
    written = save_figure(fig, "attention_maps", out_dir=out, dpi=50)
    plt.close(fig)
    assert set(written) == {"png", "svg"}
    assert written["png"] == out / "attention_maps.png" and written["svg"] == out / "attention_maps.svg"
    png = read_image(written["png"])  # decodes as an image
    assert png.ndim == 3 and png.shape[2] == 3 and png.shape[0] > 50 and png.shape[1] > 50
    assert png.std() > 0  # not a blank picture
    svg = written["svg"].read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and svg.rstrip().endswith("</svg>")
    assert sorted(path.name for path in out.iterdir()) == ["attention_maps.png", "attention_maps.svg"]  # no temporaries


def test_save_figure_replaces_an_existing_file(tmp_path):
    small, large = _figure(2, 2), _figure(6, 4)
    first = save_figure(small, "figure", out_dir=tmp_path, dpi=40)["png"]
    size_before = read_image(first).shape
    save_figure(large, "figure", out_dir=tmp_path, dpi=40)
    plt.close(small)
    plt.close(large)
    assert read_image(first).shape[1] > size_before[1]  # the wider figure replaced the narrow one
    assert sorted(path.name for path in tmp_path.iterdir()) == ["figure.png", "figure.svg"]


def test_save_figure_failure_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    fig = _figure()
    save_figure(fig, "kept", out_dir=tmp_path, dpi=40)
    before = (tmp_path / "kept.png").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, "kept", out_dir=tmp_path)
    plt.close(fig)
    assert (tmp_path / "kept.png").read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept.png", "kept.svg"]


@pytest.mark.parametrize("name", ["maps.png", "sub/maps", "", "../maps", "two words"])
def test_save_figure_rejects_bad_names(tmp_path, name):
    fig = _figure()
    with pytest.raises(ValueError, match="name="):
        save_figure(fig, name, out_dir=tmp_path)
    plt.close(fig)
    assert list(tmp_path.iterdir()) == []


def test_save_figure_rejects_a_non_figure_and_a_file_as_folder(tmp_path):
    with pytest.raises(ValueError, match="matplotlib Figure"):
        save_figure(np.zeros((3, 3)), "maps", out_dir=tmp_path)
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    fig = _figure()
    with pytest.raises(ValueError, match="out_dir="):
        save_figure(fig, "maps", out_dir=not_a_folder)
    plt.close(fig)
