"""Configurations: a candidate's map (or image score), a threshold source and a post-processing,
fitted on some folds' validation cases and scored on others.

Threshold sources (pixel level), each fitted only on the *fitting* cases and applied to the scored
cases, whose labels are never read:

* ``calibrated``: one cut for all cases, the one that maximises the fitting cases' mean Dice (the
  cut autouad_train calibrates, here from other folds).
* ``case_z``: per case, median + z x MAD of the case's own map inside its region; z is the value of
  a grid that maximises the fitting cases' mean Dice. The cut moves with each case's own
  histogram, so no case's intensity scale matters (what makes FLAIR > z a strong segmenter).
* ``case_histogram``: per case, the valley before the rightmost separated peak of the case's own
  map histogram (ASC-Net's rule read off each segmented case, as its paper does): label-free,
  nothing fitted; only for maps of a fixed range. A case whose histogram has one peak falls back to
  median + 3 MAD.
* ``normal_percentile``: the 99th percentile of the map over the fitting cases' normal reference
  voxels (label-free where the normal reference is given as normal cases).

Post-processing: none, or opening then closing with a square kernel, slice by slice inside the
region, at a size in the raw voxels that the caller derives from the plans (see find_best).

Image level: a score per image; the decision cut is the 95th percentile of the fitting folds'
normal images' scores (label-free). Ensembles average z-scores: per case of the members' maps
(pixel level), or of the members' image scores against the fitting folds' normal images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autouad.calibration.histogram_peaks import DEFAULT_BINS
from autouad.calibration.thresholds import CalibrationError, histogram_peak_threshold
from autouad.evaluation.metrics import best_mean_dice, dice, roc_auc
from autouad.postprocessing.morphology import postprocess_cropped
from autouad.selection.evidence import CaseEvidence, robust_z

THRESHOLD_SOURCES = {
    "calibrated": "one cut, the best mean Dice of the fitting folds' cases",
    "case_z": "per case, median + z MAD of the case's own map (z fitted on the fitting folds)",
    "case_histogram": "per case, the valley before the rightmost peak of the case's own map histogram (label-free)",
    "normal_percentile": "the 99th percentile of the map on the fitting folds' normal reference voxels",
}
Z_GRID = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0)
NORMAL_PERCENTILE = 99.0
IMAGE_PERCENTILE = 95.0
HISTOGRAM_FALLBACK_Z = 3.0


def case_statistics(values: np.ndarray) -> tuple[float, float]:
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median))) * 1.4826
    return median, mad if mad > 0 else (float(np.std(values)) or 1.0)


@dataclass(frozen=True)
class PixelConfiguration:
    candidate: str
    threshold: str
    kernel: int                                  # 0: no post-processing; else the square kernel's side

    @property
    def name(self) -> str:
        # no "|": the name goes into Markdown tables
        return f"{self.candidate} with {self.threshold} cut, " + (f"open/close {self.kernel}" if self.kernel
                                                                   else "no post-processing")


class PixelScorer:
    """Fits and scores pixel configurations on case evidence, caching what repeats."""

    def __init__(self, value_ranges: dict[str, tuple[float, float] | None]):
        self.value_ranges = value_ranges
        self._stats: dict[tuple[str, str], tuple[float, float]] = {}

    def stats(self, case: CaseEvidence, candidate: str) -> tuple[float, float]:
        key = (case.name, candidate)
        if key not in self._stats:
            self._stats[key] = case_statistics(case.maps[candidate])
        return self._stats[key]

    # ---- thresholds --------------------------------------------------------------------------------
    def fit(self, config: PixelConfiguration, fitting: list[CaseEvidence]) -> dict:
        """The threshold's parameters from the fitting cases (their labels may be read)."""
        name = config.candidate
        abnormal = [c for c in fitting if c.has_anomaly]
        if config.threshold == "calibrated":
            if not abnormal:
                raise CalibrationError("no fitting case has anomalies to calibrate on")
            value, _ = best_mean_dice([(c.maps[name], c.truth) for c in abnormal])
            return {"value": float(value)}
        if config.threshold == "case_z":
            if not abnormal:
                raise CalibrationError("no fitting case has anomalies to choose z on")
            scores = []
            for z in Z_GRID:
                scores.append(np.mean([dice(c.maps[name] >= self.case_cut(c, name, "case_z", {"z": z}), c.truth)
                                       for c in abnormal]))
            return {"z": float(Z_GRID[int(np.argmax(scores))])}
        if config.threshold == "normal_percentile":
            normal = [c.maps[name][c.normal_values_mask] for c in fitting]
            normal = np.concatenate(normal) if normal else np.zeros(0)
            if normal.size == 0:
                raise CalibrationError("the fitting cases have no normal reference voxels")
            return {"value": float(np.percentile(normal, NORMAL_PERCENTILE)), "percentile": NORMAL_PERCENTILE}
        if config.threshold == "case_histogram":
            if self.value_ranges.get(name) is None:
                raise CalibrationError(f"{name}'s map has no fixed range for a histogram")
            return {}
        raise ValueError(f"unknown threshold source {config.threshold!r}")

    def case_cut(self, case: CaseEvidence, candidate: str, source: str, params: dict) -> float:
        if source in ("calibrated", "normal_percentile"):
            return params["value"]
        median, mad = self.stats(case, candidate)
        if source == "case_z":
            return median + params["z"] * mad
        values = case.maps[candidate]
        lo, hi = self.value_ranges[candidate]
        counts = np.histogram(values, DEFAULT_BINS, (lo, hi))[0]
        try:
            return histogram_peak_threshold(counts, (lo, hi), "rightmost", "valley")[0]
        except CalibrationError:
            return median + HISTOGRAM_FALLBACK_Z * mad

    # ---- masks and scores ------------------------------------------------------------------------------
    def masks(self, config: PixelConfiguration, params: dict, case: CaseEvidence) -> np.ndarray:
        """The configuration's final mask of a case (canonical bool)."""
        flagged = case.maps[config.candidate] >= self.case_cut(case, config.candidate, config.threshold, params)
        mask = np.zeros(case.region.shape, bool)
        mask[case.region] = flagged
        if config.kernel:
            mask = postprocess_cropped(mask, case.region, config.kernel)
        return mask

    def score(self, config: PixelConfiguration, params: dict, cases: list[CaseEvidence]) -> dict[str, dict]:
        """Per scored case: Dice (cases with anomalies) or the flagged fraction (cases without)."""
        out = {}
        for case in cases:
            if case.reference is None:
                continue
            mask = self.masks(config, params, case)
            if case.has_anomaly:
                out[case.name] = {"dice": dice(mask, case.reference)}
            else:
                out[case.name] = {"flagged_fraction": float(mask.sum() / max(case.region.sum(), 1))}
        return out


def ensemble_values(cases: list[CaseEvidence], members: tuple[str, ...], name: str) -> None:
    """Per case, the mean of the members' robust z-scored maps, stored as candidate ``name``."""
    for case in cases:
        case.maps[name] = np.mean([robust_z(case.maps[m]) for m in members], axis=0).astype(np.float32)


def pixel_auroc(case: CaseEvidence, candidate: str) -> float:
    return roc_auc(case.maps[candidate], case.truth) if case.has_anomaly else float("nan")


# ---- image level -------------------------------------------------------------------------------------------
def image_threshold(fitting: list[CaseEvidence], candidate: str) -> float:
    normal = [c.scores[candidate] for c in fitting if c.label == 0]
    if not normal:
        raise CalibrationError("the fitting folds have no normal images")
    return float(np.percentile(normal, IMAGE_PERCENTILE))


def image_ensemble(cases: list[CaseEvidence], fitting: list[CaseEvidence], members: tuple[str, ...],
                   name: str) -> dict:
    """The members' image scores as z-scores against the fitting folds' normal images, averaged;
    returns the normalisation ({member: (mean, std)}) so that prediction can repeat it."""
    norms = {}
    for member in members:
        normal = np.array([c.scores[member] for c in fitting if c.label == 0], np.float64)
        mean, std = (float(normal.mean()), float(normal.std()) or 1.0) if normal.size else (0.0, 1.0)
        norms[member] = (mean, std)
    for case in cases:
        case.scores[name] = float(np.mean([(case.scores[m] - norms[m][0]) / norms[m][1] for m in members]))
    return norms


def bootstrap_interval(values: np.ndarray, statistic, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 95 % percentile interval of ``statistic`` over resamples of the rows of ``values``."""
    values = np.asarray(values)
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(resamples):
        sample = values[rng.integers(0, len(values), len(values))]
        value = statistic(sample)
        if np.isfinite(value):
            stats.append(value)
    if not stats:
        return float("nan"), float("nan")
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))
