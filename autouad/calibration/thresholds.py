"""Threshold calibration: from a fold's validation maps to the cut that turns maps into masks.

Three strategies, chosen by the planner and stored in the plans (``plans["threshold"]``):

* ``histogram_peak`` (ASC-Net): the value at the rightmost peak of the I_ro histogram for
  anomalies brighter than their surroundings, the leftmost for darker ones (paper 001: "the
  intensity value at the rightmost peak of the histogram is a desired threshold"; 254 / 242 / 170 /
  220 on their 0-255 scale). The side comes from the fingerprint's measured polarity. By default
  the cut is the valley before that peak (see histogram_peak_threshold: with the peak at the end of
  the range, as in the papers, both keep the peak's whole cluster). The papers
  use one threshold for a whole dataset; autouad finds it on the fold's validation slices, so no
  test image is looked at. With fewer than two separated peaks there is nothing to read, and the
  label-free percentile below is used instead (the reason is recorded).
* ``validation_calibrated``: the threshold that maximises the mean subject-wise Dice on the fold's
  validation cases, the protocol of the comparative study ASC-Net cites (Baur et al.). Needs
  validation masks; falls back to the label-free percentile without them.
* ``normal_percentile``: label-free; the given percentile of the anomaly scores of the pixels of
  normal validation slices (the fold's held-out normal reference), i.e. a chosen false-positive
  rate on normal tissue.

Every threshold is found on validation data of the fold that trained the model, never on test
labels (the HealthyGAN reference code picks its cutoff on the test labels; autouad never does).

A map's *anomalous side* says whether high values (``above``) or low values (``below``) are
anomalous; only ASC-Net's I_ro with dark anomalies is ``below``. Internally every strategy works on
signed scores (``map`` or ``-map``), where higher is always more anomalous.

2D datasets get an image-level threshold too: images are scored by the mean of their map inside
the region (HealthyGAN's choice: the mean was more robust than the max), and the cut is a
percentile of the normal validation images' scores (the plan's percentile for image-level tasks,
95 otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autouad.calibration.histogram_peaks import DEFAULT_BINS, separated_peaks, valley_between
from autouad.utils.files import load_json, load_npy

THRESHOLD_FILE = "threshold.json"
STRATEGIES = ("histogram_peak", "validation_calibrated", "normal_percentile")
FALLBACK_PERCENTILE = 99.0
IMAGE_PERCENTILE = 95.0


class CalibrationError(Exception):
    """A threshold cannot be calibrated from what the fold has; the message says why."""


def side_sign(side: str) -> float:
    if side not in ("above", "below"):
        raise ValueError(f"anomalous side must be 'above' or 'below', not {side!r}")
    return 1.0 if side == "above" else -1.0


def anomalous(maps: np.ndarray, threshold: float, side: str) -> np.ndarray:
    """Binary anomaly masks: map >= threshold (side above) or map <= threshold (side below)."""
    return maps >= threshold if side == "above" else maps <= threshold


# ---- the three strategies, on plain arrays ---------------------------------------------------------
def histogram_peak_threshold(counts: np.ndarray, value_range: tuple[float, float], peak: str,
                             cut: str = "valley") -> tuple[float, list[float]]:
    """(threshold, all separated peak values) from a histogram of the map over ``value_range``.

    ``cut="peak"`` is the papers' literal rule, the value at the rightmost / leftmost peak.
    ``cut="valley"`` cuts at the valley between that peak and its neighbour, so the peak's whole
    cluster is kept; this is what the papers' cut did, as their peak sat at the end of the range
    (254 of 255), and it differs only where the peak lies inside the range. CalibrationError with
    fewer than two separated peaks (one peak is the normal tissue alone)."""
    if peak not in ("rightmost", "leftmost"):
        raise ValueError(f"peak must be 'rightmost' or 'leftmost', not {peak!r}")
    if cut not in ("peak", "valley"):
        raise ValueError(f"cut must be 'peak' or 'valley', not {cut!r}")
    counts = np.asarray(counts)
    bins = separated_peaks(counts)
    lo, hi = value_range
    width = (hi - lo) / len(counts)
    peaks = [float(lo + (b + 0.5) * width) for b in bins]
    if len(bins) < 2:
        raise CalibrationError(f"the validation histogram has {len(bins)} separated peak(s); the histogram-peak "
                               f"threshold needs at least two (train longer until the peaks separate)")
    if cut == "peak":
        return peaks[-1] if peak == "rightmost" else peaks[0], peaks
    if peak == "rightmost":  # anomalous at or above: the cut is the lower edge of the valley bin's right neighbour
        return float(lo + (valley_between(counts, bins[-2], bins[-1]) + 1) * width), peaks
    return float(lo + valley_between(counts, bins[0], bins[1]) * width), peaks


def validation_calibrated_threshold(cases: list[tuple[np.ndarray, np.ndarray]], side: str) -> tuple[float, float]:
    """(threshold in map units, the mean validation Dice it reaches); ``cases`` are per case the map
    values inside the region and the reference labels of the same pixels."""
    from autouad.evaluation.metrics import best_mean_dice

    cases = [(m, lab) for m, lab in cases if np.asarray(lab).any()]
    if not cases:
        raise CalibrationError("no validation case has anomaly pixels to calibrate a Dice-optimal threshold on")
    sign = side_sign(side)
    threshold, dice = best_mean_dice([(sign * np.asarray(m, np.float64), np.asarray(lab, bool)) for m, lab in cases])
    return float(sign * threshold), float(dice)


def normal_percentile_threshold(normal_values: np.ndarray, percentile: float, side: str) -> float:
    """The ``percentile`` of the signed scores of normal pixels (or images), in map units: about
    (100 - percentile) % of normal values fall on the anomalous side."""
    values = np.asarray(normal_values, np.float64).ravel()
    if values.size == 0:
        raise CalibrationError("no normal validation slices to take a label-free percentile of")
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must lie between 0 and 100, not {percentile}")
    sign = side_sign(side)
    return float(sign * np.percentile(sign * values, percentile))


def image_scores(maps: np.ndarray, region: np.ndarray, side: str) -> np.ndarray:
    """(S, H, W) maps -> (S,) signed image scores: the mean signed map inside each slice's region."""
    signed = side_sign(side) * maps.astype(np.float64)
    area = region.sum(axis=(1, 2))
    return np.where(area > 0, (signed * region).sum(axis=(1, 2)) / np.maximum(area, 1), 0.0)


# ---- a fold's validation data ------------------------------------------------------------------------
def slice_region(data: np.ndarray, roi: np.ndarray | None, meta: dict, modality: str) -> np.ndarray:
    """Where a preprocessed slice holds the image: the ROI when the dataset has one; else the
    non-padded area, and for MRI / CT only its non-zero pixels (preprocessing zeroes everything
    outside the foreground; an X-ray's foreground is the whole image)."""
    if roi is not None:
        return np.asarray(roi, bool)
    s, _, h, w = data.shape
    region = np.zeros((s, h, w), bool)
    (top, _), (left, _) = meta["pad"]
    rows, cols = meta["resampled_inplane_shape"]
    region[:, max(top, 0):max(top, 0) + min(rows, h), max(left, 0):max(left, 0) + min(cols, w)] = True
    if modality != "X-ray":
        region &= (np.asarray(data) != 0).any(axis=1)
    return region


@dataclass
class ValidationCase:
    """One validation case in the preprocessed slice space: its map and what calibration needs."""
    name: str
    meta: dict
    maps: np.ndarray             # (S, H, W) float32
    region: np.ndarray           # (S, H, W) bool
    mask: np.ndarray | None      # (S, H, W) bool
    is_reference: np.ndarray     # (S,) bool: slices of the normal reference

    @property
    def is_2d(self) -> bool:
        return bool(self.meta["orientation"]["is_2d"])


def load_validation_cases(fold_folder: Path, data_folder: Path, modality: str) -> list[ValidationCase]:
    index = load_json(fold_folder / "validation" / "maps.json")
    cases = []
    for name in index["cases"]:
        meta = load_json(data_folder / f"{name}.json")
        data = load_npy(data_folder / f"{name}.npy")
        roi = data_folder / f"{name}_roi.npy"
        mask = data_folder / f"{name}_mask.npy"
        cases.append(ValidationCase(
            name, meta, np.asarray(load_npy(fold_folder / "validation" / f"{name}.npy")),
            slice_region(data, load_npy(roi) if roi.is_file() else None, meta, modality),
            np.asarray(load_npy(mask), bool) if mask.is_file() else None,
            np.asarray(meta["slices"]["is_reference"], bool)))
    return cases


def normal_pixel_values(cases: list[ValidationCase]) -> np.ndarray:
    return np.concatenate([c.maps[c.is_reference][c.region[c.is_reference]] for c in cases] or [np.zeros(0)])


# ---- calibration of a fold -------------------------------------------------------------------------
def calibrate(strategy: dict, cases: list[ValidationCase], histogram_range: tuple[float, float] | None,
              image_percentile: float | None = None) -> dict:
    """The content of threshold.json for ``strategy`` (the plans' ``threshold`` entry) from a fold's
    validation cases."""
    name = strategy["strategy"]
    if name not in STRATEGIES:
        raise CalibrationError(f"unknown threshold strategy {name!r}; known: {', '.join(STRATEGIES)}")
    side = "below" if strategy.get("peak") == "leftmost" else "above"
    record = {"requested": dict(strategy), "anomalous_side": side, "space": "preprocessed slices",
              "cases": [c.name for c in cases]}
    fallback_reason = None
    if name == "histogram_peak":
        if histogram_range is None:
            raise CalibrationError("the histogram-peak threshold needs a map with a fixed value range (ASC-Net's I_ro)")
        counts = np.zeros(DEFAULT_BINS, np.int64)
        for c in cases:
            counts += np.histogram(c.maps[c.region], DEFAULT_BINS, histogram_range)[0]
        try:
            cut = strategy.get("cut", "peak")
            value, peaks = histogram_peak_threshold(counts, histogram_range, strategy["peak"], cut)
            record.update(strategy="histogram_peak", value=value, peaks=peaks, cut=cut,
                          how=(f"{'the valley before the ' if cut == 'valley' else ''}{strategy['peak']} of the "
                               f"separated peaks of the validation histogram inside the region"))
        except CalibrationError as e:
            fallback_reason = str(e)
    elif name == "validation_calibrated":
        masked = [c for c in cases if c.mask is not None]
        try:
            value, dice = validation_calibrated_threshold([(c.maps[c.region], c.mask[c.region]) for c in masked], side)
            record.update(strategy="validation_calibrated", value=value, validation_dice=dice,
                          how="maximises the mean subject-wise Dice on the validation cases (before post-processing)")
        except CalibrationError as e:
            fallback_reason = str(e)
    if name == "normal_percentile" or fallback_reason:
        percentile = float(strategy.get("percentile", FALLBACK_PERCENTILE))
        normal = normal_pixel_values(cases)
        if normal.size == 0:
            raise CalibrationError((fallback_reason + "; and " if fallback_reason else "")
                                   + "the fold's validation cases have no normal reference slices for a label-free "
                                   "percentile")
        record.update(strategy="normal_percentile", percentile=percentile,
                      value=normal_percentile_threshold(normal, percentile, side), normal_pixels=int(normal.size),
                      how=f"the {percentile:g}th percentile of the map on normal validation slices (label-free)")
        if fallback_reason:
            record["fallback_reason"] = fallback_reason
    if cases and all(c.is_2d for c in cases):
        record["image"] = calibrate_image_threshold(cases, side, image_percentile or IMAGE_PERCENTILE)
    return record


def calibrate_image_threshold(cases: list[ValidationCase], side: str, percentile: float) -> dict:
    """Image-level cut for 2D datasets: a percentile of the normal validation images' scores."""
    normal = [image_scores(c.maps, c.region, side)[c.is_reference] for c in cases]
    normal = np.concatenate(normal) if normal else np.zeros(0)
    if normal.size == 0:
        raise CalibrationError("no normal validation images to calibrate the image-level threshold on")
    return {"strategy": "normal_percentile", "percentile": percentile, "score": "mean of the map inside the region",
            "value": float(np.percentile(normal, percentile)), "normal_images": int(normal.size),
            "how": f"the {percentile:g}th percentile of the scores of normal validation images (label-free)"}


def calibrate_fold(fold_folder: Path, plans: dict, cases: list[ValidationCase],
                   histogram_range: tuple[float, float] | None) -> dict:
    """Calibrate a trained fold on its validation cases (load_validation_cases) and write
    ``threshold.json`` into the fold's folder."""
    from autouad.utils.files import save_json

    strategy = plans["threshold"]
    image_percentile = strategy.get("percentile") if plans.get("task") == "image" else None
    record = calibrate(strategy, cases, histogram_range, image_percentile)
    record.update(fold=int(fold_folder.name.split("_")[-1]), plans_name=plans["plans_name"])
    save_json(record, fold_folder / THRESHOLD_FILE)
    return record
