"""Tests for memseg_lite.evaluation.metrics: AUROC against scikit-learn, AU-PRO against the slow reference
and against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import auc as sklearn_trapezoid_area
from sklearn.metrics import roc_auc_score as sklearn_roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve

from memseg_lite.evaluation import metrics
from memseg_lite.evaluation.metrics import (
    area_up_to,
    aupro,
    compute_all,
    image_auroc,
    naive_aupro,
    naive_pro_curve,
    pixel_auroc,
    pro_curve,
    roc_curve,
)


# --------------------------------------------------------------------------------------------
# Helpers that build test data
# --------------------------------------------------------------------------------------------
def random_scores_and_labels(rng: np.random.Generator, size: int, levels: int | None):
    """Scores in [0, 1) (quantised to ``levels`` values, so there are many ties, if given)."""
    labels = rng.random(size) < rng.uniform(0.2, 0.8)
    labels[:2] = [False, True]  # both classes present
    scores = rng.random(size) + 0.3 * labels  # informative but imperfect
    if levels is not None:
        scores = np.floor(scores * levels) / levels
    return scores.astype(np.float32), labels.astype(np.int64)


def random_masks(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """uint8 [count, H, W] masks: image 0 has no defect; the others have rectangles, scattered
    pixels (some touching only diagonally) and an isolated one-pixel region in a corner."""
    masks = np.zeros((count, height, width), dtype=np.uint8)
    for index in range(1, count):
        for _ in range(rng.integers(1, 4)):
            top, left = rng.integers(0, height - 2), rng.integers(0, width - 2)
            masks[index, top : top + rng.integers(1, 5), left : left + rng.integers(1, 5)] = 1
        masks[index] |= (rng.random((height, width)) < 0.02).astype(np.uint8)
        masks[index, -2:, :2] = 0
        masks[index, -1, 0] = 1  # a one-pixel region, 8-isolated from everything else
    return masks


def random_maps(rng: np.random.Generator, masks: np.ndarray, levels: int | None) -> np.ndarray:
    """float32 maps that are somewhat higher on the defects; quantised (ties) if ``levels``."""
    maps = rng.random(masks.shape) + 0.5 * masks * rng.random(masks.shape)
    if levels is not None:
        maps = np.floor(maps / maps.max() * (levels - 1)) / (levels - 1)
    return maps.astype(np.float32)


# --------------------------------------------------------------------------------------------
# image_auroc and roc_curve
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 5, 40])
def test_image_auroc_matches_sklearn(seed, levels):
    rng = np.random.default_rng(seed)
    scores, labels = random_scores_and_labels(rng, int(rng.integers(10, 400)), levels)
    expected = sklearn_roc_auc_score(labels, scores)
    assert image_auroc(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_image_auroc_counts_a_tie_as_one_half():
    # pairs (anomalous, normal): 0.9>0.1, 0.9>0.5, 0.5=0.5 (1/2), 0.5>0.1  ->  3.5 / 4
    assert image_auroc([0.1, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(3.5 / 4)


def test_image_auroc_perfect_inverted_and_constant_scores():
    labels = np.array([0, 1, 0, 1, 1, 0])
    assert image_auroc(labels * 2.0 + 1.0, labels) == 1.0
    assert image_auroc(-labels * 2.0, labels) == 0.0
    assert image_auroc(np.full(6, 0.7), labels) == 0.5


def test_image_auroc_torch_equals_numpy_and_lists():
    rng = np.random.default_rng(1)
    scores, labels = random_scores_and_labels(rng, 200, 20)
    expected = image_auroc(scores, labels)
    assert image_auroc(torch.from_numpy(scores), torch.from_numpy(labels)) == expected
    assert image_auroc(torch.from_numpy(scores).requires_grad_(), torch.from_numpy(labels).bool()) == expected
    assert image_auroc(scores.tolist(), labels.tolist()) == expected
    assert image_auroc(scores.astype(np.float64), labels.astype(bool)) == expected


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_image_auroc_accepts_half_precision_tensors(dtype):
    rng = np.random.default_rng(2)
    scores, labels = random_scores_and_labels(rng, 100, None)
    half = torch.from_numpy(scores).to(dtype)
    expected = sklearn_roc_auc_score(labels, half.float().numpy())
    assert image_auroc(half, labels) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("levels", [None, 8])
def test_roc_curve_matches_sklearn(seed, levels):
    rng = np.random.default_rng(seed)
    scores, labels = random_scores_and_labels(rng, 300, levels)
    fpr, tpr, thresholds = roc_curve(scores, labels)
    expected_fpr, expected_tpr, expected_thresholds = sklearn_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, expected_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr, expected_tpr, rtol=0, atol=1e-15)
    assert thresholds[0] == np.inf
    np.testing.assert_array_equal(thresholds[1:], expected_thresholds[1:])
    # The area under the curve is the AUROC.
    assert sklearn_trapezoid_area(fpr, tpr) == pytest.approx(image_auroc(scores, labels), abs=1e-12)


def test_roc_curve_thinning_keeps_ends_and_only_curve_points():
    rng = np.random.default_rng(3)
    scores, labels = random_scores_and_labels(rng, 2000, None)
    full = roc_curve(scores, labels)
    thin = roc_curve(scores, labels, max_points=50)
    assert 2 <= thin[0].size <= 50 < full[0].size
    assert (thin[0][0], thin[1][0], thin[0][-1], thin[1][-1]) == (0.0, 0.0, 1.0, 1.0)
    positions = np.searchsorted(-full[2], -thin[2])  # thresholds decrease, so search their negatives
    np.testing.assert_array_equal(full[0][positions], thin[0])
    np.testing.assert_array_equal(full[1][positions], thin[1])
    assert np.all(np.diff(thin[0] + thin[1]) > 0)
    # Fewer points than max_points: unchanged.
    for a, b in zip(roc_curve(scores, labels, max_points=10**6), full, strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# pixel_auroc
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("levels", [None, 16])
def test_pixel_auroc_matches_sklearn_and_image_auroc_on_flat_pixels(seed, levels):
    rng = np.random.default_rng(seed)
    masks = random_masks(rng, 5, 20, 24)
    maps = random_maps(rng, masks, levels)
    value = pixel_auroc(maps, masks)
    assert value == pytest.approx(sklearn_roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert value == pytest.approx(image_auroc(maps.ravel(), masks.ravel()), abs=1e-15)


def test_pixel_auroc_input_layouts_agree():
    rng = np.random.default_rng(4)
    masks = random_masks(rng, 4, 16, 16)
    maps = random_maps(rng, masks, 10)
    expected = pixel_auroc(maps, masks)
    assert pixel_auroc(maps[:, None], masks[:, None]) == expected
    assert pixel_auroc(torch.from_numpy(maps)[:, None], torch.from_numpy(masks).bool()) == expected
    assert pixel_auroc(list(maps), [torch.from_numpy(m) for m in masks]) == expected
    assert pixel_auroc(maps.astype(np.float64), masks.astype(np.float32)) == expected


def test_pixel_auroc_accepts_maps_of_different_sizes():
    rng = np.random.default_rng(5)
    masks = [random_masks(rng, 2, 12, 20)[1], random_masks(rng, 2, 30, 9)[1]]
    maps = [random_maps(rng, m, 7) for m in masks]
    flat_maps = np.concatenate([m.ravel() for m in maps])
    flat_masks = np.concatenate([m.ravel() for m in masks])
    assert pixel_auroc(maps, masks) == pytest.approx(sklearn_roc_auc_score(flat_masks, flat_maps), abs=1e-12)


# --------------------------------------------------------------------------------------------
# AU-PRO against the slow reference
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("levels", [6, 25, None])
def test_pro_curve_and_aupro_match_the_naive_reference(seed, levels):
    rng = np.random.default_rng(seed)
    masks = random_masks(rng, 4, 14, 18)
    maps = random_maps(rng, masks, levels)
    fpr, pro, thresholds = pro_curve(maps, masks)
    naive_fpr, naive_pro, naive_thresholds = naive_pro_curve(maps, masks)
    np.testing.assert_array_equal(thresholds, naive_thresholds)
    np.testing.assert_allclose(fpr, naive_fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pro, naive_pro, rtol=0, atol=1e-12)
    for limit in (0.3, 0.05, 1.0):
        assert abs(aupro(maps, masks, limit) - naive_aupro(maps, masks, limit)) < 1e-6


def test_the_random_cases_contain_what_they_claim():
    import cv2

    masks = random_masks(np.random.default_rng(0), 4, 14, 18)
    assert masks[0].sum() == 0
    sizes = [cv2.connectedComponentsWithStats(m, connectivity=8)[2][1:, cv2.CC_STAT_AREA] for m in masks[1:]]
    assert all(1 in s for s in sizes)  # one-pixel regions
    assert sum(len(s) for s in sizes) >= 6  # several regions per image


def test_regions_are_8_connected():
    # (1,1) and (2,2) touch only at a corner: ONE region with 8-connectivity. A second region C
    # (3 pixels on row 4) is separate. At the top score, (1,1) and C are flagged:
    # 8-connectivity: PRO = mean(1/2, 1) = 0.75; 4-connectivity would give mean(1, 0, 1) = 2/3.
    mask = np.zeros((1, 6, 6), dtype=np.uint8)
    mask[0, 1, 1] = mask[0, 2, 2] = 1
    mask[0, 4, 2:5] = 1
    scores = np.zeros((1, 6, 6), dtype=np.float32)
    scores[0, 1, 1] = 1.0
    scores[0, 4, 2:5] = 1.0
    for curve in (pro_curve, naive_pro_curve):
        fpr, pro, _ = curve(scores, mask)
        assert (fpr[1], pro[1]) == (0.0, pytest.approx(0.75))


# --------------------------------------------------------------------------------------------
# AU-PRO: cases worked out by hand
# --------------------------------------------------------------------------------------------
def two_images_with_a_big_and_a_small_defect():
    masks = np.zeros((2, 10, 10), dtype=np.uint8)
    masks[0, 2:6, 2:6] = 1  # region A: 16 pixels
    masks[1, 7, 7] = 1  # region B: 1 pixel
    return masks


def test_aupro_is_one_for_a_perfect_detector():
    masks = two_images_with_a_big_and_a_small_defect()
    assert aupro(masks.astype(np.float32), masks) == pytest.approx(1.0)
    rng = np.random.default_rng(0)  # any scores, as long as every defect pixel beats every normal one
    maps = np.where(masks == 1, 2 + rng.random(masks.shape), rng.random(masks.shape))
    assert aupro(maps, masks) == pytest.approx(1.0)


@pytest.mark.parametrize("limit", [0.3, 0.1, 1.0])
def test_aupro_of_a_constant_map_is_half_the_limit(limit):
    # One threshold flags everything: the curve is (0,0) -> (1,1), the diagonal PRO = FPR.
    # Area up to L is L^2 / 2; divided by L gives L / 2.
    masks = two_images_with_a_big_and_a_small_defect()
    assert aupro(np.full(masks.shape, 0.4), masks, fpr_limit=limit) == pytest.approx(limit / 2)


@pytest.mark.parametrize("found_first", ["big", "small"])
def test_aupro_two_regions_one_found_before_the_other(found_first):
    # Normal pixels get distinct scores 1..n (n = 183). The region found first scores n + 1 (above
    # every normal pixel); the other scores just below the k = 40 highest normal pixels.
    # Curve: (0,0) -> (0, 1/2) -> (k/n, 1/2) -> (k/n, 1) -> (1, 1).
    # Area up to 0.3 = (k/n) * 1/2 + (0.3 - k/n) * 1. Each region counts 1/2 whatever its size,
    # so which one is found first does not matter.
    masks = two_images_with_a_big_and_a_small_defect()
    normal = masks == 0
    n, k = int(normal.sum()), 40
    maps = np.zeros(masks.shape)
    maps[normal] = np.arange(1, n + 1)
    first, second = (0, 1) if found_first == "big" else (1, 0)
    maps[first][masks[first] == 1] = n + 1
    maps[second][masks[second] == 1] = n - k + 0.5
    expected = ((k / n) * 0.5 + (0.3 - k / n) * 1.0) / 0.3
    assert aupro(maps, masks) == pytest.approx(expected)
    assert naive_aupro(maps, masks) == pytest.approx(expected)


def test_aupro_interpolates_the_curve_at_the_limit():
    # The defect and half of the normal pixels share the top score: the curve jumps from (0, 0)
    # straight to (1/2, 1). At FPR 0.3 the straight line is at 0.6; area = 0.3 * 0.6 / 2 = 0.09.
    masks = np.zeros((1, 4, 4), dtype=np.uint8)
    masks[0, 0, :2] = 1
    maps = np.zeros((1, 4, 4))
    maps[0, :2] = 1.0  # the 2 defect pixels and 6 normal ones,
    maps[0, 2, 0] = 1.0  # and a 7th: half of the 14 normal pixels
    fpr, pro, _ = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0, 0.5, 1, 1])
    np.testing.assert_allclose(pro, [0, 1, 1, 1])
    assert aupro(maps, masks, 0.3) == pytest.approx(0.09 / 0.3)
    assert aupro(maps, masks, 0.5) == pytest.approx(0.25 / 0.5)  # limit on a point: no interpolation


@pytest.mark.parametrize("levels", [None, 7])
def test_aupro_equals_the_area_of_the_full_curve_at_any_limit(levels):
    # aupro only builds the curve up to its first point past fpr_limit; limits that fall exactly
    # on curve points, between them, and at the ends must all give the full curve's area.
    rng = np.random.default_rng(13)
    masks = random_masks(rng, 4, 16, 16)
    maps = random_maps(rng, masks, levels)
    fpr, pro, _ = pro_curve(maps, masks)
    limits = [*fpr[1:-1][:: max(1, fpr.size // 15)], 0.3, 0.01, 0.999, 1.0]
    for limit in limits:
        if limit > 0:
            assert aupro(maps, masks, limit) == pytest.approx(area_up_to(fpr, pro, limit) / limit, abs=1e-12)


def test_area_up_to_by_hand():
    x, y = np.array([0, 0.2, 0.4, 1.0]), np.array([0, 0.5, 1.0, 1.0])
    # 0..0.2: (0 + 0.5)/2 * 0.2 = 0.05; 0.2..0.3: y(0.3) = 0.75, (0.5 + 0.75)/2 * 0.1 = 0.0625
    assert area_up_to(x, y, 0.3) == pytest.approx(0.1125)
    assert area_up_to(x, y, 0.4) == pytest.approx(0.05 + 0.15)
    assert area_up_to(x, y, 1.0) == pytest.approx(sklearn_trapezoid_area(x, y))
    # A vertical step exactly at the limit adds no area.
    assert area_up_to([0, 0.3, 0.3, 1], [0, 0.2, 0.8, 1], 0.3) == pytest.approx(0.03)


def test_pro_curve_is_monotone_from_origin_to_one():
    rng = np.random.default_rng(7)
    masks = random_masks(rng, 5, 20, 20)
    fpr, pro, thresholds = pro_curve(random_maps(rng, masks, None), masks)
    assert (fpr[0], pro[0], fpr[-1], pro[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-15)
    assert np.all(np.diff(thresholds) < 0)
    assert pro[-2] == pytest.approx(1.0)  # the lowest score flags every pixel


def test_aupro_is_invariant_to_a_strictly_increasing_transform():
    rng = np.random.default_rng(8)
    masks = random_masks(rng, 4, 16, 16)
    maps = random_maps(rng, masks, 30).astype(np.float64)
    transformed = np.exp(4 * maps) - 3.0
    assert aupro(transformed, masks) == aupro(maps, masks)
    assert pixel_auroc(transformed, masks) == pixel_auroc(maps, masks)


def test_pro_curve_thinning():
    rng = np.random.default_rng(9)
    masks = random_masks(rng, 4, 24, 24)
    maps = random_maps(rng, masks, None)
    fpr, pro, thresholds = pro_curve(maps, masks, max_points=30)
    assert fpr.size <= 30 and (fpr[0], pro[0], fpr[-1], pro[-1]) == (0.0, 0.0, 1.0, 1.0)
    full_fpr, full_pro, full_thresholds = pro_curve(maps, masks)
    assert np.isin(thresholds, full_thresholds).all()


def test_aupro_input_layouts_agree():
    rng = np.random.default_rng(10)
    masks = random_masks(rng, 3, 12, 12)
    maps = random_maps(rng, masks, 9)
    expected = aupro(maps, masks)
    assert aupro(torch.from_numpy(maps)[:, None], torch.from_numpy(masks)[:, None]) == expected
    assert aupro(list(maps), list(masks.astype(bool))) == expected


def test_compute_all_equals_the_single_metrics():
    rng = np.random.default_rng(11)
    masks = random_masks(rng, 6, 16, 16)
    maps = random_maps(rng, masks, None)
    labels = masks.reshape(6, -1).max(axis=1)
    scores = maps.reshape(6, -1).max(axis=1)
    result = compute_all(scores, labels, maps, masks, fpr_limit=0.2)
    assert result == {
        "image_auroc": image_auroc(scores, labels),
        "pixel_auroc": pixel_auroc(maps, masks),
        "aupro": aupro(maps, masks, fpr_limit=0.2),
    }


# --------------------------------------------------------------------------------------------
# Errors on bad input
# --------------------------------------------------------------------------------------------
def test_image_auroc_errors():
    with pytest.raises(ValueError, match="at least one of each"):
        image_auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="same shape"):
        image_auroc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="1-D"):
        image_auroc(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="only 0"):
        image_auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="NaN"):
        image_auroc([np.nan, 0.2], [0, 1])
    with pytest.raises(TypeError, match="real numbers"):
        image_auroc(["a", "b"], [0, 1])
    with pytest.raises(ValueError, match="max_points"):
        roc_curve([0.1, 0.2, 0.3], [0, 1, 1], max_points=1)


def test_pixel_metric_errors():
    masks = two_images_with_a_big_and_a_small_defect()
    maps = np.random.default_rng(0).random(masks.shape).astype(np.float32)
    for metric in (pixel_auroc, aupro, pro_curve, naive_aupro):
        with pytest.raises(ValueError, match="no anomalous pixel|0 anomalous|0 regions"):
            metric(maps, np.zeros_like(masks))
        with pytest.raises(ValueError, match="no normal pixel|0 normal"):
            metric(maps, np.ones_like(masks))
        with pytest.raises(ValueError, match=r"anomaly_maps\[0\] has shape"):
            metric(maps[:, :, :5], masks)
        with pytest.raises(ValueError, match="2 masks"):
            metric(maps[:1], masks)
        with pytest.raises(ValueError, match="0/255 PNG"):
            metric(maps, masks * 255)
        with pytest.raises(ValueError, match="only 0"):
            metric(maps, masks * 0.5)
        with pytest.raises(ValueError, match="batch axis"):
            metric(maps[0], masks[0])
        with pytest.raises(ValueError, match="NaN"):
            metric(np.where(masks == 1, np.nan, maps), masks)
        with pytest.raises(ValueError, match="empty"):
            metric([], [])
    for limit in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fpr_limit"):
            aupro(maps, masks, fpr_limit=limit)
        with pytest.raises(ValueError, match="fpr_limit"):
            naive_aupro(maps, masks, fpr_limit=limit)
    with pytest.raises(TypeError, match="fpr_limit"):
        aupro(maps, masks, fpr_limit="0.3")


def test_area_up_to_errors():
    with pytest.raises(ValueError, match="outside"):
        area_up_to([0, 0.5], [0, 1], 0.7)
    with pytest.raises(ValueError, match="same length"):
        area_up_to([0, 1], [0, 0.5, 1], 0.5)


def test_chunked_auroc_count_equals_unchunked(monkeypatch):
    rng = np.random.default_rng(12)
    scores, labels = random_scores_and_labels(rng, 500, 30)
    expected = image_auroc(scores, labels)
    monkeypatch.setattr(metrics, "_SEARCH_CHUNK", 7)
    assert image_auroc(scores, labels) == pytest.approx(expected, abs=1e-15)


# --------------------------------------------------------------------------------------------
# Valid-pixel masks (letterbox padding left out)
# --------------------------------------------------------------------------------------------
def letterboxed_case(rng: np.random.Generator, count: int = 5, height: int = 24, width: int = 40):
    """Maps / masks on an H x W canvas whose image occupies a different centred band per image;
    the padding has mask 0 and random scores (as high as the product's, so it would change the
    numbers if it counted). Returns (maps, masks, valid, crops): crops[i] are image i's own pixels."""
    masks = np.zeros((count, height, width), dtype=np.uint8)
    maps = rng.random((count, height, width)).astype(np.float32)
    valid = np.zeros((count, height, width), dtype=np.uint8)
    crops = []
    for index in range(count):
        content_width = int(rng.integers(8, width + 1))
        left = (width - content_width) // 2
        window = (slice(None), slice(left, left + content_width))
        valid[index][window] = 1
        own = random_masks(rng, 2, height, content_width)[1]
        masks[index][window] = own
        maps[index][window] += 0.5 * own * rng.random(own.shape).astype(np.float32)
        crops.append(window)
    masks[0] = 0  # one image without a defect
    return maps, masks, valid, crops


@pytest.mark.parametrize("seed", range(3))
def test_pixel_metrics_with_a_valid_mask_equal_those_of_the_cropped_maps(seed):
    rng = np.random.default_rng(100 + seed)
    maps, masks, valid, crops = letterboxed_case(rng)
    inside = valid.astype(bool)
    assert (~inside).any(), "the case has padding"
    cropped_maps = [m[c] for m, c in zip(maps, crops, strict=True)]
    cropped_masks = [m[c] for m, c in zip(masks, crops, strict=True)]
    # Independent references: scikit-learn on the valid pixels, the slow PRO definition on the crops.
    expected_auroc = sklearn_roc_auc_score(masks[inside], maps[inside])
    assert pixel_auroc(maps, masks, valid=valid) == pytest.approx(expected_auroc, abs=1e-12)
    assert aupro(maps, masks, valid=valid) == pytest.approx(naive_aupro(cropped_maps, cropped_masks), abs=1e-12)
    fpr, pro, _ = pro_curve(maps, masks, valid=valid)
    naive_fpr, naive_pro, _ = naive_pro_curve(cropped_maps, cropped_masks)
    # The naive curve has a point at every distinct score of the crops; the fast one too.
    np.testing.assert_allclose(fpr, naive_fpr, atol=1e-12)
    np.testing.assert_allclose(pro, naive_pro, atol=1e-12)
    combined = compute_all(maps.max(axis=(1, 2)), masks.any(axis=(1, 2)), maps, masks, valid=valid)
    assert combined["pixel_auroc"] == pytest.approx(expected_auroc, abs=1e-12)
    assert combined["aupro"] == pytest.approx(naive_aupro(cropped_maps, cropped_masks), abs=1e-12)
    # ... and the padding did count without the mask (the case is not trivial).
    assert pixel_auroc(maps, masks) != pytest.approx(expected_auroc, abs=1e-6)


def test_padding_values_do_not_matter_and_all_ones_changes_nothing():
    rng = np.random.default_rng(7)
    maps, masks, valid, _ = letterboxed_case(rng)
    other = maps.copy()
    other[valid == 0] = rng.random(int((valid == 0).sum())) * 10  # anything in the padding
    assert pixel_auroc(other, masks, valid=valid) == pixel_auroc(maps, masks, valid=valid)
    assert aupro(other, masks, valid=valid) == aupro(maps, masks, valid=valid)
    # A defect pixel in the padding is cut away with it.
    marked = masks.copy()
    marked[valid == 0] = 1
    assert aupro(maps, marked, valid=valid) == aupro(maps, masks, valid=valid)
    # All ones (torch or bool too): exactly the numbers of all pixels.
    ones = np.ones_like(valid)
    assert pixel_auroc(maps, masks, valid=ones) == pixel_auroc(maps, masks)
    assert aupro(maps, masks, valid=torch.from_numpy(ones).bool()) == aupro(maps, masks)


def test_valid_mask_errors():
    maps = np.random.default_rng(0).random((2, 4, 4))
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[1, 1, 1] = 1
    with pytest.raises(ValueError, match=r"valid\[0\] has shape"):
        pixel_auroc(maps, masks, valid=np.ones((2, 4, 5)))
    with pytest.raises(ValueError, match="2 anomaly maps but 1 valid masks"):
        aupro(maps, masks, valid=np.ones((1, 4, 4)))
    with pytest.raises(ValueError, match="valid"):
        pixel_auroc(maps, masks, valid=np.full((2, 4, 4), 2))
    cut = np.ones((2, 4, 4))
    cut[1, 1, 1] = 0  # the only defect pixel is outside the valid region
    with pytest.raises(ValueError, match="undefined"):
        pixel_auroc(maps, masks, valid=cut)
