"""Segmentation and detection metrics in plain numpy, vectorised, for millions of pixels.

Evaluation must not depend on scikit-learn, and the pixel counts of a 3D dataset (tens of millions
of voxels, a thousand thresholds) rule out loops over pixels or thresholds: the area metrics work
on one sort of the scores, and the counts at many thresholds come from binary searches in the
sorted scores of the positive and of the negative pixels.

Conventions: a score is "more anomalous" the higher it is, a pixel or image is predicted positive
when its score is >= the threshold, labels are anything numpy turns into bool (non-zero =
anomaly).
"""
from __future__ import annotations

import numpy as np

# Pooling more pixels than this (for pooled AUROC / AP and for candidate thresholds) takes an
# evenly spaced subsample: the sort behind each metric stays within a few hundred MB.
MAX_POOLED_VALUES = 20_000_000


def _scores_and_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Flat scores (their own numeric dtype) and flat bool labels of the same length."""
    scores = np.ravel(np.asarray(scores))
    if scores.dtype.kind not in "fiub":
        raise ValueError(f"scores must be numbers, not {scores.dtype}")
    labels = np.ravel(np.asarray(labels)).astype(bool, copy=False)
    if scores.size != labels.size:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if scores.dtype.kind == "f" and not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    return scores, labels


def _thresholds(thresholds) -> np.ndarray:
    thresholds = np.ravel(np.asarray(thresholds, dtype=np.float64))
    if np.isnan(thresholds).any():
        raise ValueError("thresholds contain NaN")
    return thresholds


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice coefficient 2|P∩R| / (|P| + |R|) of two masks of equal shape (non-zero = anomaly).

    Both empty gives 1.0: a case without anomaly that is predicted empty is segmented perfectly.
    The subject-wise means of autouad's summaries still leave such cases out, as the papers' tables
    do (one empty prediction would count as a perfect subject); they report the flagged voxels of
    normal cases instead.
    """
    prediction = np.asarray(prediction).astype(bool, copy=False)
    reference = np.asarray(reference).astype(bool, copy=False)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    total = np.count_nonzero(prediction) + np.count_nonzero(reference)
    if total == 0:
        return 1.0
    return 2.0 * np.count_nonzero(prediction & reference) / total


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic with average ranks for ties:
    the probability that a random positive scores higher than a random negative, ties counting
    one half. NaN when only one class is present."""
    scores, labels = _scores_and_labels(scores, labels)
    num_positive = int(np.count_nonzero(labels))
    num_negative = labels.size - num_positive
    if num_positive == 0 or num_negative == 0:
        return float("nan")
    order = np.argsort(scores)  # the order within ties does not matter: ties are summed per group
    sorted_scores = scores[order]
    group_starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    group_ends = np.r_[group_starts[1:], scores.size]  # exclusive
    mean_rank = (group_starts + 1 + group_ends) / 2.0  # 1-based ranks start+1 .. end
    positives_per_group = np.add.reduceat(labels[order].astype(np.int64), group_starts)
    rank_sum = float(np.dot(mean_rank, positives_per_group))
    u_statistic = rank_sum - num_positive * (num_positive + 1) / 2.0
    return u_statistic / (num_positive * num_negative)


def average_precision(scores, labels) -> float:
    """Step-wise average precision, sum over thresholds of (R_k - R_{k-1}) P_k, exactly as
    sklearn.metrics.average_precision_score defines it: every distinct score is one threshold,
    so tied scores enter and leave together. NaN without positives."""
    scores, labels = _scores_and_labels(scores, labels)
    num_positive = int(np.count_nonzero(labels))
    if num_positive == 0:
        return float("nan")
    order = np.argsort(scores)[::-1]  # within ties any order: only a group's last position is used
    sorted_scores = scores[order]
    last_of_group = np.r_[np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), scores.size - 1]
    true_positives = np.cumsum(labels[order], dtype=np.int64)[last_of_group]
    precision = true_positives / (last_of_group + 1)
    recall_gain = np.diff(true_positives, prepend=0) / num_positive
    return float(np.dot(recall_gain, precision))


def counts_at_thresholds(scores, labels, thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives at every threshold (a pixel is
    predicted positive when its score is >= the threshold), as int64 arrays shaped like the
    flattened thresholds. Two sorts and two binary searches: O((n + T) log n)."""
    scores, labels = _scores_and_labels(scores, labels)
    thresholds = _thresholds(thresholds)
    positive_scores = np.sort(scores[labels].astype(np.float64))
    negative_scores = np.sort(scores[~labels].astype(np.float64))
    true_positives = positive_scores.size - np.searchsorted(positive_scores, thresholds, side="left")
    false_positives = negative_scores.size - np.searchsorted(negative_scores, thresholds, side="left")
    false_negatives = positive_scores.size - true_positives
    return (true_positives.astype(np.int64), false_positives.astype(np.int64), false_negatives.astype(np.int64))


def dice_at_thresholds(scores, labels, thresholds) -> np.ndarray:
    """Dice 2tp / (2tp + fp + fn) at every threshold; 1.0 where nothing is predicted and
    nothing is anomalous (the convention of ``dice``)."""
    true_positives, false_positives, false_negatives = counts_at_thresholds(scores, labels, thresholds)
    denominator = 2 * true_positives + false_positives + false_negatives
    return np.where(denominator > 0, 2.0 * true_positives / np.maximum(denominator, 1), 1.0)


def pool_values(arrays: list[np.ndarray], max_values: int | None = None) -> np.ndarray:
    """The arrays flattened and laid end to end; when that is more than ``max_values`` values,
    only ``max_values`` of them at evenly spaced positions of the whole. The positions depend on
    the array sizes alone, so pooling scores and labels of the same cases keeps them paired."""
    flat = [np.ravel(a) for a in arrays]
    if not flat:
        return np.empty(0)
    total = sum(a.size for a in flat)
    if max_values is None or total <= max_values:
        return np.concatenate(flat)
    positions = (np.arange(max_values, dtype=np.int64) * total) // max_values
    offsets = np.cumsum([0] + [a.size for a in flat])
    bounds = np.searchsorted(positions, offsets)
    return np.concatenate([a[positions[bounds[i]:bounds[i + 1]] - offsets[i]] for i, a in enumerate(flat)])


def candidate_thresholds(score_arrays: list[np.ndarray], max_candidates: int = 1024) -> np.ndarray:
    """Sorted unique cut points for a threshold search over the pooled scores: every distinct
    score when there are fewer than ``max_candidates``, else evenly spaced quantiles (score values
    that occur), plus one value above the maximum that predicts nothing. Beyond
    MAX_POOLED_VALUES pooled scores the quantiles come from an evenly spaced subsample."""
    if max_candidates < 2:
        raise ValueError(f"max_candidates must be at least 2, not {max_candidates}")
    pooled = pool_values(score_arrays, MAX_POOLED_VALUES).astype(np.float64)
    if pooled.size == 0:
        raise ValueError("no scores to take thresholds from")
    if not np.isfinite(pooled).all():
        raise ValueError("scores contain NaN or infinite values")
    pooled.sort()
    distinct = pooled[np.r_[True, pooled[1:] != pooled[:-1]]]
    if distinct.size >= max_candidates:
        quantile_positions = np.round(np.linspace(0, pooled.size - 1, max_candidates - 1)).astype(np.int64)
        distinct = np.unique(pooled[quantile_positions])
    top = distinct[-1]
    # A margin that float32 resolves too, so the cut still predicts nothing on float32 maps.
    return np.r_[distinct, top + max(abs(top), 1.0) * 2.0 ** -20]


def best_mean_dice(cases: list[tuple[np.ndarray, np.ndarray]],
                   thresholds: np.ndarray | None = None) -> tuple[float, float]:
    """(threshold, mean Dice) for the one threshold that maximises the mean over cases of each
    case's Dice (subject-wise, not pooled). ``cases`` holds (scores, labels) per case;
    ``thresholds`` default to candidate_thresholds of all the cases' scores. On ties the lowest
    threshold wins."""
    if not cases:
        raise ValueError("no cases to choose a threshold on")
    refine = thresholds is None
    if thresholds is None:
        thresholds = candidate_thresholds([scores for scores, _ in cases])
    thresholds = _thresholds(thresholds)
    if thresholds.size == 0:
        raise ValueError("no thresholds to choose from")
    threshold, mean_dice, best = _best_of(cases, thresholds)
    if refine and thresholds.size > 2:
        # The quantile candidates may step over the best cut: search every distinct score between
        # the best candidate's neighbours too (exact whenever that stretch holds few enough values).
        lo, hi = thresholds[max(best - 1, 0)], thresholds[min(best + 1, thresholds.size - 1)]
        inside = [scores[(scores > lo) & (scores < hi)] for scores, _ in cases]
        if sum(a.size for a in inside):
            fine, fine_dice, _ = _best_of(cases, candidate_thresholds(inside)[:-1])
            if fine_dice > mean_dice:
                threshold, mean_dice = fine, fine_dice
    return threshold, mean_dice


def _best_of(cases: list[tuple[np.ndarray, np.ndarray]], thresholds: np.ndarray) -> tuple[float, float, int]:
    dice_sum = np.zeros(thresholds.size)
    for scores, labels in cases:
        dice_sum += dice_at_thresholds(scores, labels, thresholds)
    mean_dice = dice_sum / len(cases)
    best = int(np.argmax(mean_dice))
    return float(thresholds[best]), float(mean_dice[best]), best


def image_level_metrics(scores, labels, decisions) -> dict:
    """Detection metrics of image-level scores (for AUROC and AP) and bool decisions (for the
    confusion counts and the ratios taken from them).

    A ratio whose denominator is zero is 0.0, as scikit-learn's default ``zero_division``
    gives: precision without any positive decision, recall without abnormal images,
    specificity without normal images, F1 when there is neither. AUROC is NaN when only one
    class is present, average precision NaN without abnormal images.
    """
    scores, labels = _scores_and_labels(scores, labels)
    decisions = np.ravel(np.asarray(decisions)).astype(bool, copy=False)
    if decisions.size != labels.size:
        raise ValueError(f"{decisions.size} decisions but {labels.size} labels")
    if labels.size == 0:
        raise ValueError("no images to evaluate")
    tp = int(np.count_nonzero(decisions & labels))
    fp = int(np.count_nonzero(decisions & ~labels))
    fn = int(np.count_nonzero(~decisions & labels))
    tn = labels.size - tp - fp - fn
    return {"auroc": roc_auc(scores, labels), "average_precision": average_precision(scores, labels),
            "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "accuracy": _ratio(tp + tn, labels.size),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn, "num_images": int(labels.size), "num_abnormal": tp + fn}


def mean_std(values) -> dict:
    """{"mean", "std", "n"} of the values that are not NaN (None counts as NaN); std is the
    population standard deviation (ddof=0); mean and std are NaN when no value is left."""
    values = np.ravel(np.asarray(values, dtype=np.float64))
    kept = values[~np.isnan(values)]
    if kept.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(kept.mean()), "std": float(kept.std()), "n": int(kept.size)}


def undefined_to_none(value):
    """A result with every undefined metric (NaN, e.g. AUROC of a one-class case) as None, since
    JSON (and save_json) has no NaN; dicts, lists and tuples are walked."""
    if isinstance(value, dict):
        return {k: undefined_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [undefined_to_none(v) for v in value]
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value
