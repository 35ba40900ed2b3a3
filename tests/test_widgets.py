"""The anomaly explorer, driven headless: set control values, check the result follows."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in tests

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from memseg_lite.simulation.foreground import ForegroundSettings  # noqa: E402
from memseg_lite.simulation.textures import TextureSource  # noqa: E402
from memseg_lite.teaching.widgets import anomaly_explorer, result_figure  # noqa: E402


def images() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:48, :48]
    disk = ((yy - 24) ** 2 + (xx - 24) ** 2 < 300)[..., None]
    button = np.where(disk, [200, 150, 90], [20, 20, 20]).astype(np.uint8)
    wood = np.stack([(120 + 60 * np.sin(xx / 3.0)).astype(np.uint8)] * 3, axis=-1)
    return {"button": button, "wood": wood}


@pytest.fixture()
def explorer():
    return anomaly_explorer(images(), texture_source=TextureSource(None, n_procedural=4, procedural_size=32), draw=False)


def values(explorer) -> dict:
    return {name: control.value for name, control in explorer.controls.items()}


def test_controls_and_first_render(explorer):
    expected = {"image", "seed", "scale_range", "threshold", "delta", "kind", "grid_rows", "grid_cols"}
    assert set(explorer.controls) == expected
    assert explorer.controls["scale_range"].min == 0 and explorer.controls["scale_range"].max == 6
    for name in ("seed", "scale_range", "threshold", "delta", "grid_rows", "grid_cols"):
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
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_bad_input():
    with pytest.raises(ValueError):
        anomaly_explorer({})
    with pytest.raises(TypeError):
        anomaly_explorer({"a": [[1, 2]]})
    with pytest.raises(TypeError):
        anomaly_explorer(images(), texture_source="data/dtd")
