"""An interactive explorer for the anomaly simulator (ipywidgets), testable without a browser.

All state is passed in (images, foreground settings, texture source); nothing is read from
notebook globals, so moving a slider after editing a later cell still shows what the controls
say. The callback runs once with the defaults when the explorer is built, then again whenever a
control changes (``observe`` callbacks fire synchronously, so tests can set ``control.value`` and
read ``explorer.result`` at once). Sliders redraw on release (``continuous_update=False``), and
the output area has a fixed height so the page does not jump.

On your own images: type a file, folder or glob into the path box and press *load*, or use the
upload button; tune the foreground (mode, threshold, invert, clean-up kernel, hole filling) while
watching the mask preview; then *Save settings* writes a simulation settings file
(:mod:`memseg_lite.simulation.settings`) for ``memseg-lite train --simulation FILE``. With
``kind = "random"`` the preview draws kind and ``delta`` exactly as training does, so the same
seed gives the same sample in the trainer's simulator.

Why not ``interact`` / ``interactive_output``: both draw inside ``with output:``, which makes the
Output widget *capture* messages by id. nbclient (used by papermill and nbconvert) mimics a
frontend for captured output and sends state updates back to the kernel; with those in flight
the next cell sometimes does not start until the cell timeout, or never when there is none
(reproduced here with nbclient 0.11 / ipywidgets 8.1 on a loaded machine). Writing the figure
into ``Output.outputs`` directly sends plain state updates and never stalls.
"""

from __future__ import annotations

import base64
import glob
import io
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from memseg_lite.core.io import IMAGE_SUFFIXES, list_images, read_image
from memseg_lite.simulation.foreground import (
    FOREGROUND_SETTINGS,
    ForegroundSettings,
    foreground_mask,
    resolve_foreground,
)
from memseg_lite.simulation.settings import (
    METHOD_DELTA_RANGE,
    SimulationSettings,
    save_simulation_settings,
)
from memseg_lite.simulation.synthesis import AnomalySynthesizer, SynthesisResult
from memseg_lite.simulation.textures import TextureSource, resize_to

KINDS = ("texture", "structure", "random")
INVERT_CHOICES = {"auto": None, "no": False, "yes": True}
RANDOM_TEXTURE = -1
MAX_TEXTURE_CHOICES = 100


def mask_overlay(perlin: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """RGB picture of the masks: foreground only green, Perlin only red, both (= ``M``) white."""
    perlin, foreground = np.asarray(perlin, dtype=bool), np.asarray(foreground, dtype=bool)
    overlay = np.zeros((*perlin.shape, 3), dtype=np.float32)
    overlay[foreground & ~perlin] = (0.0, 0.6, 0.0)
    overlay[perlin & ~foreground] = (0.8, 0.0, 0.0)
    overlay[perlin & foreground] = (1.0, 1.0, 1.0)
    return overlay


def foreground_preview(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with the background (outside ``mask``) darkened to a quarter: uint8."""
    rgb = image if image.ndim == 3 and image.shape[2] == 3 else np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
    rgb = rgb.astype(np.float32) if rgb.dtype == np.uint8 else rgb.astype(np.float32) * 255.0
    return np.where(np.asarray(mask, dtype=bool)[..., None], rgb, 0.25 * rgb).round().astype(np.uint8)


def result_figure(
    result: SynthesisResult, title: str = "", original: np.ndarray | None = None, foreground: np.ndarray | None = None
) -> Figure:
    """One row of panels: [original, foreground preview,] region masks, noise image, result, target mask.

    ``original`` / ``foreground`` (the input image and its bool foreground mask) add the first two
    panels, so the original and the simulated image are side by side (the explorer passes both).
    """
    panels: list[tuple[str, np.ndarray, dict]] = []
    if original is not None:
        panels.append(("original", original, {"cmap": "gray"}))
    if original is not None and foreground is not None:
        panels.append(
            (f"foreground M_I ({np.mean(foreground):.0%} of pixels)", foreground_preview(original, foreground), {})
        )
    if result.foreground_mask is not None:
        overlay = mask_overlay(result.perlin_mask, result.foreground_mask)
        panels.append(("foreground only (green), Perlin only (red),\nM = both (white)", overlay, {}))
    if result.noise_image is not None:
        panels.append((f"noise image ({result.kind})", result.noise_image, {"cmap": "gray"}))
    delta = f", delta = {result.delta:.2f}" if result.delta is not None else ""
    panels.append((f"simulated image ({result.kind}{delta})", result.image, {"cmap": "gray"}))
    panels.append(
        (f"target mask M ({result.mask.mean():.1%} of pixels)", result.mask, {"cmap": "gray", "vmin": 0, "vmax": 1})
    )
    width = 3.2 if len(panels) <= 4 else 2.6
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), width + 0.3))
    for axis, (name, picture, style) in zip(np.atleast_1d(axes), panels, strict=True):
        picture = picture[..., 0] if picture.ndim == 3 and picture.shape[2] == 1 else picture
        if picture.dtype == np.uint8 and picture.ndim == 2:
            style = {**style, "vmin": 0, "vmax": 255}
        axis.imshow(picture, **style)
        axis.set_title(name, fontsize=8)
        axis.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


class _OneTexture(TextureSource):
    """A texture source that always hands out texture ``index`` of ``source``.

    It draws the same random numbers as a random choice would, so only the texture differs from
    what training would simulate with the same seed.
    """

    def __init__(self, source: TextureSource, index: int):  # shares the source's state (bank, files)
        self.__dict__.update(vars(source))
        self._index = int(index)

    def sample(self, rng: np.random.Generator, size) -> np.ndarray:
        rng.integers(len(self))
        height, width = (size, size) if isinstance(size, (int, np.integer)) else size
        return resize_to(self.image(self._index), (int(height), int(width)))


def _decode_upload(name: str, content) -> np.ndarray:
    data = np.frombuffer(bytes(content), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"uploaded file {name!r} is not an image OpenCV can read (png, jpg, bmp, tif, ...)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _shrink(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale (area interpolation, aspect ratio kept) so the longer side is at most ``max_side``."""
    if max_side is None or max(image.shape[:2]) <= max_side:
        return image
    scale = max_side / max(image.shape[:2])
    size = (max(2, round(image.shape[1] * scale)), max(2, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def image_files(path: str | os.PathLike) -> list[Path]:
    """The image files a path names: one file, the images in a folder, or a glob pattern."""
    text = str(path).strip()
    if not text:
        raise ValueError("no path given: type an image file, a folder of images or a glob such as photos/*.png")
    candidate = Path(text).expanduser()
    if candidate.is_dir():
        files = list_images(candidate)
    elif candidate.is_file():
        files = [candidate]
    elif glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(str(candidate)) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise FileNotFoundError(f"{text}: no such file or folder (give an image, a folder of images or a glob)")
    if not files:
        raise ValueError(f"{text}: no image files found (extensions: {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


@dataclass
class AnomalyExplorer:
    """The explorer: ``controls`` (name -> value widget; their values are :meth:`render`'s arguments),
    ``inputs`` (path box, upload, settings file name), ``buttons`` (load, save), ``widget`` (display
    it), ``result`` (latest :class:`SynthesisResult`, ``None`` after an error), ``error`` (the latest
    error message or ``None``), ``status`` (messages of load / save)."""

    images: dict[str, np.ndarray]
    foreground: dict[str, ForegroundSettings | str | None]
    texture_source: TextureSource
    controls: dict[str, widgets.ValueWidget] = field(default_factory=dict)
    inputs: dict[str, widgets.Widget] = field(default_factory=dict)
    buttons: dict[str, widgets.Button] = field(default_factory=dict)
    widget: widgets.Box | None = None
    output: widgets.Output | None = None
    status: widgets.HTML | None = None
    result: SynthesisResult | None = None
    error: str | None = None
    draw: bool = True
    p_normal: float = 0.5
    p_texture: float = 0.5
    max_tries: int = 50
    max_side: int | None = 512
    _muted: bool = False

    # ---- pure part -------------------------------------------------------------------------
    def foreground_for(self, name: str) -> ForegroundSettings | str | None:
        """The foreground settings for image ``name``: its entry, else ``name`` as a category name."""
        return self.foreground.get(name, name)

    def foreground_settings(self, **values) -> ForegroundSettings:
        """The foreground the control values describe (``fg_mode`` ... ``fg_fill``)."""
        return ForegroundSettings(
            mode=values["fg_mode"],
            threshold=int(values["fg_threshold"]),
            invert=INVERT_CHOICES[values["fg_invert"]],
            kernel_size=int(values["fg_kernel"]),
            fill_holes=bool(values["fg_fill"]),
        )

    def synthesizer(
        self,
        foreground: ForegroundSettings | str | None,
        scale_range: tuple[int, int] = (0, 5),
        threshold: float = 0.5,
        grid_rows: int = 4,
        grid_cols: int = 8,
        delta_range: tuple[float, float] = METHOD_DELTA_RANGE,
        texture: int = RANDOM_TEXTURE,
    ) -> AnomalySynthesizer:
        """The simulator the control values describe (the preview's texture choice included)."""
        source = self.texture_source if int(texture) == RANDOM_TEXTURE else _OneTexture(self.texture_source, texture)
        return AnomalySynthesizer(
            foreground=foreground,
            texture_source=source,
            p_normal=self.p_normal,
            p_texture=self.p_texture,
            delta_range=tuple(float(v) for v in delta_range),
            perlin_scale_range=tuple(int(v) for v in scale_range),
            perlin_threshold=float(threshold),
            structure_grid=(int(grid_rows), int(grid_cols)),
            max_tries=self.max_tries,
        )

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
        delta_range: tuple[float, float] = METHOD_DELTA_RANGE,
        texture: int = RANDOM_TEXTURE,
        **foreground_values,
    ) -> SynthesisResult:
        """The simulated sample for these control values (same values, same result).

        ``kind="random"`` draws the kind and ``delta`` (from ``delta_range``) as training does;
        otherwise both are forced (``delta``). The foreground comes from the ``fg_*`` values, or,
        without them, from the image's own settings (:meth:`foreground_for`).
        """
        if image not in self.images:
            raise ValueError(f"unknown image {image!r}; choose one of {sorted(self.images)}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        foreground = (
            self.foreground_settings(**foreground_values) if foreground_values else self.foreground_for(image)
        )
        synthesizer = self.synthesizer(foreground, scale_range, threshold, grid_rows, grid_cols, delta_range, texture)
        rng = np.random.default_rng(int(seed))
        if kind == "random":
            return synthesizer.sample(self.images[image], rng)
        return synthesizer.sample(self.images[image], rng, kind=kind, delta=float(delta))

    def values(self) -> dict:
        """The current control values (``render(**explorer.values())`` is ``explorer.result``)."""
        return {name: control.value for name, control in self.controls.items()}

    def settings(self) -> SimulationSettings:
        """The simulation settings of the current controls (what *Save settings* writes).

        The preview's ``seed``, ``kind``, ``delta`` and texture choice are not training settings;
        they are kept under ``notes`` to say where the settings came from.
        """
        values = self.values()
        source = self.texture_source
        return SimulationSettings(
            foreground=self.foreground_settings(**values),
            p_normal=self.p_normal,
            p_texture=self.p_texture,
            delta_range=tuple(float(v) for v in values["delta_range"]),
            perlin_scale_range=tuple(int(v) for v in values["scale_range"]),
            perlin_threshold=float(values["threshold"]),
            structure_grid=(int(values["grid_rows"]), int(values["grid_cols"])),
            max_tries=self.max_tries,
            texture_root=str(source.root.resolve()) if source.kind == "dtd" and source.root is not None else None,
            notes={
                "saved_by": "memseg_lite.teaching.widgets.anomaly_explorer",
                "preview": {key: values[key] for key in ("image", "seed", "kind", "delta", "texture")},
            },
        )

    def save_settings(self, path: str | os.PathLike | None = None) -> Path:
        """Write :meth:`settings` to ``path`` (default: the settings box) as JSON / YAML."""
        target = Path(path if path is not None else self.inputs["settings_path"].value).expanduser()
        written = save_simulation_settings(self.settings(), target)
        self._say(f"saved {written}: train with <code>memseg-lite train --simulation {written}</code>")
        return written

    # ---- your own images -------------------------------------------------------------------
    def add_images(self, new: Mapping[str, np.ndarray]) -> list[str]:
        """Add images (name -> uint8 array), show the first; returns the names used (made unique)."""
        names = []
        for name, picture in new.items():
            unique, copy = name, 1
            while unique in self.images:
                copy += 1
                unique = f"{name} ({copy})"
            self.images[unique] = _shrink(picture, self.max_side)
            names.append(unique)
        if names and "image" in self.controls:
            with self._quiet():
                self.controls["image"].options = list(self.images)
                self.controls["image"].value = names[0]
            self._image_changed(names[0])
            self.refresh()
        return names

    def load(self, path: str | os.PathLike | None = None) -> list[str]:
        """Load a file, folder or glob (default: the path box) into the image list."""
        text = path if path is not None else self.inputs["path"].value
        files = image_files(text)
        names = self.add_images({file.stem: read_image(file) for file in files})
        self._say(f"loaded {len(names)} image(s) from {text}")
        return names

    def _on_upload(self, change) -> None:
        try:
            images = {Path(item["name"]).stem: _decode_upload(item["name"], item["content"]) for item in change["new"]}
        except ValueError as error:
            self._say(str(error), error=True)
            return
        names = self.add_images(images)
        self._say(f"uploaded {len(names)} image(s)")

    def _button(self, action):
        def clicked(_button) -> None:
            try:
                action()
            except (OSError, ValueError, TypeError) as error:
                self._say(str(error), error=True)

        return clicked

    def _say(self, text: str, error: bool = False) -> None:
        if self.status is not None:
            colour = "#b00" if error else "#060"
            self.status.value = f"<span style='color:{colour}'>{text}</span>"

    # ---- callbacks -------------------------------------------------------------------------
    class _Quiet:
        def __init__(self, explorer):
            self.explorer = explorer

        def __enter__(self):
            self.previous, self.explorer._muted = self.explorer._muted, True

        def __exit__(self, *exc):
            self.explorer._muted = self.previous

    def _quiet(self) -> AnomalyExplorer._Quiet:
        return AnomalyExplorer._Quiet(self)

    def _set_foreground_controls(self, settings: ForegroundSettings) -> None:
        c = self.controls
        with self._quiet():
            c["fg_mode"].value = settings.mode
            c["fg_threshold"].value = int(settings.threshold)
            c["fg_invert"].value = {None: "auto", False: "no", True: "yes"}[settings.invert]
            c["fg_kernel"].value = max(1, int(settings.kernel_size) | 1)
            c["fg_fill"].value = bool(settings.fill_holes)

    def _image_changed(self, name: str) -> None:
        """An image with its own settings (an entry or a known category) sets the foreground controls;
        others (your own photos) keep what you tuned."""
        if name in self.foreground or name in FOREGROUND_SETTINGS:
            self._set_foreground_controls(resolve_foreground(self.foreground_for(name))[0])

    def _on_image(self, change) -> None:
        if not self._muted:
            self._image_changed(change["new"])

    def refresh(self, change: object = None) -> None:
        """Recompute ``result`` from the current control values and redraw (the ``observe`` callback)."""
        if self._muted:
            return
        self._update(**self.values())

    def _update(self, **values) -> None:
        try:
            self.result, self.error = self.render(**values), None
        except RuntimeError as error:  # e.g. a threshold so high that no mask is ever drawn
            self.result, self.error = None, str(error)
            self._show_text(f"No anomaly for these settings: {error}")
            return
        if self.draw:
            image = self.images[values["image"]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the figure's title says when the mask fell back
                mask = foreground_mask(image, self.foreground_settings(**values))
            fig = result_figure(
                self.result, title=f"{values['image']}, seed {values['seed']}", original=image, foreground=mask
            )
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


def _texture_options(source: TextureSource) -> list[tuple[str, int]]:
    options = [("random (as in training)", RANDOM_TEXTURE)]
    for index in range(min(len(source), MAX_TEXTURE_CHOICES)):
        label = source.files[index].name if source.files else f"procedural #{index}"
        options.append((label, index))
    return options


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
    delta_range: tuple[float, float] = METHOD_DELTA_RANGE,
    p_normal: float = 0.5,
    p_texture: float = 0.5,
    max_tries: int = 50,
    settings_path: str | os.PathLike = "simulation.json",
    max_side: int | None = 512,
    output_height: str = "360px",
    draw: bool = True,
) -> AnomalyExplorer:
    """Build the explorer for ``images`` (name -> uint8 RGB / grey image).

    ``foreground``: settings per image name; names not listed are used as category names (so
    ``{"button": image}`` gets the button settings) and set the foreground controls when shown.
    ``texture_source``: default :class:`TextureSource` (DTD at ``data/dtd`` if present, else
    procedural). The keyword arguments set the controls' starting values (``delta`` and
    ``delta_range`` within the method's [0.15, 1]); ``p_normal``, ``p_texture`` and ``max_tries``
    go into the saved settings. Loaded and uploaded images are shrunk to ``max_side`` pixels on
    their longer side. ``draw=False`` skips the figure (tests).
    """
    if not isinstance(images, Mapping) or not images:
        raise ValueError("images must be a non-empty dict of name -> image array")
    for name, picture in images.items():
        if not isinstance(picture, np.ndarray):
            raise TypeError(f"images[{name!r}] must be a numpy array, got {type(picture).__name__}")
    if texture_source is not None and not isinstance(texture_source, TextureSource):
        raise TypeError(f"texture_source must be a TextureSource or None, got {type(texture_source).__name__}")
    low, high = METHOD_DELTA_RANGE
    if not low <= float(delta) <= high:
        raise ValueError(f"delta must lie in the method's range [{low}, {high}], got {delta!r}")
    if len(delta_range) != 2 or not low <= float(delta_range[0]) <= float(delta_range[1]) <= high:
        raise ValueError(f"delta_range must be (low, high) within [{low}, {high}], got {delta_range!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    explorer = AnomalyExplorer(
        images=dict(images),
        foreground=dict(foreground or {}),
        texture_source=texture_source if texture_source is not None else TextureSource(),
        draw=draw,
        p_normal=float(p_normal),
        p_texture=float(p_texture),
        max_tries=int(max_tries),
        max_side=max_side,
    )
    first = next(iter(images))
    start = resolve_foreground(explorer.foreground_for(first))[0]
    slider = {"continuous_update": False, "style": {"description_width": "initial"}}
    explorer.controls = {
        "image": widgets.Dropdown(options=list(images), value=first, description="image"),
        "seed": widgets.IntSlider(value=seed, min=0, max=999, description="seed", **slider),
        "scale_range": widgets.IntRangeSlider(
            value=scale_range, min=0, max=6, description="Perlin scale 2^k", **slider
        ),
        "threshold": widgets.FloatSlider(
            value=threshold, min=0.0, max=0.9, step=0.05, description="threshold", **slider
        ),
        "delta": widgets.FloatSlider(
            value=delta, min=low, max=high, step=0.05, description="delta (preview)", **slider
        ),
        "kind": widgets.ToggleButtons(options=list(KINDS), value=kind, description="kind"),
        "grid_rows": widgets.IntSlider(value=grid[0], min=1, max=16, description="grid rows", **slider),
        "grid_cols": widgets.IntSlider(value=grid[1], min=1, max=16, description="grid cols", **slider),
        "delta_range": widgets.FloatRangeSlider(
            value=tuple(delta_range), min=low, max=high, step=0.05, description="delta range (training)", **slider
        ),
        "texture": widgets.Dropdown(
            options=_texture_options(explorer.texture_source), value=RANDOM_TEXTURE, description="texture"
        ),
        "fg_mode": widgets.Dropdown(options=["none", "threshold", "otsu"], value=start.mode, description="foreground"),
        "fg_threshold": widgets.IntSlider(
            value=start.threshold, min=0, max=255, description="grey threshold", **slider
        ),
        "fg_invert": widgets.Dropdown(
            options=list(INVERT_CHOICES),
            description="invert",
            value={None: "auto", False: "no", True: "yes"}[start.invert],
        ),
        "fg_kernel": widgets.IntSlider(
            value=max(1, start.kernel_size | 1), min=1, max=15, step=2, description="clean-up kernel", **slider
        ),
        "fg_fill": widgets.Checkbox(value=start.fill_holes, description="fill holes"),
    }
    explorer.inputs = {
        "path": widgets.Text(placeholder="file, folder or glob of your images", description="path"),
        "upload": widgets.FileUpload(accept="image/*", multiple=True, description="upload"),
        "settings_path": widgets.Text(value=str(settings_path), description="settings file"),
    }
    explorer.buttons = {
        "load": widgets.Button(description="load"),
        "save": widgets.Button(description="Save settings", button_style="success"),
    }
    explorer.status = widgets.HTML(value="")
    explorer.output = widgets.Output(layout=widgets.Layout(height=output_height, overflow="hidden"))
    explorer.controls["image"].observe(explorer._on_image, names="value")  # first: set the foreground controls
    for control in explorer.controls.values():
        control.observe(explorer.refresh, names="value")
    explorer.inputs["upload"].observe(explorer._on_upload, names="value")
    explorer.buttons["load"].on_click(explorer._button(explorer.load))
    explorer.buttons["save"].on_click(explorer._button(explorer.save_settings))
    explorer.refresh()  # once with the defaults, so the first picture is there (and CI runs it)
    c, i, b = explorer.controls, explorer.inputs, explorer.buttons
    explorer.widget = widgets.VBox(
        [
            widgets.HBox([i["path"], b["load"], i["upload"]]),
            widgets.HBox([c["image"], c["seed"], c["kind"]]),
            widgets.HBox([c["fg_mode"], c["fg_threshold"], c["fg_invert"], c["fg_kernel"], c["fg_fill"]]),
            widgets.HBox([c["scale_range"], c["threshold"], c["delta"], c["delta_range"]]),
            widgets.HBox([c["grid_rows"], c["grid_cols"], c["texture"]]),
            widgets.HBox([i["settings_path"], b["save"], explorer.status]),
            explorer.output,
        ]
    )
    return explorer
