"""The exercise self-checks: they accept the worked solution and reject plausible wrong answers.

Every exercise's check (``memseg_lite.teaching.checks.chNN.exercise_N``) is run here against the
solution from ``solutions/NN_topic_solutions.ipynb`` (must pass) and against at least two wrong
answers written in this file (must raise ``AssertionError``). The solutions are taken from the
notebook's code cells tagged ``solution`` by :func:`solutions`, so the tests use exactly the code
the solutions notebook publishes.

Rules for ``solution``-tagged cells: they run on their own, in order, in a fresh namespace (put
the imports they need inside them), and only define things (no training, no plots).

Sections: the framework (check / summarise / assert_matches), chapters 00-04, chapters 05-09, and
issue 20's: package shortcuts, sealed expected numbers, and errors in the learner's function (each
must be a failed check, never an exception that stops the notebook).
"""

from __future__ import annotations

import functools
import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from memseg_lite.teaching.checks import ch00, ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08, ch09, ch10, ch11
from memseg_lite.teaching.exercises import assert_matches, check, probe_indices, summarise

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"


def solution_cells(notebook: Path) -> list[str]:
    """The sources of ``notebook``'s code cells tagged ``solution``, in order (IPython magics dropped)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    sources = []
    for cell in cells:
        if cell["cell_type"] != "code" or "solution" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        sources.append("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    return sources


@functools.cache
def solutions(chapter: str) -> types.SimpleNamespace:
    """Execute the ``solution`` cells of ``solutions/<chapter>_*_solutions.ipynb``; their names as attributes."""
    (notebook,) = sorted(SOLUTIONS.glob(f"{chapter}_*_solutions.ipynb")) or [None]
    if notebook is None:
        raise FileNotFoundError(f"no solutions notebook for chapter {chapter} in {SOLUTIONS}")
    sources = solution_cells(notebook)
    if not sources:
        raise AssertionError(f"{notebook.name} has no code cell tagged 'solution'")
    namespace: dict = {"__name__": f"solutions_{chapter}"}
    for index, source in enumerate(sources):
        exec(compile(source, f"{notebook.name}[solution cell {index}]", "exec"), namespace)
    return types.SimpleNamespace(**{k: v for k, v in namespace.items() if not k.startswith("__")})


def rejects(exercise, *args, **kwargs) -> str:
    """Run a check that must fail; return its message (so a test can also look at the reason)."""
    with pytest.raises(AssertionError) as info:
        exercise(*args, **kwargs)
    return str(info.value)


# ----------------------------------------------------------------------------------------------
# The framework: check's three line formats (the grader parses them), summarise, assert_matches
# ----------------------------------------------------------------------------------------------

def test_check_prints_the_three_line_formats(capsys):
    def fails():
        raise AssertionError("shape is wrong")

    def stub():
        raise NotImplementedError

    assert check("Exercise 1", lambda: None) is True
    assert check("Exercise 2", fails) is False
    assert check("Exercise 3", stub) is False
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[ok] Exercise 1: passed."
    assert lines[1] == "[x] Exercise 2: not solved yet: shape is wrong"
    assert lines[2].startswith("[ ] Exercise 3: not attempted yet")


def test_check_strict_raises():
    with pytest.raises(AssertionError, match="bad"):
        check("Exercise 1", lambda: (_ for _ in ()).throw(AssertionError("bad")), strict=True)
    with pytest.raises(NotImplementedError):
        check("Exercise 1", lambda: (_ for _ in ()).throw(NotImplementedError()), strict=True)


def test_summarise_matches_numpy():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 7, 5))
    digest = summarise(values)
    assert digest["shape"] == [3, 7, 5]
    for key, want in (("mean", values.mean()), ("std", values.std()), ("min", values.min()), ("max", values.max())):
        assert math.isclose(digest[key], want, rel_tol=1e-5), key
    flat = values.reshape(-1)
    indices = [index for index, _ in digest["probes"]]
    assert indices == [0, 26, 52, 78, 104] == probe_indices(flat.size)
    for index, value in digest["probes"]:
        assert math.isclose(value, flat[index], rel_tol=1e-5)
    json.dumps(digest)  # a plain literal, storable in a chNN module


def test_summarise_takes_tensors_bools_and_numbers():
    tensor = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert summarise(tensor) == summarise(tensor.numpy())
    assert summarise(tensor)["mean"] == 5.5
    assert summarise(torch.tensor([True, False, True, True]))["mean"] == 0.75
    assert summarise(2.5) == {"shape": [], "mean": 2.5, "std": 0.0, "min": 2.5, "max": 2.5, "probes": [[0, 2.5]]}
    assert summarise(np.zeros((0, 3))) == {"shape": [0, 3]}


def test_assert_matches_accepts_the_same_value_and_small_float_noise():
    rng = np.random.default_rng(1)
    values = rng.random((4, 4))
    digest = summarise(values)
    assert_matches(values, digest, what="v")
    assert_matches(torch.from_numpy(values).float(), digest, what="v")  # float32 rounding is inside the tolerance
    assert_matches(values * (1 + 1e-7), digest, what="v")


def test_assert_matches_rejects_shape_scale_offset_order_and_constants():
    rng = np.random.default_rng(2)
    values = rng.random((4, 4))
    digest = summarise(values)
    assert "shape (16,), expected (4, 4)" in rejects(assert_matches, values.reshape(-1), digest, what="the noise")
    assert "the noise" in rejects(assert_matches, values * 2, digest, what="the noise")
    assert "average" in rejects(assert_matches, values + 0.1, digest)
    assert "flat index" in rejects(assert_matches, values.T, digest)  # same statistics, other order
    assert rejects(assert_matches, np.zeros((4, 4)), digest)
    assert rejects(assert_matches, np.full((4, 4), values.mean()), digest)
    assert "NaN" in rejects(assert_matches, np.full((4, 4), np.nan), digest)


def test_assert_matches_with_a_number_and_bad_digest():
    assert_matches(torch.tensor(0.25), 0.25, what="the loss")
    assert "single number" in rejects(assert_matches, np.ones(3), 1.0, what="the loss")
    assert "not the expected" in rejects(assert_matches, 0.3, 0.25, what="the loss")
    with pytest.raises(ValueError, match="summarise"):
        assert_matches(np.ones(3), {"mean": 1.0})


# ----------------------------------------------------------------------------------------------
# Chapters 00-04: each check accepts the worked solution and rejects plausible wrong answers
# ----------------------------------------------------------------------------------------------

CHAPTERS_00_04 = ("00", "01", "02", "03", "04")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.mark.parametrize("chapter", CHAPTERS_00_04)
def test_student_and_solutions_editions_fit(chapter):
    """The student's notebook has stubs and non-strict checks only; the solutions define every stub and check it
    strictly."""
    import ast
    import importlib
    import re

    (student,) = sorted((ROOT / "notebooks").glob(f"{chapter}_*.ipynb"))
    solution_notebook = SOLUTIONS / f"{student.stem}_solutions.ipynb"
    assert solution_notebook.is_file(), f"{solution_notebook} is missing"
    module = importlib.import_module(f"memseg_lite.teaching.checks.ch{chapter}")
    exercises = sorted(int(name.split("_")[1]) for name in dir(module) if re.fullmatch(r"exercise_\d+", name))
    assert exercises, f"ch{chapter} has no exercise_N"

    student_cells = _cells(student)
    text = "\n".join(_source(cell) for cell in student_cells)
    assert "strict=True" not in text and "## Solutions" not in text and "def solution_" not in text
    assert f"from memseg_lite.teaching.checks import ch{chapter}" in text
    stubs = {}
    for cell in student_cells:
        if cell["cell_type"] != "code" or f"ch{chapter}.exercise_" not in _source(cell):
            continue
        tree = ast.parse("\n".join(line for line in _source(cell).splitlines() if not line.startswith("%")))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                body = [
                    stmt
                    for stmt in node.body
                    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))
                ]
                assert len(body) == 1 and isinstance(body[0], ast.Raise), f"{student.name}: {node.name} must be a stub"
                stubs[node.name] = node
    called = [int(n) for n in re.findall(rf"ch{chapter}\.exercise_(\d+)\(", text)]
    assert sorted(called) == exercises, f"{student.name} must check each of ch{chapter}'s exercises once"

    solved = solutions(chapter)
    solution_text = "\n".join(_source(cell) for cell in _cells(solution_notebook))
    for name in stubs:
        assert callable(getattr(solved, name, None)), f"{solution_notebook.name} defines no solution cell for {name}"
    strict = [int(n) for n in re.findall(rf"ch{chapter}\.exercise_(\d+)\([^\n]*strict=True", solution_text)]
    assert sorted(strict) == exercises, f"{solution_notebook.name} must check every exercise with strict=True"
    for path, cells in ((student, student_cells), (solution_notebook, _cells(solution_notebook))):
        parameters = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
        for cell in parameters:
            assert 'os.environ.get("MEMSEG_PROFILE", "demo")' in _source(cell), (
                f"{path.name}: the default profile is demo"
            )


def test_ch00_exercise_1_defective_pixels(tiny_demo):
    import cv2

    from memseg_lite.core.io import read_image
    from memseg_lite.datasets.mvtec import scan_category

    solution = solutions("00").defective_pixel_fraction
    ch00.exercise_1(solution, tiny_demo)

    def over_defective_images_only(data_root, category):
        files = [item for item in scan_category(data_root, category).test if item.mask is not None]
        return sum(int((read_image(i.mask, grayscale=True) > 0).sum()) for i in files) / sum(
            read_image(i.image, grayscale=True).size for i in files)

    def mean_of_image_fractions(data_root, category):
        fractions = [0.0 if item.mask is None else float((read_image(item.mask, grayscale=True) > 0).mean())
                     for item in scan_category(data_root, category).test]
        return float(np.mean(fractions))

    def mask_values_summed(data_root, category):  # 255 per defective pixel
        files = scan_category(data_root, category).test
        return sum(float(cv2.imread(str(i.mask), 0).sum()) for i in files if i.mask is not None) / sum(
            read_image(i.image, grayscale=True).size for i in files)

    for wrong in (over_defective_images_only, mean_of_image_fractions, mask_values_summed, lambda root, name: 0.0):
        rejects(ch00.exercise_1, wrong)


def test_ch00_exercise_2_object_fraction():
    import cv2

    ch00.exercise_2(solutions("00").object_fraction)

    def grey(image):
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)

    rejects(ch00.exercise_2, lambda image: float((grey(image) > 128).mean()))  # a fixed threshold
    rejects(ch00.exercise_2, lambda image: 1.0 - solutions("00").object_fraction(image))  # the dark class
    rejects(ch00.exercise_2, lambda image: 0.3)
    # issue 20: a threshold at the mean (or median) grey level passed while every test image had two
    # well-separated classes; it splits a class of the new test images
    assert "Otsu" in rejects(ch00.exercise_2, lambda image: float((grey(image) > grey(image).mean()).mean()))
    rejects(ch00.exercise_2, lambda image: float((grey(image) > np.median(grey(image))).mean()))


def test_ch00_exercise_3_blend():
    ch00.exercise_3(solutions("00").blended_values)
    rejects(ch00.exercise_3, lambda: (0.25 * 0.8 + 0.75 * 0.2, 0.8))  # delta on the wrong term
    rejects(ch00.exercise_3, lambda: (0.65, 0.0))  # the image vanishes outside the mask
    rejects(ch00.exercise_3, lambda: 0.65)


def test_ch01_exercise_1_fade_derivatives():
    ch01.exercise_1(solutions("01").fade_derivatives)
    rejects(ch01.exercise_1, lambda t: (30 * t**2 * (t - 1) ** 2, 60 * t * (t - 1)))  # second derivative wrong
    rejects(ch01.exercise_1, lambda t: (6 * t * (1 - t), 6 - 12 * t))  # smoothstep's derivatives
    rejects(ch01.exercise_1, lambda t: (np.zeros_like(t), np.zeros_like(t)))


def test_ch01_exercise_2_fractal_noise():
    from memseg_lite.simulation import perlin

    ch01.exercise_2(solutions("01").fractal_noise)

    def amplitude_off_by_one(shape, res, octaves, persistence, rng):
        return sum(persistence ** (o + 1) * perlin.perlin_noise(shape, (res[0] * 2**o, res[1] * 2**o), rng)
                   for o in range(octaves))

    def resolution_times_o(shape, res, octaves, persistence, rng):
        return sum(persistence**o * perlin.perlin_noise(shape, (res[0] * (o + 1), res[1] * (o + 1)), rng)
                   for o in range(octaves))

    def one_octave(shape, res, octaves, persistence, rng):
        return perlin.perlin_noise(shape, res, rng)

    for wrong in (amplitude_off_by_one, resolution_times_o, one_octave):
        rejects(ch01.exercise_2, wrong)


def test_ch01_exercise_3_threshold_for_coverage():
    ch01.exercise_3(solutions("01").threshold_for_coverage)
    rejects(ch01.exercise_3, lambda target, n=100, size=32, seed=0: 0.5)  # DRAEM's threshold
    rejects(ch01.exercise_3, lambda target, n=100, size=32, seed=0: 1 - 2 * target)  # the uniform quantile
    rejects(ch01.exercise_3, lambda target, n=100, size=32, seed=0: target)


def test_ch02_exercise_1_otsu_by_definition():
    ch02.exercise_1(solutions("02").otsu_by_definition)
    rejects(ch02.exercise_1, lambda grey: 128)
    rejects(ch02.exercise_1, lambda grey: int(grey.mean()) + 20)
    rejects(ch02.exercise_1, lambda grey: int(np.median(grey)))


def test_ch02_exercise_2_largest_component():
    import cv2

    ch02.exercise_2(solutions("02").largest_component)

    def four_connected(mask):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
        return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) if count > 1 else np.zeros(mask.shape, bool)

    def with_background(mask):  # label 0 (the background) is the largest "component"
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        return labels == int(np.argmax(stats[:, cv2.CC_STAT_AREA]))

    for wrong in (four_connected, with_background, lambda mask: mask.copy()):
        rejects(ch02.exercise_2, wrong)


def test_ch02_exercise_3_fixed_threshold(tiny_demo):
    from memseg_lite.core.io import list_images, read_image
    from memseg_lite.simulation import foreground

    stack = np.stack([read_image(p) for p in list_images(tiny_demo / "button" / "train" / "good")[:3]])
    ch02.exercise_3(solutions("02").fixed_threshold_settings, stack)
    rejects(ch02.exercise_3, lambda images: foreground.ForegroundSettings(mode="threshold", threshold=128), stack)
    rejects(ch02.exercise_3, lambda images: foreground.ForegroundSettings(mode="otsu"), stack)
    solution = solutions("02").fixed_threshold_settings
    fixed = solution(stack).threshold  # found once on the original images: fails on the darker copies
    rejects(ch02.exercise_3, lambda images: foreground.ForegroundSettings(mode="threshold", threshold=fixed), stack)


def test_ch03_exercise_1_recover_permutation():
    ch03.exercise_1(solutions("03").recover_permutation)
    rejects(
        ch03.exercise_1,
        lambda image, shuffled, grid: np.argsort(solutions("03").recover_permutation(image, shuffled, grid)),
    )
    rejects(ch03.exercise_1, lambda image, shuffled, grid: np.arange(grid[0] * grid[1]))


def test_ch03_exercise_2_estimate_delta():
    ch03.exercise_2(solutions("03").estimate_delta)

    def over_all_pixels(image, sample, noise, mask):
        change, reach = sample.astype(float) - image, noise.astype(float) - image
        return float((change * reach).sum() / (reach * reach).sum())

    def one_minus(image, sample, noise, mask):
        return 1 - solutions("03").estimate_delta(image, sample, noise, mask)

    def uint8_wraparound(image, sample, noise, mask):
        inside = np.asarray(mask) > 0
        change, reach = (sample - image)[inside].astype(float), (noise - image)[inside].astype(float)
        return float((change * reach).sum() / (reach * reach).sum())

    for wrong in (over_all_pixels, one_minus, uint8_wraparound, lambda *args: 0.575):
        rejects(ch03.exercise_2, wrong)


def _change_and_reach(image, sample, noise, mask):
    inside = np.asarray(mask) > 0
    return sample[inside].astype(float) - image[inside], noise[inside].astype(float) - image[inside]


def _ratio_of_sums(*arrays):
    change, reach = _change_and_reach(*arrays)
    return float(change.sum() / reach.sum())


def _mean_of_ratios(*arrays):
    change, reach = _change_and_reach(*arrays)
    return float(np.mean(change[reach != 0] / reach[reach != 0]))


def _median_of_ratios(*arrays):
    change, reach = _change_and_reach(*arrays)
    return float(np.median(change[reach != 0] / reach[reach != 0]))


def _ratio_of_mean_changes(*arrays):
    change, reach = _change_and_reach(*arrays)
    return float(np.abs(change).mean() / np.abs(reach).mean())


@pytest.mark.parametrize("wrong", [_ratio_of_sums, _mean_of_ratios, _median_of_ratios, _ratio_of_mean_changes])
def test_ch03_exercise_2_rejects_fits_other_than_least_squares(wrong):
    """Issue 20: these estimates lie within 0.01 of delta on package samples and passed; they do not minimise
    the squared error, neither on the package samples nor on a sample built not to follow the blend exactly."""
    assert "least-squares" in rejects(ch03.exercise_2, wrong)
    arrays = ch03._off_blend_sample(np.random.default_rng(32))
    with pytest.raises(AssertionError, match="least-squares"):
        ch03._assert_least_squares(wrong(*arrays), "off-blend", *arrays)
    ch03._assert_least_squares(solutions("03").estimate_delta(*arrays), "off-blend", *arrays)


def test_ch03_exercise_2_message_does_not_give_delta():
    def slightly_off(image, sample, noise, mask):
        return solutions("03").estimate_delta(image, sample, noise, mask) + 0.02

    message = rejects(ch03.exercise_2, slightly_off)
    assert "too high" in message and "made with delta" not in message


def test_ch03_exercise_3_delta_for_change():
    ch03.exercise_3(solutions("03").delta_for_change)

    def unclipped(image, noise, mask, target):
        return float(target / np.abs(noise.astype(float) - image)[mask].mean())

    def over_all_pixels(image, noise, mask, target):
        return float(np.clip(target / np.abs(noise.astype(float) - image).mean(), 0, 1))

    def grey_levels_as_fraction(image, noise, mask, target):
        return float(np.clip(target / 255.0, 0, 1))

    for wrong in (unclipped, over_all_pixels, grey_levels_as_fraction):
        rejects(ch03.exercise_3, wrong)


def test_ch04_exercise_1_closest_distance():
    sol = solutions("04")
    ch04.exercise_1(sol.closest_distance)
    rejects(
        ch04.exercise_1, lambda f, m, n: sol.per_level_distances(f, [s[: n - 1 or 1] for s in m]).sum(-1).min(1).values
    )
    rejects(
        ch04.exercise_1,
        lambda f, m, n: sol.per_level_distances(f, [s[:n] for s in m], "tootouch").sum(-1).min(1).values,
    )
    rejects(ch04.exercise_1, lambda f, m, n: sol.per_level_distances(f, m).sum(-1).min(1).values)  # ignores n
    rejects(ch04.exercise_1, lambda f, m, n: sol.per_level_distances(f, [s[:n] for s in m]).sum(-1).mean(1))
    # the message says the direction of the error, not the distance (0.25 x 448 = 112) itself
    message = rejects(ch04.exercise_1, lambda f, m, n: sol.closest_distance(f, m, n) * 2)
    assert "too large" in message and "112" not in message


def test_ch04_exercise_2_leave_one_out():
    sol = solutions("04")
    ch04.exercise_2(sol.leave_one_out)
    rejects(ch04.exercise_2, lambda m: sol.per_level_distances(m, m).sum(-1).argmin(1))  # finds itself
    rejects(ch04.exercise_2, lambda m: sol.per_level_distances(m, m).sum(-1).argmax(1))
    rejects(ch04.exercise_2, lambda m: sol.leave_one_out(m).float())


def _closest_other(distances):
    distances = distances.clone()
    distances.fill_diagonal_(float("inf"))
    return distances.argmin(dim=1)


def test_ch04_exercise_2_rejects_other_rules():
    """Issue 20: on samples that are a base plus a constant every rule finds the same neighbour, so these passed."""
    sol = solutions("04")

    def tootouch(m):
        return _closest_other(sol.per_level_distances(m, m, "tootouch").sum(-1))

    def squares(m):
        return _closest_other(sum((a[None] - a[:, None]).square().flatten(2).sum(2) for a in m))

    def level_1_only(m):
        return _closest_other(sol.per_level_distances(m[:1], m[:1]).sum(-1))

    for wrong in (tootouch, squares, level_1_only):
        assert "paper rule" in rejects(ch04.exercise_2, wrong)


def test_ch04_exercise_3_level_shares():
    sol = solutions("04")
    ch04.exercise_3(sol.level_shares)

    def paper_choice_for_both(features, memory, rule):
        per_level = sol.per_level_distances(features, memory, rule)
        choice = sol.per_level_distances(features, memory, "paper").sum(-1).argmin(1)
        chosen = per_level[torch.arange(per_level.shape[0]), choice]
        return chosen / chosen.sum(1, keepdim=True)

    def mean_abs_for_tootouch(features, memory, rule):
        if rule == "paper":
            return sol.level_shares(features, memory, rule)
        levels = zip(features, memory, strict=True)
        per_level = torch.stack([(s[None] - f[:, None]).abs().flatten(2).mean(2) for f, s in levels], -1)
        chosen = per_level[torch.arange(per_level.shape[0]), per_level.sum(-1).argmin(1)]
        return chosen / chosen.sum(1, keepdim=True)

    def transposed(features, memory, rule):
        return sol.level_shares(features, memory, rule)[:, [2, 1, 0]]

    for wrong in (paper_choice_for_both, mean_abs_for_tootouch, transposed,
                  lambda f, m, rule: torch.full((f[0].shape[0], 3), 1 / 3)):
        rejects(ch04.exercise_3, wrong)


# ----------------------------------------------------------------------------------------------
# Chapters 05-09: each check accepts the worked solution and rejects plausible wrong answers
# ----------------------------------------------------------------------------------------------

CHAPTERS_05_09 = ("05", "06", "07", "08", "09", "10", "11")


@pytest.mark.parametrize("chapter", CHAPTERS_05_09)
def test_student_and_solutions_editions_fit_05_09(chapter):
    import re

    test_student_and_solutions_editions_fit(chapter)
    (student,) = sorted((ROOT / "notebooks").glob(f"{chapter}_*.ipynb"))
    markdown = "\n".join(_source(c) for c in _cells(student) if c["cell_type"] == "markdown")
    assert not re.search(r"exercise \d+, the answer|\*\*the answer", markdown.lower()), \
        f"{student.name}: answers belong in the solutions notebook"
    assert "## References" in markdown and "arxiv.org/abs/2205.00908" in markdown
    assert "**After this notebook you can**" in markdown


def _upsample_numpy(values, positions_of):
    """Separable linear interpolation of [h, w] at the sample positions positions_of(n) (tests' wrong answers)."""
    def along_rows(array):
        n = array.shape[0]
        position = positions_of(n)
        low = np.clip(np.floor(position).astype(int), -n, n - 1)
        high = np.minimum(low + 1, n - 1)
        weight = (position - np.floor(position))[:, None]
        return (1 - weight) * array[low] + weight * array[high]

    return along_rows(along_rows(np.asarray(values, dtype=np.float64)).T).T


def test_ch05_exercise_1_upsample2x():
    sol = solutions("05")
    ch05.exercise_1(sol.upsample2x)
    rejects(ch05.exercise_1, lambda v: np.repeat(np.repeat(np.asarray(v, float), 2, 0), 2, 1))  # nearest neighbour
    rejects(ch05.exercise_1, lambda v: _upsample_numpy(v, lambda n: np.linspace(0, n - 1, 2 * n)))  # align_corners=True
    # no clamping: the first sample at -0.25 wraps around to the last pixel
    rejects(ch05.exercise_1, lambda v: _upsample_numpy(v, lambda n: (np.arange(2 * n) + 0.5) / 2 - 0.5))
    rejects(ch05.exercise_1, lambda v: sol.upsample2x(np.asarray(v).T).T[:, ::-1])  # columns reversed


def _cascade(levels, up):
    m3 = levels[2]
    m2 = levels[1] * up(m3, levels[1])
    return [levels[0] * up(m2, levels[0]), m2, m3]


def test_ch05_exercise_2_attention_with_max():
    sol = solutions("05")
    ch05.exercise_2(sol.attention_with_max)
    up = sol.upsample
    rejects(ch05.exercise_2, lambda d: _cascade([x.mean(1, keepdim=True) for x in d], up))  # the mean, not the max
    rejects(ch05.exercise_2, lambda d: [x.amax(1, keepdim=True) for x in d])  # no cascade

    def peaks(d):
        return [x.amax(1, keepdim=True) for x in d]

    # M_1 from the unweighted level 2: D_1 Up(D_2) instead of D_1 Up(M_2)
    rejects(ch05.exercise_2, lambda d: [peaks(d)[0] * up(peaks(d)[1], peaks(d)[0])] + sol.attention_with_max(d)[1:])

    def nearest(x, like):
        return torch.nn.functional.interpolate(x, size=like.shape[-2:], mode="nearest")

    rejects(ch05.exercise_2, lambda d: _cascade(peaks(d), nearest))  # nearest-neighbour instead of bilinear


def test_ch05_exercise_3_maps_with_top_half_vetoed():
    sol = solutions("05")
    ch05.exercise_3(sol.maps_with_top_half_vetoed)
    up = sol.upsample

    def veto(d, level, axis):
        d = [x.clone() for x in d]
        size = d[level].shape[axis]
        index = [slice(None)] * 4
        index[axis] = slice(0, size // 2)
        d[level][tuple(index)] = 0.0
        return _cascade([x.mean(1, keepdim=True) for x in d], up)

    rejects(ch05.exercise_3, lambda d: veto(d, 0, 2))  # the finest level instead of the coarsest
    rejects(ch05.exercise_3, lambda d: veto(d, 2, 3))  # the left half: wrong axis
    rejects(ch05.exercise_3, lambda d: _cascade([x.mean(1, keepdim=True) for x in d], up))  # nothing vetoed

    def in_place(d):
        d[2][..., : d[2].shape[-2] // 2, :] = 0.0
        return _cascade([x.mean(1, keepdim=True) for x in d], up)

    assert "in place" in rejects(ch05.exercise_3, in_place)


def test_ch06_exercise_1_se_gate():
    sol = solutions("06")
    ch06.exercise_1(sol.se_gate)

    def gate(ca, x, pool=lambda x: x.mean(dim=(2, 3), keepdim=True), head="conv_h", activation=True):
        hidden = ca.norm(ca.shared(pool(x)))
        return torch.sigmoid(getattr(ca, head)(ca.activation(hidden) if activation else hidden))

    rejects(ch06.exercise_1, lambda ca, x: gate(ca, x, head="conv_w"))  # the column layer
    rejects(ch06.exercise_1, lambda ca, x: gate(ca, x, activation=False))  # no hard-swish
    rejects(ch06.exercise_1, lambda ca, x: gate(ca, x, pool=lambda x: x.amax(dim=(2, 3), keepdim=True)))  # max pool
    rejects(ch06.exercise_1, lambda ca, x: ca.gates(x)[0].mean(dim=2, keepdim=True))  # mean of CA's row gate
    rejects(ch06.exercise_1, lambda ca, x: gate(ca, x, pool=lambda x: x.mean(dim=3, keepdim=True))[:, :, :1])  # one row


def test_ch06_exercise_2_fuse():
    sol = solutions("06")
    ch06.exercise_2(sol.fuse)
    up = sol.upsample

    def fused(msff, ci, maps, order_ok=True, weight="after"):
        f1, f2, f3 = (block(c) for block, c in zip(msff.blocks, ci, strict=True))
        if weight == "before":
            f1, f2, f3 = f1 * maps[0], f2 * maps[1], f3 * maps[2]
        g2 = f2 + msff.lateral[1](up(f3, f2))
        g1 = f1 + msff.lateral[0](up(g2 if order_ok else f2, f1))
        out = [g1, g2, f3]
        return [f * m for f, m in zip(out, maps, strict=True)] if weight == "after" else out

    rejects(ch06.exercise_2, lambda m, c, a: fused(m, c, a, order_ok=False))  # level 1 from the unfused level 2
    rejects(ch06.exercise_2, lambda m, c, a: fused(m, c, a, weight="none"))  # no attention weighting
    rejects(ch06.exercise_2, lambda m, c, a: fused(m, c, a, weight="before"))  # weighted before the fusion
    # crashes: a clear failure
    rejects(ch06.exercise_2, lambda m, c, a: [block(x) for block, x in zip(m.lateral, c[1:], strict=True)])


def _energy_share(features, mask, coverage_of, energy_of=lambda f: f.double().square().sum(0), normalise=True):
    energy = energy_of(features)
    coverage = coverage_of(torch.as_tensor(mask, dtype=torch.float64)[None, None], energy.shape)[0, 0]
    total = (energy * coverage).sum()
    return float(total / energy.sum() if normalise else total)


def test_ch06_exercise_3_energy_inside_mask():
    import torch.nn.functional as F

    sol = solutions("06")
    ch06.exercise_3(sol.energy_inside_mask)

    def area(m, size):
        return F.interpolate(m, size=size, mode="area")

    rejects(
        ch06.exercise_3, lambda f, m: _energy_share(f, m, lambda m, size: F.interpolate(m, size=size, mode="nearest"))
    )
    rejects(
        ch06.exercise_3, lambda f, m: _energy_share(f, m, lambda m, size: F.interpolate(m, size=size, mode="bilinear"))
    )
    rejects(ch06.exercise_3, lambda f, m: _energy_share(f, m, area, energy_of=lambda f: f.double().abs().sum(0)))
    rejects(ch06.exercise_3, lambda f, m: _energy_share(f, m, area, normalise=False))  # no division by the total
    rejects(ch06.exercise_3, lambda f, m: _energy_share(f, m, area, energy_of=lambda f: f.double().sum(0) ** 2))


def _focal(logits, target, gamma, weight=None, reduce="mean"):
    log_p_true = torch.log_softmax(logits, dim=1).gather(1, target.long()[:, None])[:, 0]
    per_pixel = -((1 - log_p_true.exp()) ** gamma) * log_p_true
    if weight is not None:
        per_pixel = per_pixel * weight
    return getattr(per_pixel, reduce)()


def test_ch07_exercise_1_alpha_focal_loss():
    sol = solutions("07")
    ch07.exercise_1(sol.alpha_focal_loss)
    # alpha on the wrong class
    rejects(ch07.exercise_1, lambda logits, t, g, a: _focal(logits, t, g, torch.where(t > 0, 1 - a, a)))
    rejects(ch07.exercise_1, lambda logits, t, g, a: _focal(logits, t, g, torch.where(t > 0, a, 1 - a), reduce="sum"))
    # no focusing term
    rejects(ch07.exercise_1, lambda logits, t, g, a: _focal(logits, t, 0.0, torch.where(t > 0, a, 1 - a)))
    rejects(ch07.exercise_1, lambda logits, t, g, a: _focal(logits, t, g))  # alpha forgotten


def test_ch07_exercise_2_gamma_for_share():
    sol = solutions("07")
    ch07.exercise_2(sol.gamma_for_share)

    def unclipped(f, p_hard, p_easy, s):
        q = (1 - p_hard) / (1 - p_easy)
        return math.log(s * (1 - f) * -math.log(p_easy) / ((1 - s) * f * -math.log(p_hard))) / math.log(q)

    def without_the_logs(f, p_hard, p_easy, s):  # forgets the -log p factors of the loss
        q = (1 - p_hard) / (1 - p_easy)
        return max(0.0, math.log(s * (1 - f) / ((1 - s) * f)) / math.log(q))

    rejects(ch07.exercise_2, unclipped)  # negative gamma where gamma = 0 already suffices
    rejects(ch07.exercise_2, lambda *args: float(math.ceil(sol.gamma_for_share(*args))))  # an integer: not the smallest
    rejects(ch07.exercise_2, without_the_logs)
    rejects(ch07.exercise_2, lambda f, p_hard, p_easy, s: sol.gamma_for_share(f, p_easy, p_hard, s))  # swapped


def test_ch07_exercise_3_top_k_score():
    sol = solutions("07")
    ch07.exercise_3(sol.top_k_score)
    rejects(ch07.exercise_3, lambda m, k: m.flatten(1).sort(dim=1).values[:, :k].mean(1))  # the k smallest
    rejects(ch07.exercise_3, lambda m, k: m.flatten(1).sort(dim=1, descending=True).values[:, : k + 1].mean(1))
    rejects(ch07.exercise_3, lambda m, k: m.sort(dim=2, descending=True).values[:, :, :k].mean(dim=(1, 2)))  # per row
    rejects(ch07.exercise_3, lambda m, k: m.flatten(1).max(1).values)  # the maximum for every k
    rejects(ch07.exercise_3, lambda m, k: m.flatten(1).mean(1))  # the mean for every k


def test_ch07_exercise_3_rejects_topk_and_the_package():
    """Issue 20: the exercise asks to sort; torch.topk and the package's top_k_mean gave the same numbers and passed."""
    from memseg_lite.network.model import top_k_mean

    assert "topk" in rejects(ch07.exercise_3, lambda m, k: m.flatten(1).topk(k, dim=1).values.mean(1))
    assert "topk" in rejects(ch07.exercise_3, lambda m, k: torch.topk(m.flatten(1), k, dim=1).values.mean(1))
    assert "top_k_mean" in rejects(ch07.exercise_3, lambda m, k: top_k_mean(m, k))
    from_elsewhere = top_k_mean  # another name for it still counts
    assert "top_k_mean" in rejects(ch07.exercise_3, lambda m, k: from_elsewhere(m, k))


def test_ch08_exercise_1_schedule_peak():
    sol = solutions("08")
    ch08.exercise_1(sol.schedule_peak)

    def warmup(total, fraction):
        return int(round(total * fraction))

    rejects(ch08.exercise_1, lambda t, f: (warmup(t, f), sol.schedule_peak(t, f)[1]))  # off by one
    rejects(ch08.exercise_1, lambda t, f: (sol.schedule_peak(t, f)[0], 0.0))  # "decays to zero" taken literally
    rejects(ch08.exercise_1, lambda t, f: (warmup(t, f) - 1, sol.schedule_peak(t, f)[1]))  # -1 without warm-up
    rejects(ch08.exercise_1, lambda t, f: (sol.schedule_peak(t, f)[0],
                                           0.5 * (1 + math.cos(math.pi * (t - 1) / t))))  # progress without the warm-up


def test_ch08_exercise_2_anomalous_focal_share():
    sol = solutions("08")
    ch08.exercise_2(sol.anomalous_focal_share)
    rejects(ch08.exercise_2, lambda logits, t, gamma=4.0: float((t > 0.5).float().mean()))  # the pixel share
    rejects(ch08.exercise_2, lambda logits, t, gamma=4.0: sol.anomalous_focal_share(logits, t, 0.0))  # cross-entropy

    def mean_ratio(logits, t, gamma=4.0):  # means instead of sums
        per_pixel = _focal(logits, t, gamma, reduce="clone")
        return float(per_pixel[t > 0.5].mean() / per_pixel.mean()) if bool((t > 0.5).any()) else 0.0

    rejects(ch08.exercise_2, mean_ratio)
    # the normal pixels' share
    rejects(ch08.exercise_2, lambda logits, t, gamma=4.0: sol.anomalous_focal_share(logits, 1 - t))


def test_ch08_exercise_3_resume_losses(tiny_demo, tmp_path):
    from memseg_lite.training.config import TrainConfig
    from memseg_lite.training.trainer import read_log, train

    sol = solutions("08")
    ch08.exercise_3(sol.resume_losses, tiny_demo, "mesh")
    assert "positive" in rejects(ch08.exercise_3, lambda root, settings: ([0] * 4, [0] * 4), tiny_demo, "mesh")

    def one_run_returned_twice(root, settings):
        config = TrainConfig(out_dir=str(root / "only"), **settings)
        train(config, progress=False)
        losses = [record["loss"] for record in read_log(config.out_dir)[0]]
        return losses, list(losses)

    assert "two folders" in rejects(ch08.exercise_3, one_run_returned_twice, tiny_demo, "mesh")

    def two_uninterrupted_runs(root, settings):  # issue 20: same losses as a stop-and-resume, and it passed
        losses = []
        for name in ("whole", "split"):
            config = TrainConfig(out_dir=str(root / name), **settings)
            train(config, progress=False)
            losses.append([record["loss"] for record in read_log(config.out_dir)[0]])
        return tuple(losses)

    assert "two sessions" in rejects(ch08.exercise_3, two_uninterrupted_runs, tiny_demo, "mesh")


def test_ch09_exercise_1_mid_ranks():
    sol = solutions("09")
    ch09.exercise_1(sol.mid_ranks)
    rejects(ch09.exercise_1, lambda s: np.argsort(np.argsort(s, kind="stable"), kind="stable") + 1.0)  # ties broken
    rejects(ch09.exercise_1, lambda s: sol.mid_ranks(s) - 1)  # 0-based
    rejects(ch09.exercise_1, lambda s: sol.mid_ranks(-np.asarray(s)))  # highest first
    # lowest rank of a tie
    rejects(ch09.exercise_1, lambda s: (np.asarray(s)[None, :] < np.asarray(s)[:, None]).sum(1) + 1.0)


def test_ch09_exercise_2_partial_pixel_auroc():
    from sklearn.metrics import roc_auc_score

    from memseg_lite.evaluation.metrics import roc_curve

    sol = solutions("09")
    ch09.exercise_2(sol.partial_pixel_auroc)

    def mcclish(maps, masks, limit):
        labels, scores = np.asarray(masks).ravel(), np.asarray(maps).ravel()
        return roc_auc_score(labels, scores, max_fpr=limit) if limit < 1 else roc_auc_score(labels, scores)

    def not_cut(maps, masks, limit):  # drops the segment that crosses the limit
        fpr, tpr, _ = roc_curve(maps, masks)
        inside = fpr <= limit
        x, y = fpr[inside], tpr[inside]
        return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / limit)

    rejects(ch09.exercise_2, mcclish)
    # not divided by the limit
    rejects(ch09.exercise_2, lambda maps, masks, limit: sol.partial_pixel_auroc(maps, masks, limit) * limit)
    rejects(ch09.exercise_2, not_cut)


def test_ch09_exercise_3_threshold_at_fpr():
    sol = solutions("09")
    ch09.exercise_3(sol.threshold_at_fpr)

    def strictly_above(maps, masks, max_fpr):  # FPR counted with > instead of >=
        normal = np.asarray(maps)[np.asarray(masks) == 0]
        candidates = np.unique(maps)[::-1]
        fpr = np.array([(normal > t).mean() for t in candidates])
        return float(candidates[fpr <= max_fpr][-1])

    rejects(ch09.exercise_3, lambda maps, masks, max_fpr: float(np.asarray(maps).max()))  # the highest score
    rejects(ch09.exercise_3,  # a quantile of the normal scores: not a score that occurs in the maps
            lambda maps, masks, max_fpr: float(np.quantile(np.asarray(maps)[np.asarray(masks) == 0], 1 - max_fpr)))
    rejects(ch09.exercise_3, strictly_above)


# ----------------------------------------------------------------------------------------------
# Issue 20: package shortcuts, sealed expected numbers, errors in the learner's function
# ----------------------------------------------------------------------------------------------

def test_ch10_exercises_1_and_3_reject_the_package_versions():
    """They gave exactly the answer and passed; the exercises are to write them by hand."""
    from memseg_lite.core.transforms import unfit_map
    from memseg_lite.evaluation.thresholds import normalise_scores

    ch10.exercise_1(solutions("10").my_normalised)
    ch10.exercise_3(solutions("10").map_back)
    assert "normalise_scores" in rejects(ch10.exercise_1, lambda s, t: float(normalise_scores(s, t)))
    assert "unfit_map" in rejects(ch10.exercise_3, lambda values, shape: unfit_map(values, shape))


def _scipy_welch(reference, variant):
    import scipy.stats

    if len(reference) < 2 or len(variant) < 2:
        raise ValueError("two values per side")
    result = scipy.stats.ttest_ind(variant, reference, equal_var=False)
    return float(result.statistic), float(result.df)


def _scipy_paired(reference, variant):
    import scipy.stats

    a, b = np.asarray(reference, float), np.asarray(variant, float)
    if a.shape != b.shape or a.size < 2:
        raise ValueError("the same seeds on both sides, two at least")
    return float((b - a).mean()), float(scipy.stats.sem(b - a))


def test_ch11_rejects_scipy_stats():
    """The exercises say numpy only; scipy.stats gives the same numbers and passed."""
    assert "scipy.stats" in rejects(ch11.exercise_1, _scipy_welch)
    assert "scipy.stats" in rejects(ch11.exercise_2, _scipy_paired)


def test_call_avoiding_restores_the_profiler_and_passes_results_through():
    import sys

    from memseg_lite.teaching.checks.support import call_avoiding

    before = sys.getprofile()
    assert call_avoiding(lambda x: sorted(x)[::-1], [3, 1, 2], c_names=("topk",), modules=("scipy.stats",)) == [3, 2, 1]
    with pytest.raises(AssertionError, match="raised KeyError"):
        call_avoiding(lambda: {}["missing"])
    with pytest.raises(NotImplementedError):
        call_avoiding(lambda: (_ for _ in ()).throw(NotImplementedError()))
    assert sys.getprofile() is before


def test_sealed_numbers_accept_the_value_and_reject_others():
    from memseg_lite.teaching.checks.support import assert_sealed, matches_sealed, seal

    for value in (0.147658, -3.21, 1.21847e-07, 499.0, 0.0):
        sealed = seal(value)
        assert str(value) not in repr(sealed) or value == 0.0
        step = sealed.step
        assert matches_sealed(value, sealed) and matches_sealed(value + 0.4 * step, sealed)
        assert matches_sealed(value - 0.4 * step, sealed)
        assert not matches_sealed(value + 3 * step, sealed) and not matches_sealed(value - 3 * step, sealed)
        assert not matches_sealed(float("nan"), sealed)
    whole = seal(59, step=1.0, exact=True)
    assert matches_sealed(59, whole) and not matches_sealed(58, whole) and not matches_sealed(60, whole)
    message = rejects(assert_sealed, 0.15, seal(0.147658), what="the share")
    assert "0.15" in message and "0.1476" not in message
    assert "one number" in rejects(assert_sealed, [1, 2], seal(1.0), what="x")


CHECK_MODULES = ("ch00", "ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "ch09", "ch10", "ch11")


@pytest.mark.parametrize("name", CHECK_MODULES)
def test_no_expected_number_in_plain_sight(name):
    """Issue 20: single expected numbers (ch06-ch11) were module constants a learner could print; now sealed."""
    import importlib
    import numbers

    module = importlib.import_module(f"memseg_lite.teaching.checks.{name}")
    for table in (getattr(module, "EXPECTED", {}),):
        plain = [key for key, value in table.items() if isinstance(value, numbers.Number)]
        assert not plain, f"{name}.EXPECTED holds plain numbers: {plain}"


def test_failure_messages_do_not_give_the_expected_values():
    """A near miss is told it is off (and which way, where the check knows), never the value itself."""
    sol09 = solutions("09")
    values = {limit: sol09.partial_pixel_auroc(*ch09.maps_and_masks(), limit) for limit in (0.1, 0.3)}
    message = rejects(ch09.exercise_2, lambda maps, masks, limit: 1.001 * sol09.partial_pixel_auroc(maps, masks, limit))
    assert all(f"{v:.4f}" not in message and f"{v:.6g}" not in message for v in values.values())
    # the constant map's case: the diagonal's normalised area (0.15) is not printed
    message = rejects(ch09.exercise_2, lambda maps, masks, limit: (
        0.3 if np.ptp(maps) == 0 else sol09.partial_pixel_auroc(maps, masks, limit)))
    assert "too high" in message and "0.15" not in message
    sol06 = solutions("06")
    share = sol06.energy_inside_mask(*ch06.exercise_3_inputs())
    message = rejects(ch06.exercise_3, lambda f, m: 1.01 * sol06.energy_inside_mask(f, m))
    assert f"{share:.4f}" not in message and f"{share:.6g}" not in message


def _broken(*args, **kwargs):
    raise KeyError("a typo in the learner's code")


def _returns_none(*args, **kwargs):
    return None


def _exercises():
    import importlib
    import re

    for name in CHECK_MODULES:
        module = importlib.import_module(f"memseg_lite.teaching.checks.{name}")
        for attribute in sorted(dir(module)):
            if re.fullmatch(r"exercise_\d+", attribute):
                yield pytest.param(name, attribute, id=f"{name}.{attribute}")


@pytest.mark.parametrize(("name", "attribute"), list(_exercises()))
@pytest.mark.parametrize("candidate", [_broken, _returns_none], ids=["raises", "returns None"])
def test_an_error_in_the_learners_function_is_a_failed_check(name, attribute, candidate, tiny_demo, capsys):
    """Issue 20: in ch00-ch04 such errors escaped check() and stopped "Run all"; now each is a failed check."""
    import importlib

    exercise = getattr(importlib.import_module(f"memseg_lite.teaching.checks.{name}"), attribute)
    extra = {("ch02", "exercise_3"): (np.zeros((2, 8, 8, 3), np.uint8),),
             ("ch08", "exercise_3"): (tiny_demo, "mesh")}.get((name, attribute), ())
    assert check("Exercise", lambda: exercise(candidate, *extra)) is False
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("[x] Exercise: not solved yet")
    if candidate is _broken:
        assert "KeyError" in line
