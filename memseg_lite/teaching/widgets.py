"""An interactive explorer for the anomaly simulator (ipywidgets), testable without a browser.

All state is passed in (images, foreground settings, texture source); nothing is read from
notebook globals, so moving a slider after editing a later cell still shows what the controls
say. The callback runs once with the defaults when the explorer is built, then again whenever a
control changes (``observe`` callbacks fire synchronously, so tests can set ``control.value`` and
read ``explorer.result`` at once). Sliders redraw on release (``continuous_update=False``), and
the output area has a fixed height so the page does not jump.

Why not ``interact`` / ``interactive_output``: both draw inside ``with output:``, which makes the
Output widget *capture* messages by id. nbclient (used by papermill and nbconvert) mimics a
frontend for captured output and sends state updates back to the kernel; with those in flight
the next cell sometimes does not start until the cell timeout, or never when there is none
(reproduced here with nbclient 0.11 / ipywidgets 8.1 on a loaded machine). Writing the figure
into ``Output.outputs`` directly sends plain state updates and never stalls.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass, field

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from memseg_lite.simulation.foreground import ForegroundSettings
from memseg_lite.simulation.synthesis import AnomalySynthesizer, SynthesisResult
from memseg_lite.simulation.textures import TextureSource


def result_figure(result: SynthesisResult, title: str = "") -> Figure:
    """One row of panels: input region masks, noise image, result, target mask."""
    panels: list[tuple[str, np.ndarray, dict]] = []
    if result.foreground_mask is not None:
        overlay = np.stack([result.perlin_mask, result.foreground_mask, result.mask > 0], axis=-1).astype(np.float32)
        panels.append(("Perlin (red), foreground (green),\nM = both (blue)", overlay, {}))
    if result.noise_image is not None:
        panels.append((f"noise image ({result.kind})", result.noise_image, {"cmap": "gray"}))
    delta = f", delta = {result.delta:.2f}" if result.delta is not None else ""
    panels.append((f"simulated image{delta}", result.image, {"cmap": "gray"}))
    panels.append((f"target mask M ({result.mask.mean():.1%} of pixels)", result.mask, {"cmap": "gray", "vmin": 0, "vmax": 1}))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for axis, (name, picture, style) in zip(np.atleast_1d(axes), panels):
        picture = picture[..., 0] if picture.ndim == 3 and picture.shape[2] == 1 else picture
        if picture.dtype == np.uint8 and picture.ndim == 2:
            style = {**style, "vmin": 0, "vmax": 255}
        axis.imshow(picture, **style)
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@dataclass
class AnomalyExplorer:
    """The explorer: ``controls`` (name -> widget), ``widget`` (display it), ``result`` (latest
    :class:`SynthesisResult`, ``None`` after an error), ``error`` (the latest error message or
    ``None``), and :meth:`render`, the pure function from control values to a result."""

    images: dict[str, np.ndarray]
    foreground: dict[str, ForegroundSettings | str | None]
    texture_source: TextureSource
    controls: dict[str, widgets.ValueWidget] = field(default_factory=dict)
    widget: widgets.Box | None = None
    output: widgets.Output | None = None
    result: SynthesisResult | None = None
    error: str | None = None
    draw: bool = True

    def foreground_for(self, name: str) -> ForegroundSettings | str | None:
        """The foreground settings for image ``name``: its entry, else ``name`` as a category name."""
        return self.foreground.get(name, name)

    def render(
        self,
        image: str,
        seed: int = 0,
        scale_range: tuple[int, int] = (0, 5),
        threshold: float = 0.5,
        delta: float = 0.5,
        kind: str = "texture",
        grid_rows: int = 4,
        grid_cols: int = 8,
    ) -> SynthesisResult:
        """The simulated sample for these control values (same values, same result)."""
        if image not in self.images:
            raise ValueError(f"unknown image {image!r}; choose one of {sorted(self.images)}")
        synthesizer = AnomalySynthesizer(
            foreground=self.foreground_for(image),
            texture_source=self.texture_source,
            perlin_scale_range=tuple(int(v) for v in scale_range),
            perlin_threshold=float(threshold),
            structure_grid=(int(grid_rows), int(grid_cols)),
        )
        return synthesizer.sample(self.images[image], np.random.default_rng(int(seed)), kind=kind, delta=float(delta))

    def refresh(self, change: object = None) -> None:
        """Recompute ``result`` from the current control values and redraw (the ``observe`` callback)."""
        self._update(**{name: control.value for name, control in self.controls.items()})

    def _update(self, **values) -> None:
        try:
            self.result, self.error = self.render(**values), None
        except RuntimeError as error:  # e.g. a threshold so high that no mask is ever drawn
            self.result, self.error = None, str(error)
            self._show_text(f"No anomaly for these settings: {error}")
            return
        if self.draw:
            fig = result_figure(self.result, title=f"{values['image']}, seed {values['seed']}")
            self._show_figure(fig, f"{self.result.kind} anomaly on {values['image']}")
            plt.close(fig)

    def _show_figure(self, fig: Figure, description: str) -> None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=fig.dpi)
        png = base64.b64encode(buffer.getvalue()).decode("ascii")
        output = {"output_type": "display_data", "data": {"image/png": png, "text/plain": description}, "metadata": {}}
        if self.output is not None:
            self.output.outputs = (output,)

    def _show_text(self, text: str) -> None:
        if self.output is not None:
            self.output.outputs = ({"output_type": "stream", "name": "stdout", "text": text + "\n"},)


def anomaly_explorer(
    images: Mapping[str, np.ndarray],
    foreground: Mapping[str, ForegroundSettings | str | None] | None = None,
    texture_source: TextureSource | None = None,
    *,
    seed: int = 0,
    scale_range: tuple[int, int] = (0, 5),
    threshold: float = 0.5,
    delta: float = 0.5,
    kind: str = "texture",
    grid: tuple[int, int] = (4, 8),
    output_height: str = "360px",
    draw: bool = True,
) -> AnomalyExplorer:
    """Build the explorer for ``images`` (name -> uint8 RGB / grey image).

    ``foreground``: settings per image name; names not listed are used as category names (so
    ``{"button": image}`` gets the button settings). ``texture_source``: default
    :class:`TextureSource` (DTD at ``data/dtd`` if present, else procedural). The keyword
    arguments set the controls' starting values. ``draw=False`` skips the figure (tests).
    """
    if not isinstance(images, Mapping) or not images:
        raise ValueError("images must be a non-empty dict of name -> image array")
    for name, picture in images.items():
        if not isinstance(picture, np.ndarray):
            raise TypeError(f"images[{name!r}] must be a numpy array, got {type(picture).__name__}")
    if texture_source is not None and not isinstance(texture_source, TextureSource):
        raise TypeError(f"texture_source must be a TextureSource or None, got {type(texture_source).__name__}")
    explorer = AnomalyExplorer(
        images=dict(images),
        foreground=dict(foreground or {}),
        texture_source=texture_source if texture_source is not None else TextureSource(),
        draw=draw,
    )
    slider = {"continuous_update": False, "style": {"description_width": "initial"}}
    explorer.controls = {
        "image": widgets.Dropdown(options=list(images), value=next(iter(images)), description="image"),
        "seed": widgets.IntSlider(value=seed, min=0, max=999, description="seed", **slider),
        "scale_range": widgets.IntRangeSlider(value=scale_range, min=0, max=6, description="Perlin scale 2^k", **slider),
        "threshold": widgets.FloatSlider(value=threshold, min=0.0, max=0.9, step=0.05, description="threshold", **slider),
        "delta": widgets.FloatSlider(value=delta, min=0.0, max=1.0, step=0.05, description="delta", **slider),
        "kind": widgets.ToggleButtons(options=["texture", "structure"], value=kind, description="kind"),
        "grid_rows": widgets.IntSlider(value=grid[0], min=1, max=16, description="grid rows", **slider),
        "grid_cols": widgets.IntSlider(value=grid[1], min=1, max=16, description="grid cols", **slider),
    }
    explorer.output = widgets.Output(layout=widgets.Layout(height=output_height, overflow="hidden"))
    for control in explorer.controls.values():
        control.observe(explorer.refresh, names="value")
    explorer.refresh()  # once with the defaults, so the first picture is there (and CI runs it)
    c = explorer.controls
    explorer.widget = widgets.VBox(
        [
            widgets.HBox([c["image"], c["seed"], c["kind"]]),
            widgets.HBox([c["scale_range"], c["threshold"], c["delta"]]),
            widgets.HBox([c["grid_rows"], c["grid_cols"]]),
            explorer.output,
        ]
    )
    return explorer
