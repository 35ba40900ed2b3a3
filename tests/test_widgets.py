"""The anomaly explorer, driven headless: set control values, check the result follows."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in tests

import numpy as np
import pytest

from memseg_lite.simulation.foreground import ForegroundSettings, ForegroundWarning
from memseg_lite.simulation.textures import TextureSource
from memseg_lite.teaching.widgets import anomaly_explorer, mask_overlay, result_figure


def images() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:48, :48]
    disk = ((yy - 24) ** 2 + (xx - 24) ** 2 < 300)[..., None]
    button = np.where(disk, [200, 150, 90], [20, 20, 20]).astype(np.uint8)
    wood = np.stack([(120 + 60 * np.sin(xx / 3.0)).astype(np.uint8)] * 3, axis=-1)
    return {"button": button, "wood": wood}


@pytest.fixture()
def explorer():
    return anomaly_explorer(
        images(), texture_source=TextureSource(None, n_procedural=4, procedural_size=32), draw=False
    )


def values(explorer) -> dict:
    return {name: control.value for name, control in explorer.controls.items()}


def test_controls_and_first_render(explorer):
    expected = {
        "image", "seed", "scale_range", "threshold", "delta", "kind", "grid_rows", "grid_cols", "delta_range",
        "texture", "fg_mode", "fg_threshold", "fg_invert", "fg_kernel", "fg_fill",
    }
    assert set(explorer.controls) == expected
    assert explorer.controls["scale_range"].min == 0 and explorer.controls["scale_range"].max == 6
    # delta within the method's [0.15, 1], for the preview and for training's range
    for name in ("delta", "delta_range"):
        assert (explorer.controls[name].min, explorer.controls[name].max) == (0.15, 1.0)
    for name in (
        "seed",
        "scale_range",
        "threshold",
        "delta",
        "grid_rows",
        "grid_cols",
        "delta_range",
        "fg_threshold",
        "fg_kernel",
    ):
        assert explorer.controls[name].continuous_update is False
    assert explorer.output.layout.height is not None  # fixed height against flicker
    # interactive_output ran the callback once with the defaults
    assert explorer.result is not None and explorer.result.kind == "texture"
    first = explorer.render(**values(explorer))
    np.testing.assert_array_equal(explorer.result.image, first.image)


def test_changing_a_control_updates_the_result(explorer):
    before = explorer.result
    explorer.controls["seed"].value = 3
    assert not np.array_equal(explorer.result.mask, before.mask)
    again = explorer.render(**values(explorer))
    np.testing.assert_array_equal(explorer.result.image, again.image)
    np.testing.assert_array_equal(explorer.result.mask, again.mask)

    explorer.controls["kind"].value = "structure"
    assert explorer.result.kind == "structure"
    explorer.controls["delta"].value = 1.0
    inside = explorer.result.mask > 0
    np.testing.assert_array_equal(explorer.result.image[inside], explorer.result.noise_image[inside])


def test_foreground_follows_the_image_name(explorer):
    explorer.controls["image"].value = "wood"  # a texture: no foreground mask
    assert explorer.result.foreground_mask.all()
    explorer.controls["image"].value = "button"  # an object: the disk only
    assert not explorer.result.foreground_mask.all() and explorer.result.foreground_mask[24, 24]


def test_explicit_foreground_settings_are_used():
    explorer = anomaly_explorer(
        images(), foreground={"button": ForegroundSettings(mode="none")},
        texture_source=TextureSource(None, n_procedural=2, procedural_size=32), draw=False,
    )
    assert explorer.result.foreground_mask.all()


def test_threshold_too_high_reports_instead_of_crashing(explorer):
    settings = {**values(explorer), "threshold": 0.9, "scale_range": (0, 0)}  # one smooth cell rarely reaches 0.9
    failing_seed = next(seed for seed in range(100) if _fails(explorer, {**settings, "seed": seed}))
    explorer.controls["scale_range"].value = (0, 0)
    explorer.controls["threshold"].value = 0.9
    explorer.controls["seed"].value = failing_seed
    assert explorer.result is None and "max_tries" in explorer.error
    assert "No anomaly for these settings" in explorer.output.outputs[0]["text"]
    explorer.controls["threshold"].value = 0.5  # and it recovers
    assert explorer.result is not None and explorer.error is None


def _fails(explorer, settings: dict) -> bool:
    try:
        explorer.render(**settings)
    except RuntimeError:
        return True
    return False


def test_drawing_works_headless():
    explorer = anomaly_explorer(images(), texture_source=TextureSource(None, n_procedural=2, procedural_size=32))
    assert explorer.result is not None
    (first,) = explorer.output.outputs  # the figure, written straight into the Output widget
    assert first["output_type"] == "display_data" and first["data"]["image/png"]
    explorer.controls["seed"].value = 5
    (second,) = explorer.output.outputs
    assert second["data"]["image/png"] != first["data"]["image/png"]  # redrawn for the new seed
    figure = result_figure(explorer.result, title="test")
    assert len(figure.axes) == 4
    titles = [axis.get_title() for axis in figure.axes]
    assert "white" in titles[0] and "blue" not in titles[0]  # the legend names the colour M is drawn in
    with_original = result_figure(
        explorer.result, original=images()["button"], foreground=explorer.result.foreground_mask
    )
    assert next(axis.get_title() for axis in with_original.axes) == "original" and len(with_original.axes) == 6
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_bad_input():
    with pytest.raises(ValueError):
        anomaly_explorer({})
    with pytest.raises(TypeError):
        anomaly_explorer({"a": [[1, 2]]})
    with pytest.raises(TypeError):
        anomaly_explorer(images(), texture_source="data/dtd")


def test_mask_overlay_colours():
    perlin = np.array([[True, True], [False, False]])
    foreground = np.array([[True, False], [True, False]])
    overlay = mask_overlay(perlin, foreground)
    np.testing.assert_array_equal(overlay[0, 0], [1, 1, 1])  # M = both: white
    assert overlay[0, 1, 0] > 0 and overlay[0, 1, 1] == 0  # Perlin only: red
    assert overlay[1, 0, 1] > 0 and overlay[1, 0, 0] == 0  # foreground only: green
    np.testing.assert_array_equal(overlay[1, 1], [0, 0, 0])


def test_foreground_controls_change_the_mask(explorer):
    c = explorer.controls
    assert c["fg_mode"].value == "otsu"  # the button's own settings
    c["fg_mode"].value = "threshold"
    c["fg_threshold"].value = 100
    c["fg_invert"].value = "no"
    disk = explorer.result.foreground_mask
    assert disk[24, 24] and not disk[0, 0]
    c["fg_invert"].value = "yes"  # the background instead; hole filling then closes over the disk
    assert explorer.result.foreground_mask.all()
    c["fg_fill"].value = False
    assert not explorer.result.foreground_mask[24, 24] and explorer.result.foreground_mask[0, 0]
    c["fg_invert"].value = "no"
    with pytest.warns(ForegroundWarning):  # brighter than the whole image: the mask falls back to all ones
        c["fg_threshold"].value = 250
    assert explorer.result.foreground_mask.all()
    assert explorer.foreground_settings(**values(explorer)).threshold == 250


def test_delta_outside_the_method_range_is_refused():
    with pytest.raises(ValueError, match="0.15"):
        anomaly_explorer(
            images(), delta=0.1, draw=False, texture_source=TextureSource(None, n_procedural=2, procedural_size=32)
        )
    with pytest.raises(ValueError, match="delta_range"):
        anomaly_explorer(images(), delta_range=(0.0, 1.0), draw=False,
                         texture_source=TextureSource(None, n_procedural=2, procedural_size=32))


def test_random_kind_draws_like_the_simulator(explorer):
    explorer.controls["kind"].value = "random"
    explorer.controls["delta_range"].value = (0.4, 0.6)
    for seed in range(6):
        explorer.controls["seed"].value = seed
        result = explorer.result
        assert result.kind in ("normal", "texture", "structure")
        if result.kind != "normal":
            assert 0.4 <= result.delta <= 0.6


def test_texture_choice(explorer):
    c = explorer.controls
    c["kind"].value = "texture"
    c["delta"].value = 1.0
    chosen = []
    for index in (0, 1):
        c["texture"].value = index
        chosen.append(explorer.result)
    c["texture"].value = -1
    random_choice = explorer.result
    # same seed: the same mask whatever the texture, only the noise image differs
    np.testing.assert_array_equal(chosen[0].mask, chosen[1].mask)
    np.testing.assert_array_equal(chosen[0].mask, random_choice.mask)
    assert not np.array_equal(chosen[0].noise_image, chosen[1].noise_image)
    options = {value: label for label, value in c["texture"].options}
    assert options[-1].startswith("random") and len(options) == 5


def test_load_images_from_a_path(explorer, tmp_path):
    import cv2

    folder = tmp_path / "photos"
    folder.mkdir()
    photo = np.zeros((40, 90, 3), dtype=np.uint8)
    photo[10:30, 20:70] = (220, 200, 30)
    cv2.imwrite(str(folder / "part_a.PNG"), photo[..., ::-1])
    cv2.imwrite(str(folder / "part_b.jpg"), photo[..., ::-1])
    (folder / "notes.txt").write_text("not an image")
    explorer.inputs["path"].value = str(folder)
    explorer.buttons["load"].click()
    assert "loaded 2 image(s)" in explorer.status.value
    assert {"part_a", "part_b"} <= set(explorer.controls["image"].options)
    assert explorer.controls["image"].value == "part_a" and explorer.result is not None
    assert explorer.result.image.shape == (40, 90, 3)  # rectangular, kept as it is
    np.testing.assert_array_equal(explorer.images["part_a"], photo)
    # your own tuning stays when you switch between your own images
    explorer.controls["fg_mode"].value = "threshold"
    explorer.controls["fg_threshold"].value = 90
    explorer.controls["image"].value = "part_b"
    assert explorer.controls["fg_mode"].value == "threshold" and explorer.controls["fg_threshold"].value == 90
    # a glob, and errors reported in the status line rather than raised
    assert explorer.load(str(folder / "*.jpg")) == ["part_b (2)"]
    explorer.inputs["path"].value = str(tmp_path / "missing")
    explorer.buttons["load"].click()
    assert "no such file or folder" in explorer.status.value


def test_upload(explorer):
    import datetime

    import cv2

    photo = np.full((30, 30, 3), 200, dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", photo)
    assert ok
    item = {"name": "upload.png", "type": "image/png", "size": encoded.size, "content": memoryview(encoded.tobytes()),
            "last_modified": datetime.datetime(2026, 1, 1)}
    explorer.inputs["upload"].value = (item,)
    assert explorer.controls["image"].value == "upload"
    np.testing.assert_array_equal(explorer.images["upload"], photo)
    broken = {**item, "name": "broken.png", "content": memoryview(b"not a png")}
    explorer.inputs["upload"].value = (broken,)
    assert "broken.png" in explorer.status.value and "broken" not in explorer.images


def test_large_images_are_shrunk_for_the_preview(explorer):
    (name,) = explorer.add_images({"big": np.zeros((1200, 600, 3), dtype=np.uint8)})
    assert explorer.images[name].shape == (512, 256, 3)


def test_save_settings_button(explorer, tmp_path):
    from memseg_lite.simulation.settings import load_simulation_settings

    explorer.controls["fg_mode"].value = "threshold"
    explorer.controls["fg_threshold"].value = 77
    explorer.controls["delta_range"].value = (0.2, 0.8)
    explorer.inputs["settings_path"].value = str(tmp_path / "sim.json")
    explorer.buttons["save"].click()
    assert "saved" in explorer.status.value
    saved = load_simulation_settings(tmp_path / "sim.json")
    assert saved.foreground.threshold == 77 and saved.foreground.mode == "threshold"
    assert saved.delta_range == (0.2, 0.8) and saved.notes["preview"]["image"] == "button"
    explorer.inputs["settings_path"].value = str(tmp_path / "sim.txt")
    explorer.buttons["save"].click()
    assert ".json" in explorer.status.value  # the error, shown
