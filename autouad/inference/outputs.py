"""The layout of a prediction folder: autouad_predict writes it, autouad_evaluate reads it.

    <case><ending>                          uint8 masks (0/1), post-processed when the plan says so
    without_postprocessing/<case><ending>   the masks before post-processing (when it ran)
    maps/<case><ending>                     float32 anomaly maps (--save-maps)
    rois/<case><ending>                     the region the masks are restricted to (--save-maps)
    scores.csv                              2D datasets: case, score, threshold, decision
    predictions.json                        what ran: model, folds, thresholds, per-case status
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autouad.utils.files import atomic_output
from autouad.utils.images import IMAGE_2D_ENDINGS, Geometry

PREDICTIONS_FILE = "predictions.json"
SCORES_FILE = "scores.csv"
SCORES_HEADER = ("case", "score", "threshold", "decision")
WITHOUT_POSTPROCESSING_FOLDER = "without_postprocessing"
MAPS_FOLDER = "maps"
ROIS_FOLDER = "rois"


def write_scores(path: Path, cases: dict[str, dict], threshold: float) -> None:
    """scores.csv from {case: {"score", "decision"}}, sorted by case, written atomically."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(SCORES_HEADER)
    for case, r in sorted(cases.items()):
        writer.writerow([case, f"{r['score']:.6g}", f"{threshold:.6g}", r["decision"]])
    with atomic_output(path) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")


def output_endings(input_ending: str) -> tuple[str, str]:
    """(mask ending, map ending) for an input file type."""
    if input_ending in IMAGE_2D_ENDINGS:
        return ".png", ".tif"
    if input_ending == ".mhd":
        return ".mha", ".mha"
    return input_ending, input_ending


def write_image(image: sitk.Image, path: Path, geometry: Geometry | None = None) -> None:
    """A SimpleITK image (or an array given its ``geometry``), written atomically (the temporary
    file keeps the ending, by which SimpleITK picks the format)."""
    if not isinstance(image, sitk.Image):
        image = geometry.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(image)))
    ending = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    with atomic_output(path, suffix=".tmp" + ending) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=ending in (".nii.gz", ".mha", ".nrrd"))
