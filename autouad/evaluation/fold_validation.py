"""Scoring a trained fold on its own validation cases, right after training and calibration.

This runs in the preprocessed slice space, where the validation maps were saved: it tells a user
how a fold did without predicting any file. ``autouad_predict`` + ``autouad_evaluate`` give the
same figures in the raw files' geometry, which is what a paper's table should report.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from autouad.calibration.thresholds import ValidationCase, anomalous, image_scores, side_sign
from autouad.evaluation.metrics import (average_precision, best_mean_dice, dice, image_level_metrics, mean_std,
                                        roc_auc, undefined_to_none)
from autouad.postprocessing.morphology import postprocess_slices
from autouad.utils.files import save_json

SUMMARY_FILE = "summary.json"


def case_label(case: ValidationCase) -> int | None:
    """Image-level truth of a validation case: its label, else 0 for a normal case."""
    if case.meta.get("label") is not None:
        return int(case.meta["label"])
    return 0 if case.meta.get("role") == "normal" else None


def score_fold(cases: list[ValidationCase], threshold: dict, postprocessing: dict | None,
               output: Path | None = None) -> dict:
    """Dice with and without post-processing, AUROC, AP and best-possible Dice of the fold's
    validation cases whose masks hold anomalies (subject-wise, as the papers); the flagged fraction
    of cases whose masks are empty; image-level metrics for 2D datasets."""
    side, value = threshold["anomalous_side"], threshold["value"]
    sign = side_sign(side)
    pp = postprocessing if postprocessing and postprocessing.get("enabled") else None
    per_case, pairs, normal_cases = {}, [], {}
    for c in cases:
        if c.mask is None:
            continue
        raw = anomalous(c.maps, value, side) & c.region
        final = postprocess_slices(raw, c.region, int(pp["kernel_size"]), pp["operations"]) if pp else raw
        if not c.mask.any():
            # Dice is undefined without anomaly; what matters is how much of a normal case gets flagged
            normal_cases[c.name] = {"flagged_fraction": float(final.sum() / max(c.region.sum(), 1))}
            continue
        entry = {"dice": dice(final, c.mask), "dice_without_postprocessing": dice(raw, c.mask),
                 "reference_pixels": int(c.mask.sum())}
        scores, labels = sign * c.maps[c.region].astype(np.float64), c.mask[c.region]
        entry.update(auroc=roc_auc(scores, labels), average_precision=average_precision(scores, labels))
        per_case[c.name] = entry
        pairs.append((scores, labels))
    summary = {"space": "preprocessed slices", "threshold": value, "anomalous_side": side,
               "strategy": threshold["strategy"], "postprocessing": pp, "num_cases": len(per_case),
               "pixel": None, "image": None, "cases": per_case,
               "normal_cases": normal_cases}
    if per_case:
        rows = list(per_case.values())
        best = best_mean_dice(pairs)
        summary["pixel"] = {
            key: mean_std([r[key] for r in rows])
            for key in ("dice", "dice_without_postprocessing", "auroc", "average_precision")}
        summary["pixel"]["best_possible_dice"] = None if best is None else {
            "threshold": float(sign * best[0]), "mean_dice": float(best[1]),
            "note": "upper bound: the threshold chosen on these cases' masks; never used to predict"}
    image_threshold = threshold.get("image")
    labelled = [(c, case_label(c)) for c in cases if c.is_2d and case_label(c) is not None]
    if image_threshold and labelled and len({lab for _, lab in labelled}) > 1:
        scores = np.array([image_scores(c.maps, c.region, side).mean() for c, _ in labelled])
        labels = np.array([lab for _, lab in labelled], bool)
        summary["image"] = image_level_metrics(scores, labels, scores >= image_threshold["value"])
    if output is not None:
        save_json(undefined_to_none(summary), output)
    return summary

