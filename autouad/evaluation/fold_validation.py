"""Scoring a trained fold on its own validation cases, right after training and calibration.

This runs in the preprocessed slice space, where the validation maps were saved: it tells a user
how a fold did without predicting any file. ``autouad_predict`` + ``autouad_evaluate`` give the
same figures in the raw files' geometry, which is what a paper's table should report. Both score
through autouad.evaluation.scoring.score_cases.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from autouad.calibration.thresholds import CaseMaps, Threshold, anomalous, oriented_image_score
from autouad.evaluation.metrics import undefined_to_none
from autouad.evaluation.scoring import CaseOutcome, score_cases
from autouad.postprocessing.morphology import postprocess_slices
from autouad.utils.files import save_json

SUMMARY_FILE = "summary.json"


def case_outcome(case, maps: np.ndarray, threshold: Threshold, postprocessing) -> CaseOutcome:
    """What the fold's model and cut make of one validation case, in the preprocessed slice space."""
    region = case.region
    raw = anomalous(maps, threshold.value, threshold.anomalous_side) & region
    pp = postprocessing if postprocessing is not None and postprocessing.enabled else None
    final = postprocess_slices(raw, region, int(pp.kernel_size), pp.operations) if pp else raw
    outcome = CaseOutcome(case.name, reference=case.anomaly_mask, mask=final,
                          mask_without_postprocessing=raw if pp else None, map=maps, region=region)
    if threshold.image is not None and case.is_2d and case.label is not None:
        how = threshold.image.get("image_score", "mean")
        score = oriented_image_score(maps, region, how, threshold.image_side, threshold.image_direction)
        outcome.label, outcome.score, outcome.decision = case.label, score, int(score >= threshold.image_value)
    return outcome


def score_fold(cases: list[CaseMaps], threshold: Threshold, postprocessing, output: Path | None = None) -> dict:
    """The summary of score_cases for a fold's validation cases, with the cut that scored them."""
    summary = score_cases((case_outcome(c, m, threshold, postprocessing) for c, m in cases),
                          threshold.anomalous_side)
    summary.update(space="preprocessed slices", threshold=threshold.value, anomalous_side=threshold.anomalous_side,
                   strategy=threshold.strategy,
                   postprocessing=None if postprocessing is None or not postprocessing.enabled
                   else {"kernel_size": postprocessing.kernel_size, "operations": postprocessing.operations})
    if output is not None:
        save_json(undefined_to_none(summary), output)
    return summary
