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

The strategies live in one registry (``STRATEGIES``, filled by ``@threshold_strategy``): each is a
function from a fold's validation cases and their maps to a ``Threshold``; a new one is a decorated
function, and the planner and the plans' checks pick it up by its name.

Every threshold is found on validation data of the fold that trained the model, never on test
labels (the HealthyGAN reference code picks its cutoff on the test labels; autouad never does).

A map's *anomalous side* says whether high values (``above``) or low values (``below``) are
anomalous; only ASC-Net's I_ro with dark anomalies is ``below``. Internally every strategy works on
signed scores (``map`` or ``-map``), where higher is always more anomalous.

2D datasets get an image-level threshold too: images are scored by the method's image score
(autouad.selection.image_scores; the mean of the map for most, DRAEM's paper the max of the
mean-filtered map) and the cut is a percentile of the normal validation images' scores (the plan's
percentile for image-level tasks, 95 otherwise). The cut is computed for every image score; where
the fold's validation images carry labels, each score's AUROC on them is kept beside its cut and
the fold uses the declared score unless another ranks them clearly better (``choose_image_score``).
The plans' ``threshold.image_score`` fixes the score instead. Beside each cut the fold keeps the
median of its normal images' scores, so that prediction can put folds on one scale
(autouad.inference.predictor.FoldImageScore).

A method whose map side is not fixed by its construction (``anomalous_side="polarity"``: ASC-Net's
I_ro, whose intensity clusters can come out in either order) may also have the *image-level*
orientation chosen per fold on its labelled validation images. Every score is measured on the
negated map too (the top 1 % of -map is the darkest 1 % of the map: ``image["side"]``), and each in
both directions (``image["direction"]``, ``lower``: a lower score is more anomalous), since the
clusters are not ordered by abnormality: pneumonia may pull an image's brightest 1 % down as well as
up. Where one of these ranks the images clearly better than the declared orientation (by more than
SWITCH_MARGIN AUROC), the fold uses it. On Kermany two ASC-Net folds of one run ranked pneumonia
above and below normal (validation AUROC 0.72 and 0.21), which the shared orientation turned into a
test AUROC of 0.47 (docs/results.md). The pixel cut keeps the plans' side.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from autouad.calibration.histogram_peaks import DEFAULT_BINS, separated_peaks, valley_between
from autouad.preprocessing.cases import PreprocessedCase, load_preprocessed_case
from autouad.utils.files import load_json, load_npy, save_json

THRESHOLD_FILE = "threshold.json"
FALLBACK_PERCENTILE = 99.0
IMAGE_PERCENTILE = 95.0

# A fold's validation case and its anomaly maps (S, H, W) in the preprocessed slice space.
CaseMaps = tuple[PreprocessedCase, np.ndarray]


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


def direction_sign(direction: str) -> float:
    if direction not in ("higher", "lower"):
        raise ValueError(f"image score direction must be 'higher' or 'lower', not {direction!r}")
    return 1.0 if direction == "higher" else -1.0


def oriented_image_score(maps: np.ndarray, region: np.ndarray, how: str, side: str, direction: str = "higher") -> float:
    """The image score ``how`` of ``maps`` signed by ``side``, negated where ``direction`` is
    ``lower``: higher is more anomalous in that orientation (calibration, a fold's validation
    summary and prediction all score images through this)."""
    from autouad.selection.image_scores import image_score
    return direction_sign(direction) * image_score(side_sign(side) * maps, region, how)


def image_scale_of(entry: dict, direction: str) -> tuple[float, float] | None:
    """(median, cut) of a ``by_image_score`` entry's normal images, in ``direction``: ``lower``
    negates the scores, so the median turns over and the cut is the negated opposite percentile."""
    if direction_sign(direction) > 0:
        return float(entry["normal_median"]), float(entry["value"])
    if "opposite_value" not in entry:
        return None
    return -float(entry["normal_median"]), -float(entry["opposite_value"])


# ---- the calibrated cut as a value ---------------------------------------------------------------------
@dataclass
class Threshold:
    """A calibrated cut: map values at or beyond ``value`` on the ``anomalous_side`` are anomalous.
    ``image`` is the image-level cut of 2D datasets (its ``value`` applies to image scores);
    ``details`` what the strategy found (peaks, validation Dice, percentile, why it fell back)."""
    value: float
    anomalous_side: str
    strategy: str
    how: str = ""
    image: dict | None = None
    details: dict = field(default_factory=dict)

    @property
    def image_value(self) -> float | None:
        return None if self.image is None else float(self.image["value"])

    @property
    def image_side(self) -> str:
        """The side images are scored on: the fold's own choice where it made one, else the map's."""
        return (self.image or {}).get("side") or self.anomalous_side

    @property
    def image_direction(self) -> str:
        """``higher`` (a higher image score is more anomalous, as for every map with a fixed side) or
        ``lower`` (the fold's own choice; module docstring)."""
        return (self.image or {}).get("direction") or "higher"

    def image_cut(self, how: str) -> float | None:
        """The image-level cut for the image score ``how`` on the map's side, higher more anomalous:
        the one calibrated for ``how``, or the fold's own cut where the fold measured only its own
        (before image scores were compared); None otherwise. (``image["value"]`` is the cut of the
        fold's own orientation, which for ASC-Net may be the other side or direction.)"""
        if self.image is None:
            return None
        calibrated = (self.image.get("by_image_score") or {}).get(how)
        if calibrated is not None:
            return float(calibrated["value"])
        return float(self.image["value"]) if how == self.image.get("image_score", "mean") else None

    def image_scale(self, how: str, side: str, direction: str = "higher") -> tuple[float, float] | None:
        """(median, cut) of the normal validation images' ``how`` scores of maps signed by ``side``,
        negated where ``direction`` is ``lower``; None where the fold did not keep them (calibrated
        before folds were put on one scale, or that orientation not measured)."""
        key = "by_image_score" if side_sign(side) == side_sign(self.anomalous_side) else "other_side_by_image_score"
        entry = ((self.image or {}).get(key) or {}).get(how)
        if entry is None or "normal_median" not in entry:
            return None
        return image_scale_of(entry, direction)

    def to_record(self) -> dict:
        """threshold.json's content (flat, as autouad has always written it)."""
        record = dict(self.details, strategy=self.strategy, value=self.value, anomalous_side=self.anomalous_side,
                      how=self.how)
        if self.image is not None:
            record["image"] = self.image
        return record

    @classmethod
    def from_record(cls, record: dict, source: str | Path = "threshold") -> "Threshold":
        try:
            details = {k: v for k, v in record.items()
                       if k not in ("strategy", "value", "anomalous_side", "how", "image")}
            side = record["anomalous_side"]
            side_sign(side)
            return cls(float(record["value"]), side, str(record["strategy"]), str(record.get("how", "")),
                       record.get("image"), details)
        except (KeyError, TypeError, ValueError) as e:
            raise CalibrationError(f"{source}: not a threshold record ({e})") from None


# ---- the strategies ------------------------------------------------------------------------------------
# name -> function(settings, cases, side, histogram_range) -> Threshold; CalibrationError when the
# fold's data cannot support it (calibrate then falls back to the label-free percentile)
Strategy = Callable[[dict, list[CaseMaps], str, "tuple[float, float] | None"], Threshold]
STRATEGIES: dict[str, Strategy] = {}


def threshold_strategy(name: str):
    def register(function: Strategy) -> Strategy:
        STRATEGIES[name] = function
        return function
    return register


@threshold_strategy("histogram_peak")
def _histogram_peak(settings: dict, cases: list[CaseMaps], side: str, histogram_range) -> Threshold:
    if histogram_range is None:
        raise CalibrationError("the histogram-peak threshold needs a map with a fixed value range (ASC-Net's I_ro)")
    counts = np.zeros(DEFAULT_BINS, np.int64)
    for case, maps in cases:
        counts += np.histogram(maps[case.region], DEFAULT_BINS, histogram_range)[0]
    cut = settings.get("cut") or "peak"
    peak = settings.get("peak") or "rightmost"
    value, peaks = histogram_peak_threshold(counts, histogram_range, peak, cut)
    return Threshold(value, side, "histogram_peak",
                     f"{'the valley before the ' if cut == 'valley' else ''}{peak} of the separated peaks of the "
                     f"validation histogram inside the region", details={"peaks": peaks, "cut": cut})


@threshold_strategy("validation_calibrated")
def _validation_calibrated(settings: dict, cases: list[CaseMaps], side: str, histogram_range) -> Threshold:
    masked = [(maps[case.region], case.anomaly_mask[case.region]) for case, maps in cases if case.mask is not None]
    value, dice = validation_calibrated_threshold(masked, side)
    return Threshold(value, side, "validation_calibrated",
                     "maximises the mean subject-wise Dice on the validation cases (before post-processing)",
                     details={"validation_dice": dice})


@threshold_strategy("normal_percentile")
def _normal_percentile(settings: dict, cases: list[CaseMaps], side: str, histogram_range) -> Threshold:
    percentile = float(settings.get("percentile") or FALLBACK_PERCENTILE)
    normal = normal_pixel_values(cases)
    if normal.size == 0:
        raise CalibrationError("the fold's validation cases have no normal reference slices for a label-free "
                               "percentile")
    return Threshold(normal_percentile_threshold(normal, percentile, side), side, "normal_percentile",
                     f"the {percentile:g}th percentile of the map on normal validation slices (label-free)",
                     details={"percentile": percentile, "normal_pixels": int(normal.size)})


# ---- a fold's validation data ------------------------------------------------------------------------
def load_validation_maps(fold_folder: Path, data_folder: Path, modality: str) -> list[CaseMaps]:
    """The validation cases of a trained fold with the maps it saved (``validation/``)."""
    index = load_json(fold_folder / "validation" / "maps.json")
    return [(load_preprocessed_case(data_folder, name, modality),
             np.asarray(load_npy(fold_folder / "validation" / f"{name}.npy")))
            for name in index["cases"]]


def normal_pixel_values(cases: list[CaseMaps]) -> np.ndarray:
    values = []
    for case, maps in cases:
        reference = case.is_reference
        values.append(maps[reference][case.region[reference]])
    return np.concatenate(values) if values else np.zeros(0)


# ---- calibration of a fold -------------------------------------------------------------------------
def calibrate(plan, cases: list[CaseMaps], histogram_range: tuple[float, float] | None,
              image_percentile: float | None = None, image_score: str = "mean",
              image_side_from_validation: bool = False) -> Threshold:
    """The threshold of the plans' strategy (``plans.threshold``, a ThresholdPlan or its dict) from
    a fold's validation cases and maps; the label-free percentile when the strategy cannot be
    read off this data (the reason is kept in ``details["fallback_reason"]``).
    ``image_side_from_validation``: the image-level side and direction may be chosen on the
    labelled validation images (methods whose map side is ``polarity``; module docstring)."""
    settings = plan if isinstance(plan, dict) else {k: v for k, v in vars(plan).items() if v is not None}
    name = settings["strategy"]
    if name not in STRATEGIES:
        raise CalibrationError(f"unknown threshold strategy {name!r}; known: {', '.join(STRATEGIES)}")
    side = "below" if settings.get("peak") == "leftmost" else "above"
    try:
        threshold = STRATEGIES[name](settings, cases, side, histogram_range)
    except CalibrationError as e:
        if name == "normal_percentile":
            raise
        try:
            threshold = STRATEGIES["normal_percentile"](settings, cases, side, histogram_range)
        except CalibrationError as fallback:
            raise CalibrationError(f"{e}; and {fallback}") from None
        threshold.details["fallback_reason"] = str(e)
    threshold.details.update(requested=dict(settings), space="preprocessed slices",
                             cases=[case.name for case, _ in cases])
    if cases and all(case.is_2d for case, _ in cases):
        threshold.image = calibrate_image_threshold(cases, side, image_percentile or IMAGE_PERCENTILE,
                                                    settings.get("image_score") or image_score,
                                                    fixed=bool(settings.get("image_score")),
                                                    either_side=image_side_from_validation)
    return threshold


def calibrate_image_threshold(cases: list[CaseMaps], side: str, percentile: float, declared: str = "mean",
                              fixed: bool = False, either_side: bool = False) -> dict:
    """Image-level cut for 2D datasets: a percentile of the normal validation images' scores, for
    each image score (autouad.selection.image_scores) with the median of the normal images' scores
    (FoldImageScore's scale) and its AUROC on the labelled validation images where there are enough
    of both kinds; the score used is ``declared`` (the method's), unless ``fixed`` is False and
    choose_image_score prefers another. ``either_side``: the scores of the map's other side are
    measured too (``other_side_by_image_score``), both directions of every score are kept
    (``opposite_value``, the opposite percentile), and all are candidates (choose_image_orientation)."""
    from autouad.evaluation.metrics import roc_auc
    from autouad.selection.image_scores import IMAGE_SCORES, MIN_IMAGES_PER_CLASS, choose_image_score
    normal = np.array([case.is_reference.all() for case, _ in cases])
    if not normal.any():
        raise CalibrationError("no normal validation images to calibrate the image-level threshold on")
    labels = np.array([-1 if case.label is None else case.label for case, _ in cases])
    known = labels >= 0
    measurable = min(np.count_nonzero(labels == 0), np.count_nonzero(labels == 1)) >= MIN_IMAGES_PER_CLASS

    def measured(on_side: str) -> dict:
        by_score = {}
        for how in IMAGE_SCORES:
            scores = np.array([oriented_image_score(maps, case.region, how, on_side) for case, maps in cases])
            by_score[how] = {"value": float(np.percentile(scores[normal], percentile)),
                             "normal_median": float(np.median(scores[normal])),
                             "validation_auroc": roc_auc(scores[known], labels[known]) if measurable else None}
            if either_side:
                by_score[how]["opposite_value"] = float(np.percentile(scores[normal], 100 - percentile))
        return by_score

    other = "below" if side == "above" else "above"
    by_side = {side: measured(side), **({other: measured(other)} if either_side else {})}
    by_score = by_side[side]
    if fixed:
        chosen, reason = declared, f"{declared}, set in the plans (threshold.image_score)"
    else:
        chosen, reason = choose_image_score({h: r["validation_auroc"] for h, r in by_score.items()}, declared)
    image_side, direction, side_reason = side, "higher", "the map's anomalous side, higher scores more anomalous"
    if either_side:
        validation = {(h, s, d): None if by_side[s][h]["validation_auroc"] is None
                      else (by_side[s][h]["validation_auroc"] if d == "higher" else 1 - by_side[s][h]["validation_auroc"])
                      for h in ([chosen] if fixed else IMAGE_SCORES) for s in by_side for d in ("higher", "lower")}
        (chosen, image_side, direction), side_reason = choose_image_orientation(validation, (chosen, side, "higher"))
    center, cut = image_scale_of(by_side[image_side][chosen], direction)
    record = {"strategy": "normal_percentile", "percentile": percentile, "image_score": chosen,
              "image_score_reason": reason, "declared_image_score": declared, "image_score_fixed": fixed,
              "side": image_side, "direction": direction, "side_reason": side_reason,
              "score": f"{chosen} of the map inside the region, signed so that {image_side} is anomalous"
                       + (", negated" if direction == "lower" else ""),
              "value": cut, "normal_median": center,
              "normal_images": int(normal.sum()), "labelled_images": int(known.sum()), "by_image_score": by_score,
              "how": f"the {percentile:g}th percentile of the scores of normal validation images (label-free)"}
    if either_side:
        record["other_side_by_image_score"] = by_side[other]
    return record


def choose_image_orientation(validation_auroc: dict[tuple[str, str, str], float | None],
                             declared: tuple[str, str, str]) -> tuple[tuple[str, str, str], str]:
    """((image score, side, direction), why) for a map whose side is not fixed by its method, from the
    AUROC of each orientation on the labelled validation images: ``declared`` (the score chosen on
    the map's side, higher more anomalous) unless another ranks them better by more than
    SWITCH_MARGIN."""
    from autouad.selection.image_scores import SWITCH_MARGIN
    measured = {k: float(a) for k, a in validation_auroc.items() if a is not None and np.isfinite(a)}

    def words(key: tuple[str, str, str]) -> str:
        how, side, direction = key
        return f"{how} of the map's {side} side, {direction} more anomalous"

    if declared not in measured:
        return declared, f"{words(declared)} (too few labelled validation images to compare orientations)"
    best = max(measured, key=measured.get)
    if measured[best] > measured[declared] + SWITCH_MARGIN:
        return best, (f"{words(best)}: the labelled validation images rank it at AUROC {measured[best]:.3f}, "
                      f"{words(declared)} at {measured[declared]:.3f}")
    return declared, (f"{words(declared)}: AUROC {measured[declared]:.3f} on the labelled validation images, no "
                      f"other orientation better by more than {SWITCH_MARGIN}")


def fold_threshold(fold_folder: Path, plans, cases: list[CaseMaps],
                   histogram_range: tuple[float, float] | None) -> Threshold:
    """The threshold of a trained fold from its validation cases (load_validation_maps), with the
    plans' and the method's settings."""
    from autouad.methods.registry import get_method
    image_percentile = plans.threshold.percentile if plans.task == "image" else None
    method = get_method(plans.method)
    threshold = calibrate(plans.threshold, cases, histogram_range, image_percentile, method.image_score,
                          image_side_from_validation=method.anomalous_side == "polarity")
    threshold.details.update(fold=int(Path(fold_folder).name.split("_")[-1]), plans_name=plans.plans_name)
    return threshold


def calibrate_fold(fold_folder: Path, plans, cases: list[CaseMaps],
                   histogram_range: tuple[float, float] | None) -> Threshold:
    """Calibrate a trained fold (fold_threshold) and write ``threshold.json`` into its folder."""
    threshold = fold_threshold(fold_folder, plans, cases, histogram_range)
    save_json(threshold.to_record(), Path(fold_folder) / THRESHOLD_FILE)
    return threshold
