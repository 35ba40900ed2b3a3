"""Evaluation metrics, built from scratch: image AUROC, pixel AUROC and AU-PRO.

All three compare anomaly scores of *normal* things (good images, or pixels with mask 0) with
scores of *anomalous* things (defective images, or pixels with mask 1):

- **AUROC** is the probability that a random anomalous sample scores higher than a random normal
  one, a tie counting 1/2 (the Mann-Whitney statistic; equal to the area under the ROC curve, and
  to scikit-learn's ``roc_auc_score``).
- **AU-PRO** (MVTec AD's per-region-overlap metric) weighs every connected defect region equally,
  so a small scratch counts as much as a large stain. At a threshold ``t``:

  * ``FPR(t)`` = fraction of all normal pixels (over all images) with score ``>= t``;
  * ``PRO(t)`` = mean over all regions (8-connected components of each mask, over all images) of
    the fraction of the region's pixels with score ``>= t``.

  The curve runs over every distinct score, highest first, from (0, 0) to (1, 1); AU-PRO is its
  trapezoidal area up to ``FPR = fpr_limit`` (the curve linearly interpolated at the limit),
  divided by ``fpr_limit``. This follows MVTec's official evaluation code.

How the fast versions work: sort the scores of the normal pixels once (values only, float32
kept float32), then count "how many normal scores are >= t" by binary search
(``np.searchsorted``) for a whole batch of thresholds ``t`` at once. The anomalous pixels are few
(a few per cent), so sorting them together with their region weights is cheap, and PRO is a
cumulative sum of those weights. There is no loop over thresholds, no 8-byte index per pixel and
no float64 copy of the maps: pixel AUROC adds about 5 bytes per pixel, AU-PRO about 10 (on
continuous scores), so even the whole MVTec AD test set (about 110 million pixels at 256 x 256)
fits in memory. Ties need no special care: a search for ``t`` counts every pixel whose score
equals ``t``, which is what "keep only the last index of each run of equal scores" does in the
argsort-and-cumsum formulation of MVTec's code. The curves are the same point for point.

**Valid pixels.** An image letterboxed into the network's ``H x W`` (aspect ratio kept, black
borders) has padding pixels that are not the product: mask 0 and an anomaly map near 0, they
would count as easy normal pixels and inflate pixel AUROC and AU-PRO. The pixel metrics take an
optional ``valid`` mask per image (1 = the image's own pixel, e.g.
:class:`memseg_lite.datasets.mvtec.EvaluationSet`'s ``"valid"``); pixels with 0 are left out
of every count. Without it (or with it all ones) the numbers are exactly those of all pixels.

``naive_pro_curve`` / ``naive_aupro`` compute the same thing the slow, obvious way (a loop over
thresholds) so the fast version can be checked against the definition.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

#: What the metrics accept: numpy arrays, torch tensors (any device) or (nested) lists.
ArrayLike = np.ndarray | torch.Tensor | Sequence

#: Positive scores searched per batch in the AUROC count (bounds the int64 temporaries to ~16 MB).
_SEARCH_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------
# Input checking and conversion
# --------------------------------------------------------------------------------------------
def _to_numpy(values: object, name: str) -> np.ndarray:
    """numpy view (or the cheapest copy) of an array-like or tensor; float16/bfloat16 -> float32."""
    if isinstance(values, torch.Tensor):
        tensor = values.detach()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()  # numpy has no bfloat16; float16 sorts slowly
        return tensor.cpu().numpy()
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as error:
        raise TypeError(f"{name} must be a numpy array, a torch tensor or a list of numbers ({error})") from error
    if array.dtype == object:
        raise TypeError(f"{name} must hold numbers of one shape, got a ragged or object array")
    return array


def _as_scores(array: np.ndarray, name: str) -> np.ndarray:
    """Scores as float32 (float64 kept as given, never made); NaN / inf rejected."""
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)
    if array.size and not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values; check the model output")
    return array


def _as_binary(array: np.ndarray, name: str) -> np.ndarray:
    """0/1 (or bool) values as a bool array; anything else is a clear error."""
    if array.dtype == np.bool_:
        return array
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold 0/1 or bool values, got dtype {array.dtype}")
    not_binary = (array != 0) & (array != 1)
    if not_binary.any():
        example = array[not_binary].flat[0]
        hint = " (0/255 PNG masks: use mask > 0 or mask // 255)" if example == 255 else ""
        raise ValueError(f"{name} must contain only 0 (normal) and 1 (anomalous), found {example!r}{hint}")
    return array != 0


def _scores_and_labels(scores: ArrayLike, labels: ArrayLike, flatten: bool) -> tuple[np.ndarray, np.ndarray]:
    scores = _to_numpy(scores, "scores")
    labels = _to_numpy(labels, "labels")
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels must have the same shape, got {scores.shape} and {labels.shape}")
    if not flatten and scores.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D (one value per image), got shape {scores.shape}; "
                         "flatten them with .reshape(-1)")
    return _as_scores(scores.reshape(-1), "scores"), _as_binary(labels.reshape(-1), "labels")


def _as_image_list(values: ArrayLike, name: str) -> list[np.ndarray]:
    """``[N, H, W]`` / ``[N, 1, H, W]`` array or tensor, or a list of ``[H, W]``, as a list of 2-D arrays."""
    if isinstance(values, (list, tuple)):
        images = []
        for index, item in enumerate(values):
            image = _to_numpy(item, f"{name}[{index}]")
            if image.ndim == 3 and image.shape[0] == 1:
                image = image[0]
            if image.ndim != 2:
                raise ValueError(f"{name}[{index}] must be an H x W map, got shape {image.shape}")
            images.append(image)
    else:
        stacked = _to_numpy(values, name)
        if stacked.ndim == 4 and stacked.shape[1] == 1:
            stacked = stacked[:, 0]
        if stacked.ndim != 3:
            hint = " (one map? add a batch axis: x[None])" if stacked.ndim == 2 else ""
            raise ValueError(f"{name} must be shaped [N, H, W] or [N, 1, H, W], or be a list of [H, W] maps, "
                             f"got shape {stacked.shape}{hint}")
        images = list(stacked)
    if not images:
        raise ValueError(f"{name} is empty; pass at least one map")
    return images


def _maps_and_masks(anomaly_maps: ArrayLike, masks: ArrayLike) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Checked lists of score maps (float32/float64 ``[H, W]``) and bool masks of the same shapes."""
    maps = _as_image_list(anomaly_maps, "anomaly_maps")
    truths = _as_image_list(masks, "masks")
    if len(maps) != len(truths):
        raise ValueError(f"got {len(maps)} anomaly maps but {len(truths)} masks; pass one mask per map")
    for index, (score_map, mask) in enumerate(zip(maps, truths, strict=True)):
        if score_map.shape != mask.shape:
            raise ValueError(f"anomaly_maps[{index}] has shape {score_map.shape} but masks[{index}] has "
                             f"shape {mask.shape}; resize the masks to the maps (nearest-neighbour)")
    maps = [_as_scores(m, f"anomaly_maps[{i}]") for i, m in enumerate(maps)]
    dtype = np.result_type(*(m.dtype for m in maps))  # float64 only if some map is float64
    maps = [m.astype(dtype, copy=False) for m in maps]
    truths = [_as_binary(m, f"masks[{i}]") for i, m in enumerate(truths)]
    return maps, truths


def _check_both_classes(num_normal: int, num_anomalous: int, what: str) -> None:
    if num_normal == 0 or num_anomalous == 0:
        raise ValueError(f"{what} is undefined with {num_normal} normal and {num_anomalous} anomalous "
                         "samples; it needs at least one of each")


# --------------------------------------------------------------------------------------------
# Counting with sorted scores
# --------------------------------------------------------------------------------------------
def _distinct(sorted_values: np.ndarray) -> np.ndarray:
    """The distinct values of an ascending array (the last of each run of equal values)."""
    if sorted_values.size == 0:
        return sorted_values
    return sorted_values[np.append(sorted_values[1:] != sorted_values[:-1], True)]


def _distinct_descending(*sorted_arrays: np.ndarray) -> np.ndarray:
    """Every distinct value found in the ascending arrays (all of one dtype), highest first."""
    parts = [_distinct(a) for a in sorted_arrays]
    # A stable sort of concatenated sorted runs is a linear-time merge (numpy uses timsort).
    merged = np.sort(np.concatenate(parts), kind="stable")
    return _distinct(merged)[::-1]


def _count_at_least(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``[#(sorted_values >= t) for t in thresholds]`` (int64) by binary search in an ascending array."""
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left")


def _auroc_from_sorted_normals(normal_sorted: np.ndarray, anomalous: np.ndarray) -> float:
    """Mann-Whitney AUROC; ``normal_sorted`` ascending. Counted exactly in integers.

    For each anomalous score s: ``below`` = #normals < s, ``at_or_below`` = #normals <= s.
    ``below + at_or_below`` = 2 x wins + ties, so the sum over all s is twice the tie-aware win count.
    """
    twice_wins = 0
    for start in range(0, anomalous.size, _SEARCH_CHUNK):
        chunk = anomalous[start : start + _SEARCH_CHUNK].astype(normal_sorted.dtype, copy=False)
        twice_wins += int(np.searchsorted(normal_sorted, chunk, side="left").sum())
        twice_wins += int(np.searchsorted(normal_sorted, chunk, side="right").sum())
    return twice_wins / (2 * normal_sorted.size * anomalous.size)


# --------------------------------------------------------------------------------------------
# Image-level metrics (also usable on flattened pixels)
# --------------------------------------------------------------------------------------------
def image_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Exact area under the ROC curve; a tie between a normal and an anomalous sample counts 1/2.

    Args:
        scores: ``[N]`` float anomaly scores (numpy, torch or a list); higher = more anomalous.
        labels: ``[N]`` 0 (normal) / 1 (anomalous), or bool.

    Returns:
        AUROC in [0, 1], equal to ``sklearn.metrics.roc_auc_score(labels, scores)``.
    """
    scores, labels = _scores_and_labels(scores, labels, flatten=False)
    normal, anomalous = scores[~labels], scores[labels]
    _check_both_classes(normal.size, anomalous.size, "image AUROC")
    normal.sort()  # our own copy (boolean indexing copies), sorted in place
    return _auroc_from_sorted_normals(normal, anomalous)


def roc_curve(
    scores: ArrayLike, labels: ArrayLike, max_points: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve at every distinct score, highest first, starting at (0, 0) with threshold +inf.

    The same points as ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)``.

    Args:
        scores: float scores of any shape (flattened; e.g. ``[N]`` image scores or ``[N, H, W]`` maps).
        labels: 0/1 or bool of the same shape.
        max_points: for plots, keep at most this many points (>= 2), spread evenly along the curve,
            always keeping both ends. ``None`` keeps every point.

    Returns:
        ``(fpr, tpr, thresholds)``, float64 ``[P]`` each; point i flags scores ``>= thresholds[i]``.
    """
    scores, labels = _scores_and_labels(scores, labels, flatten=True)
    normal, anomalous = np.sort(scores[~labels]), np.sort(scores[labels])
    _check_both_classes(normal.size, anomalous.size, "the ROC curve")
    thresholds = _distinct_descending(normal, anomalous)
    fpr = np.r_[0.0, _count_at_least(normal, thresholds) / normal.size]
    tpr = np.r_[0.0, _count_at_least(anomalous, thresholds) / anomalous.size]
    thresholds = np.r_[np.inf, thresholds.astype(np.float64)]
    return _thin_curve(fpr, tpr, thresholds, max_points)


def _thin_curve(
    x: np.ndarray, y: np.ndarray, thresholds: np.ndarray, max_points: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep at most ``max_points`` points, evenly spaced in ``x + y`` (which only grows), plus both ends."""
    if max_points is None:
        return x, y, thresholds
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 2:
        raise ValueError(f"max_points must be an integer >= 2 or None, got {max_points!r}")
    if x.size <= max_points:
        return x, y, thresholds
    progress = x + y
    targets = np.linspace(progress[0], progress[-1], max_points)[1:-1]
    inner = np.searchsorted(progress, targets, side="left")
    keep = np.unique(np.r_[0, inner, x.size - 1])
    return x[keep], y[keep], thresholds[keep]


# --------------------------------------------------------------------------------------------
# Pixel-level metrics
# --------------------------------------------------------------------------------------------
@dataclass
class _SortedPixels:
    """The pixels of all maps, split by ground truth and sorted by score (ascending).

    ``region`` / ``region_sizes`` are filled only when regions were asked for.
    """

    normal: np.ndarray  # [num_normal] scores of mask == 0 pixels
    anomalous: np.ndarray  # [num_anomalous] scores of mask == 1 pixels
    region: np.ndarray | None  # [num_anomalous] int32 region index (0 .. R-1) of each anomalous pixel
    region_sizes: np.ndarray | None  # [R] int64 pixels per region


def _valid_masks(valid: ArrayLike | None, maps: list[np.ndarray]) -> list[np.ndarray] | None:
    """Checked bool ``valid`` masks, one per map (``None``: every pixel counts)."""
    if valid is None:
        return None
    inside = _as_image_list(valid, "valid")
    if len(inside) != len(maps):
        raise ValueError(f"got {len(maps)} anomaly maps but {len(inside)} valid masks; pass one per map")
    for index, (score_map, region) in enumerate(zip(maps, inside, strict=True)):
        if region.shape != score_map.shape:
            raise ValueError(f"valid[{index}] has shape {region.shape} but anomaly_maps[{index}] has shape "
                             f"{score_map.shape}; the valid mask marks which pixels of the map are the image's own")
    return [_as_binary(region, f"valid[{i}]") for i, region in enumerate(inside)]


def _sort_pixels(
    anomaly_maps: ArrayLike, masks: ArrayLike, with_regions: bool, valid: ArrayLike | None = None
) -> _SortedPixels:
    maps, truths = _maps_and_masks(anomaly_maps, masks)
    inside = _valid_masks(valid, maps)
    if inside is not None:
        # Pixels outside the valid region (letterbox padding) are neither normal nor anomalous; a
        # defect region is only its valid part, so it is cut the same way as its image.
        truths = [mask & region for mask, region in zip(truths, inside, strict=True)]
    num_anomalous = sum(int(np.count_nonzero(mask)) for mask in truths)
    if inside is None:
        num_normal = sum(mask.size for mask in truths) - num_anomalous
    else:
        num_normal = sum(int(np.count_nonzero(region)) for region in inside) - num_anomalous
    # One preallocated copy of the scores, split by class: the only per-pixel memory we add.
    normal = np.empty(num_normal, dtype=maps[0].dtype)
    anomalous = np.empty(num_anomalous, dtype=maps[0].dtype)
    region = np.empty(num_anomalous, dtype=np.int32) if with_regions else None
    sizes: list[np.ndarray] = []
    at_normal = at_anomalous = num_regions = 0
    for index, (score_map, mask) in enumerate(zip(maps, truths, strict=True)):
        count = int(np.count_nonzero(mask))
        normal_here = ~mask if inside is None else inside[index] & ~mask
        num_normal_here = mask.size - count if inside is None else int(np.count_nonzero(normal_here))
        normal[at_normal : at_normal + num_normal_here] = score_map[normal_here]
        anomalous[at_anomalous : at_anomalous + count] = score_map[mask]
        if with_regions and count:
            # Regions: 8-connected components of this image's mask (label 0 is the background),
            # numbered after the regions of the previous images.
            num_labels, labels = cv2.connectedComponents(
                np.ascontiguousarray(mask, dtype=np.uint8), connectivity=8, ltype=cv2.CV_32S
            )
            local = labels[mask] - 1
            region[at_anomalous : at_anomalous + count] = local + num_regions
            sizes.append(np.bincount(local, minlength=num_labels - 1))
            num_regions += num_labels - 1
        at_normal += num_normal_here
        at_anomalous += count
    normal.sort()
    if with_regions:
        order = np.argsort(anomalous, kind="stable")  # only the (few) anomalous pixels get an index
        anomalous, region = anomalous[order], region[order]
        region_sizes = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
        return _SortedPixels(normal, anomalous, region, region_sizes.astype(np.int64))
    anomalous.sort()  # sorted queries make the binary searches cache-friendly
    return _SortedPixels(normal, anomalous, None, None)


def pixel_auroc(anomaly_maps: ArrayLike, masks: ArrayLike, valid: ArrayLike | None = None) -> float:
    """AUROC over all pixels of all maps (ties count 1/2), memory-efficient.

    Args:
        anomaly_maps: ``[N, H, W]`` or ``[N, 1, H, W]`` float scores (numpy or torch), or a list of
            ``[H, W]`` maps (sizes may differ between images). Kept in float32 (float64 if given).
        masks: ground truth of the same shape(s), 0/1 or bool.
        valid: optional ``[N, H, W]`` 0/1 masks (or a list), 1 where the pixel is the image's own;
            pixels with 0 (e.g. letterbox padding) are left out of every count. ``None``: all pixels.

    Returns:
        The same number as ``roc_auc_score(masks.ravel(), anomaly_maps.ravel())``, using about
        5 bytes per pixel on top of the inputs (scikit-learn: about 50).
    """
    pixels = _sort_pixels(anomaly_maps, masks, with_regions=False, valid=valid)
    _check_both_classes(pixels.normal.size, pixels.anomalous.size, "pixel AUROC")
    return _auroc_from_sorted_normals(pixels.normal, pixels.anomalous)


def _pro_curve_from_sorted(
    pixels: _SortedPixels, fpr_limit: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The PRO curve; with ``fpr_limit``, only up to its first point past that FPR (enough for the area)."""
    normal, anomalous = pixels.normal, pixels.anomalous
    num_normal, num_regions = normal.size, pixels.region_sizes.size
    if num_normal == 0:
        raise ValueError("AU-PRO is undefined: the masks have no normal pixel (mask == 0), so FPR cannot be computed")
    if num_regions == 0:
        raise ValueError("AU-PRO is undefined: the masks have no anomalous pixel (mask == 1), so there is no "
                         "region to overlap; evaluate on a set that contains defective images")
    # The curve has a point at every distinct score t, highest first ...
    lowest = -np.inf
    if fpr_limit is not None and fpr_limit < 1.0:
        # ... but the area up to fpr_limit needs only the thresholds down to the k-th highest normal
        # score, k > fpr_limit * num_normal: there FPR already exceeds fpr_limit.
        k = min(num_normal, int(np.ceil(fpr_limit * num_normal)) + 1)
        lowest = normal[num_normal - k]
    thresholds = _distinct_descending(
        normal[np.searchsorted(normal, lowest, side="left") :],
        anomalous[np.searchsorted(anomalous, lowest, side="left") :],
    )
    # FPR(t) = #(normal pixels with score >= t) / #normal pixels.
    fpr = _count_at_least(normal, thresholds) / num_normal
    # PRO(t) = (1/R) sum_r #(pixels of r with score >= t) / |r|: each anomalous pixel adds
    # 1 / (R |r|). Summed over pixels from the highest score down (suffix sums of the ascending
    # order), and read at the first pixel with score >= t.
    weight = 1.0 / (num_regions * pixels.region_sizes[pixels.region])
    weight_at_or_above = np.append(np.cumsum(weight[::-1])[::-1], 0.0)
    pro = weight_at_or_above[np.searchsorted(anomalous, thresholds, side="left")]
    thresholds = thresholds.astype(np.float64)
    # Start at (0, 0) (nothing flagged) and, for the whole curve, end at (1, 1) (everything
    # flagged), as MVTec's code does.
    if lowest > -np.inf:
        return np.r_[0.0, fpr], np.r_[0.0, pro], np.r_[np.inf, thresholds]
    return np.r_[0.0, fpr, 1.0], np.r_[0.0, pro, 1.0], np.r_[np.inf, thresholds, -np.inf]


def pro_curve(
    anomaly_maps: ArrayLike, masks: ArrayLike, max_points: int | None = None, valid: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-region-overlap curve: PRO against FPR at every distinct score, highest first.

    Args:
        anomaly_maps: ``[N, H, W]`` / ``[N, 1, H, W]`` float scores, or a list of ``[H, W]`` maps.
        masks: ground truth of the same shape(s), 0/1 or bool; regions are the 8-connected
            components of each image's mask.
        max_points: for plots, keep at most this many points (both ends kept); ``None`` keeps all.
        valid: optional ``[N, H, W]`` 0/1 masks (or a list), 1 where the pixel is the image's own;
            pixels with 0 (e.g. letterbox padding) are left out of every count
            (FPR over valid normal pixels, regions cut to their valid part). ``None``: all pixels.

    Returns:
        ``(fpr, pro, thresholds)``, float64 ``[P]`` each, with ``fpr`` and ``pro`` non-decreasing
        from (0, 0) (threshold +inf) to (1, 1) (threshold -inf).

    Raises:
        ValueError: no normal or no anomalous pixel, shape mismatch, masks that are not 0/1.
    """
    fpr, pro, thresholds = _pro_curve_from_sorted(_sort_pixels(anomaly_maps, masks, with_regions=True, valid=valid))
    return _thin_curve(fpr, pro, thresholds, max_points)


def _check_fpr_limit(fpr_limit: float) -> float:
    if isinstance(fpr_limit, bool) or not isinstance(fpr_limit, (int, float, np.floating, np.integer)):
        raise TypeError(f"fpr_limit must be a number in (0, 1], got {fpr_limit!r}")
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1] (MVTec uses 0.3), got {fpr_limit}")
    return float(fpr_limit)


def area_up_to(x: np.ndarray, y: np.ndarray, x_limit: float) -> float:
    """Trapezoidal area under the curve ``(x, y)`` from ``x[0]`` to ``x_limit``.

    ``x`` must be non-decreasing with ``x[0] <= x_limit <= x[-1]``. When ``x_limit`` falls between
    two points, the curve is linearly interpolated there (MVTec's evaluation does the same).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"x and y must be 1-D of the same length >= 2, got {x.shape} and {y.shape}")
    if not x[0] <= x_limit <= x[-1]:
        raise ValueError(f"x_limit={x_limit} is outside the curve's range [{x[0]}, {x[-1]}]")
    inside = int(np.searchsorted(x, x_limit, side="right"))  # x[:inside] <= x_limit < x[inside:]
    xs, ys = x[:inside], y[:inside]
    if xs[-1] < x_limit:
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        xs = np.append(xs, x_limit)
        ys = np.append(ys, y0 + (y1 - y0) * (x_limit - x0) / (x1 - x0))
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))  # trapezoids


def aupro(anomaly_maps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3, valid: ArrayLike | None = None) -> float:
    """Area under the PRO curve for FPR in [0, fpr_limit], divided by ``fpr_limit`` (so 1.0 is perfect).

    Same definition as MVTec AD's official evaluation code; see the module docstring and
    :func:`pro_curve` for the arguments (``valid``: only those pixels count). A constant map
    scores ``fpr_limit / 2``.
    """
    fpr_limit = _check_fpr_limit(fpr_limit)
    pixels = _sort_pixels(anomaly_maps, masks, with_regions=True, valid=valid)
    fpr, pro, _ = _pro_curve_from_sorted(pixels, fpr_limit)
    return area_up_to(fpr, pro, fpr_limit) / fpr_limit


def compute_all(
    image_scores: ArrayLike,
    image_labels: ArrayLike,
    anomaly_maps: ArrayLike,
    masks: ArrayLike,
    fpr_limit: float = 0.3,
    valid: ArrayLike | None = None,
) -> dict[str, float]:
    """``{"image_auroc", "pixel_auroc", "aupro"}`` in one call (the pixels are sorted only once).

    ``valid``: as in :func:`pixel_auroc`, for the two pixel metrics.
    """
    fpr_limit = _check_fpr_limit(fpr_limit)
    pixels = _sort_pixels(anomaly_maps, masks, with_regions=True, valid=valid)
    _check_both_classes(pixels.normal.size, pixels.anomalous.size, "pixel AUROC")
    fpr, pro, _ = _pro_curve_from_sorted(pixels, fpr_limit)
    return {
        "image_auroc": image_auroc(image_scores, image_labels),
        "pixel_auroc": _auroc_from_sorted_normals(pixels.normal, pixels.anomalous),
        "aupro": area_up_to(fpr, pro, fpr_limit) / fpr_limit,
    }


# --------------------------------------------------------------------------------------------
# Slow reference, for checking only
# --------------------------------------------------------------------------------------------
def _regions_by_flood_fill(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """8-connected regions of a bool mask as ``(rows, cols)`` index arrays; plain Python, slow."""
    height, width = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    regions = []
    for start_row, start_col in zip(*np.nonzero(mask), strict=True):
        if seen[start_row, start_col]:
            continue
        seen[start_row, start_col] = True
        queue, rows, cols = deque([(start_row, start_col)]), [], []
        while queue:
            row, col = queue.popleft()
            rows.append(row)
            cols.append(col)
            for d_row in (-1, 0, 1):
                for d_col in (-1, 0, 1):
                    r, c = row + d_row, col + d_col
                    if 0 <= r < height and 0 <= c < width and mask[r, c] and not seen[r, c]:
                        seen[r, c] = True
                        queue.append((r, c))
        regions.append((np.array(rows), np.array(cols)))
    return regions


def naive_pro_curve(anomaly_maps: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SLOW, FOR CHECKING: the PRO curve computed threshold by threshold, straight from the definition.

    Same arguments and result as :func:`pro_curve`; shares only the input checks with it.
    Cost: (number of distinct scores) x (number of pixels).
    """
    maps, truths = _maps_and_masks(anomaly_maps, masks)
    regions = [_regions_by_flood_fill(mask) for mask in truths]
    num_normal = sum(int(np.count_nonzero(~mask)) for mask in truths)
    num_regions = sum(len(r) for r in regions)
    if num_normal == 0 or num_regions == 0:
        raise ValueError(f"AU-PRO is undefined with {num_normal} normal pixels and {num_regions} regions")
    thresholds = np.unique(np.concatenate([m.ravel() for m in maps]).astype(np.float64))[::-1]
    fprs, pros = [0.0], [0.0]
    for threshold in thresholds:
        false_positives, overlaps = 0, []
        for score_map, mask, image_regions in zip(maps, truths, regions, strict=True):
            flagged = score_map >= threshold
            false_positives += int(np.count_nonzero(flagged & ~mask))
            for rows, cols in image_regions:
                overlaps.append(np.count_nonzero(flagged[rows, cols]) / rows.size)
        fprs.append(false_positives / num_normal)
        pros.append(float(np.mean(overlaps)))
    fprs.append(1.0)
    pros.append(1.0)
    return np.array(fprs), np.array(pros), np.r_[np.inf, thresholds, -np.inf]


def naive_aupro(anomaly_maps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3) -> float:
    """SLOW, FOR CHECKING: AU-PRO from :func:`naive_pro_curve`, integrated segment by segment."""
    fpr_limit = _check_fpr_limit(fpr_limit)
    fpr, pro, _ = naive_pro_curve(anomaly_maps, masks)
    area = 0.0
    for x0, x1, y0, y1 in zip(fpr[:-1], fpr[1:], pro[:-1], pro[1:], strict=True):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:  # cut the last segment at the limit, on the straight line between its ends
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit
