"""One scoring function for every place that scores: a fold's validation cases after training, the
evaluation of a prediction folder, find_best_configuration and the benchmarks.

Each case arrives as a ``CaseOutcome``: its reference (mask and/or image label), what was predicted
(masks, the map, the image score) and the region the map counts in, in whatever space the caller
works (preprocessed slices, or the voxels of the raw file). ``score_cases`` returns the summary:

* pixel level, over the cases whose reference mask holds anomalies (subject-wise, as the papers'
  tables: Dice is undefined without anomaly, and one perfect empty prediction would count 1):
  Dice with and without post-processing; with maps, AUROC and average precision per case and
  pooled inside the region, and the best-possible Dice (one threshold chosen on these very labels:
  an upper bound, never used to predict). Cases with an empty reference report what got flagged.
* image level, where cases have labels and scores: AUROC, AP, and from the decisions precision,
  recall, specificity, F1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from autouad.evaluation.metrics import (MAX_POOLED_VALUES, average_precision, best_mean_dice, dice,
                                        image_level_metrics, mean_std, pool_values, roc_auc)

BEST_POSSIBLE_DICE_NOTE = ("upper bound: the threshold is chosen with the reference labels of the evaluated cases; "
                           "it is never used for predictions")


@dataclass
class CaseOutcome:
    name: str
    reference: np.ndarray | None = None          # anomaly mask (bool); None: no mask for this case
    mask: np.ndarray | None = None               # final predicted mask
    mask_without_postprocessing: np.ndarray | None = None
    map: np.ndarray | None = None                # anomaly map on its own scale
    region: np.ndarray | None = None             # where the map counts (None: everywhere)
    label: int | None = None                     # image-level truth (0 normal, 1 abnormal)
    score: float | None = None                   # image score, higher = more anomalous
    decision: int | None = None                  # image-level decision


def score_cases(outcomes: Iterable[CaseOutcome], anomalous_side: str = "above") -> dict:
    """The summary of the cases (see the module docstring); undefined figures are NaN."""
    sign = -1.0 if anomalous_side == "below" else 1.0
    cases: dict[str, dict] = {}
    scored_pixels: list[tuple[np.ndarray, np.ndarray]] = []   # per abnormal case with a map
    images: list[tuple[int, float, int | None]] = []
    any_unprocessed = any_mask = False
    for o in outcomes:
        entry: dict = {}
        if o.reference is not None and o.mask is not None:
            any_mask = True
            reference = np.asarray(o.reference, bool)
            entry.update(reference_voxels=int(np.count_nonzero(reference)),
                         predicted_voxels=int(np.count_nonzero(o.mask)))
            region_size = int(np.count_nonzero(o.region)) if o.region is not None else int(reference.size)
            # every case gets its Dice (1.0 for an empty prediction of an empty reference); the means
            # below leave out the cases without anomaly, which report the fraction they flagged instead
            entry["dice"] = dice(o.mask, reference)
            if o.mask_without_postprocessing is not None:
                any_unprocessed = True
                entry["dice_without_postprocessing"] = dice(o.mask_without_postprocessing, reference)
            entry.update(auroc=None, average_precision=None)
            if not reference.any():
                entry["flagged_fraction"] = float(entry["predicted_voxels"] / max(region_size, 1))
            else:
                if o.map is not None:
                    inside = np.ones(reference.shape, bool) if o.region is None else np.asarray(o.region, bool)
                    scores = sign * np.asarray(o.map)[inside].astype(np.float64)
                    labels = reference[inside]
                    entry.update(auroc=roc_auc(scores, labels), average_precision=average_precision(scores, labels))
                    scored_pixels.append((scores, labels))
        if o.label is not None and o.score is not None:
            images.append((int(o.label), float(o.score), o.decision))
            entry.update(label=int(o.label), score=float(o.score), decision=o.decision)
        cases[o.name] = entry
    abnormal = [c for c in cases.values() if c.get("reference_voxels", 0) > 0]
    normal = [c for c in cases.values() if c.get("reference_voxels", None) == 0]
    summary = {"num_cases": len(cases), "pixel": None, "image": None, "cases": cases}
    if any_mask:
        pixel = {"num_cases_with_anomaly": len(abnormal),
                 "dice": mean_std([c["dice"] for c in abnormal]),
                 "dice_without_postprocessing": mean_std([c.get("dice_without_postprocessing") for c in abnormal])
                 if any_unprocessed else None,
                 "auroc": None, "average_precision": None, "pooled_auroc": None, "pooled_average_precision": None,
                 "best_possible_dice": None,
                 "cases_without_anomaly": {"n": len(normal),
                                           "with_flagged_voxels": sum(c["predicted_voxels"] > 0 for c in normal),
                                           "flagged_fraction": mean_std([c["flagged_fraction"] for c in normal])}}
        if scored_pixels:
            pixel["auroc"] = mean_std([c.get("auroc") for c in abnormal])
            pixel["average_precision"] = mean_std([c.get("average_precision") for c in abnormal])
            pooled_scores = pool_values([s for s, _ in scored_pixels], MAX_POOLED_VALUES)
            pooled_labels = pool_values([lab for _, lab in scored_pixels], MAX_POOLED_VALUES)
            pixel["pooled_auroc"] = roc_auc(pooled_scores, pooled_labels)
            pixel["pooled_average_precision"] = average_precision(pooled_scores, pooled_labels)
            threshold, mean_dice = best_mean_dice(scored_pixels)
            # on the map's own scale: with "below", a pixel is anomalous at or below it
            pixel["best_possible_dice"] = {"threshold": sign * threshold, "anomalous_side": anomalous_side,
                                           "mean_dice": mean_dice, "note": BEST_POSSIBLE_DICE_NOTE}
        summary["pixel"] = pixel
    if images and all(d is not None for _, _, d in images):
        labels, scores, decisions = zip(*images)
        summary["image"] = image_level_metrics(np.array(scores), np.array(labels, bool),
                                               np.array(decisions, bool))
    return summary
