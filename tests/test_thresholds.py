"""Threshold strategies, post-processing and a fold's validation scores on constructed data whose
right answers are known."""
import numpy as np
import pytest

from autouad.calibration.thresholds import (STRATEGIES, CalibrationError, Threshold, anomalous, calibrate,
                                            histogram_peak_threshold, normal_percentile_threshold,
                                            validation_calibrated_threshold)
from autouad.evaluation.fold_validation import score_fold
from autouad.planning.plans import Postprocessing
from autouad.postprocessing.morphology import postprocess_slices
from autouad.preprocessing.cases import PreprocessedCase
from autouad.selection.image_scores import image_score

RANGE = (0.0, 1.0)


def three_cluster_histogram(centres=(0.2, 0.4, 0.8), sizes=(20_000, 200_000, 15_000), seed=0):
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(c, 0.015, n) for c, n in zip(centres, sizes)])
    return np.histogram(values, 256, RANGE)[0], values


# ---- histogram peak ---------------------------------------------------------------------------------
def test_histogram_peak_literal_cut_is_the_peak_value():
    counts, _ = three_cluster_histogram()
    right, peaks = histogram_peak_threshold(counts, RANGE, "rightmost", cut="peak")
    left, _ = histogram_peak_threshold(counts, RANGE, "leftmost", cut="peak")
    assert len(peaks) == 3
    assert right == pytest.approx(0.8, abs=1 / 256 + 0.005)
    assert left == pytest.approx(0.2, abs=1 / 256 + 0.005)


def test_histogram_peak_valley_cut_keeps_the_whole_cluster():
    counts, values = three_cluster_histogram()
    right, _ = histogram_peak_threshold(counts, RANGE, "rightmost", cut="valley")
    left, _ = histogram_peak_threshold(counts, RANGE, "leftmost", cut="valley")
    # the valleys lie between the clusters, so each cut separates one cluster from the others exactly
    assert 0.5 < right < 0.7 and 0.25 < left < 0.35
    assert (values >= right).sum() == 15_000
    assert (values <= left).sum() == 20_000


def test_histogram_with_one_peak_cannot_be_cut_and_calibration_falls_back():
    rng = np.random.default_rng(1)
    counts = np.histogram(rng.normal(0.5, 0.05, 10_000), 256, RANGE)[0]
    with pytest.raises(CalibrationError, match="1 separated peak"):
        histogram_peak_threshold(counts, RANGE, "rightmost")
    case = constructed_case(rng, anomaly_value=0.4)  # the anomaly looks like the rest: one peak
    record = calibrate({"strategy": "histogram_peak", "peak": "rightmost"}, [case], RANGE).to_record()
    assert record["strategy"] == "normal_percentile" and "1 separated peak" in record["fallback_reason"]


def test_histogram_peak_calibration_reads_the_region_only():
    rng = np.random.default_rng(2)
    case = constructed_case(rng, anomaly_value=0.8)
    case[1][~case[0].region] = 0.95  # a bright band outside the region must not make a peak
    record = calibrate({"strategy": "histogram_peak", "peak": "rightmost", "cut": "valley"}, [case], RANGE).to_record()
    assert record["strategy"] == "histogram_peak" and len(record["peaks"]) == 2
    assert 0.45 < record["value"] < 0.75 and record["anomalous_side"] == "above"
    dark = calibrate({"strategy": "histogram_peak", "peak": "leftmost", "cut": "valley"},
                     [constructed_case(rng, anomaly_value=0.1)], RANGE).to_record()
    assert dark["anomalous_side"] == "below" and 0.15 < dark["value"] < 0.4


# ---- validation calibrated ------------------------------------------------------------------------------
def test_validation_calibrated_finds_the_separating_threshold():
    rng = np.random.default_rng(3)
    normal = rng.uniform(0.0, 0.3, 5000)
    abnormal = rng.uniform(0.6, 0.9, 500)
    maps = np.concatenate([normal, abnormal])
    labels = np.concatenate([np.zeros(5000, bool), np.ones(500, bool)])
    value, dice = validation_calibrated_threshold([(maps, labels)], "above")
    assert normal.max() < value <= abnormal.min() and dice == pytest.approx(1.0)
    value, dice = validation_calibrated_threshold([(1 - maps, labels)], "below")
    assert 1 - abnormal.min() <= value < 1 - normal.max() and dice == pytest.approx(1.0)


def test_validation_calibrated_without_anomalies_falls_back_to_the_percentile():
    rng = np.random.default_rng(4)
    case = constructed_case(rng, anomaly_value=0.8)
    case[0].mask[:] = 0
    record = calibrate({"strategy": "validation_calibrated"}, [case], None).to_record()
    assert record["strategy"] == "normal_percentile" and "no validation case has anomaly" in record["fallback_reason"]


# ---- normal percentile ----------------------------------------------------------------------------------
def test_normal_percentile_flags_the_chosen_fraction_of_normal_values():
    values = np.linspace(0, 1, 10_001)
    assert normal_percentile_threshold(values, 99.0, "above") == pytest.approx(0.99)
    assert normal_percentile_threshold(values, 99.0, "below") == pytest.approx(0.01)
    with pytest.raises(CalibrationError):
        normal_percentile_threshold(np.zeros(0), 99.0, "above")


def test_normal_percentile_uses_only_reference_slices_inside_the_region():
    rng = np.random.default_rng(5)
    case = constructed_case(rng, anomaly_value=0.9)
    record = calibrate({"strategy": "normal_percentile", "percentile": 90.0}, [case], None).to_record()
    c, maps = case
    normal = maps[c.is_reference][c.region[c.is_reference]]
    assert record["value"] == pytest.approx(np.percentile(normal, 90.0))
    assert record["normal_pixels"] == normal.size


def test_two_dimensional_cases_get_an_image_threshold():
    rng = np.random.default_rng(6)
    cases = []
    for i in range(20):
        maps = rng.uniform(0, 0.2, (1, 8, 8)).astype(np.float32) + (0.5 if i >= 10 else 0.0)
        cases.append(case_maps(f"img{i}", maps, np.ones((1, 8, 8), bool), None, [i < 10], is_2d=True,
                               role="normal" if i < 10 else "unlabeled", label=int(i >= 10)))
    threshold = calibrate({"strategy": "normal_percentile", "percentile": 99.0}, cases, None, image_percentile=95.0)
    normal_scores = [image_score(m, c.region, "mean") for c, m in cases[:10]]
    assert threshold.image["value"] == pytest.approx(np.percentile(normal_scores, 95.0))
    summary = score_fold(cases, threshold, None)
    assert summary["image"]["auroc"] == 1.0 and summary["image"]["recall"] == 1.0


def spot_images(rng, count: int = 40):
    """Half normal images a little brighter overall, half anomalous with one small bright spot: the
    mean of the map ranks them the wrong way round, the top 1 % the right way."""
    cases = []
    for i in range(count):
        anomalous_image = i >= count // 2
        maps = rng.uniform(0, 0.2, (1, 32, 32)).astype(np.float32) + (0.0 if anomalous_image else 0.1)
        if anomalous_image:
            maps[0, 10:13, 10:13] = 0.9
        cases.append(case_maps(f"img{i}", maps, np.ones((1, 32, 32), bool), None, [not anomalous_image], is_2d=True,
                               role="unlabeled" if anomalous_image else "normal", label=int(anomalous_image)))
    return cases


def test_image_score_is_chosen_on_labelled_validation_images_and_kept_with_its_reason():
    cases = spot_images(np.random.default_rng(7))
    threshold = calibrate({"strategy": "normal_percentile", "percentile": 99.0}, cases, None, image_percentile=95.0)
    image = threshold.image
    by_score = image["by_image_score"]
    assert by_score["mean"]["validation_auroc"] < 0.5 < by_score["top_k_mean"]["validation_auroc"]
    assert image["declared_image_score"] == "mean" and image["image_score"] != "mean"
    assert "chosen on the labelled validation images" in image["image_score_reason"]
    chosen = image["image_score"]
    normal_scores = [image_score(m, c.region, chosen) for c, m in cases[:20]]
    assert image["value"] == pytest.approx(np.percentile(normal_scores, 95.0))
    assert threshold.image_cut("mean") == pytest.approx(by_score["mean"]["value"])
    assert score_fold(cases, threshold, None)["image"]["auroc"] == 1.0  # scored with the chosen score


def test_image_score_stays_the_declared_one_when_fixed_or_unmeasurable():
    cases = spot_images(np.random.default_rng(8))
    fixed = calibrate({"strategy": "normal_percentile", "percentile": 99.0, "image_score": "mean"}, cases, None,
                      image_score="top_k_mean").image
    assert fixed["image_score"] == "mean" and fixed["image_score_fixed"] and "set in the plans" in fixed["image_score_reason"]
    few = cases[:20] + cases[20:25]  # five anomalous images: too few to compare scores on
    image = calibrate({"strategy": "normal_percentile", "percentile": 99.0}, few, None).image
    assert image["image_score"] == "mean" and image["by_image_score"]["top_k_mean"]["validation_auroc"] is None
    assert "too few labelled validation images" in image["image_score_reason"]


def test_image_side_is_chosen_per_fold_only_where_the_method_allows_it():
    """Images whose anomalies are a *dark* spot, on a map whose declared side is above: no score
    ranks them above normal there. A method whose side is not fixed (ASC-Net) turns to the other
    side; any other keeps the map's. The cut and the median are those of the signed scores."""
    rng = np.random.default_rng(9)
    cases = []
    for i in range(40):
        anomalous_image = i >= 20
        maps = rng.uniform(0.4, 0.6, (1, 32, 32)).astype(np.float32)
        if anomalous_image:
            maps[0, 10:13, 10:13] = 0.0
        cases.append(case_maps(f"img{i}", maps, np.ones((1, 32, 32), bool), None, [not anomalous_image], is_2d=True,
                               role="unlabeled" if anomalous_image else "normal", label=int(anomalous_image)))
    settings = {"strategy": "normal_percentile", "percentile": 99.0}
    kept = calibrate(settings, cases, None).image
    assert kept["side"] == "above" and max(r["validation_auroc"] for r in kept["by_image_score"].values()) < 0.6
    turned = calibrate(settings, cases, None, image_side_from_validation=True)
    image = turned.image
    assert image["side"] == "below" and turned.image_side == "below" and "below side" in image["side_reason"]
    chosen = image["image_score"]
    assert image["other_side_by_image_score"][chosen]["validation_auroc"] == 1.0   # the dark spot itself
    signed = np.array([image_score(-maps, c.region, chosen) for c, maps in cases[:20]])
    assert image["value"] == pytest.approx(np.percentile(signed, 95.0))
    assert image["normal_median"] == pytest.approx(np.median(signed))
    assert turned.image_scale(chosen, "below") == pytest.approx((np.median(signed), np.percentile(signed, 95.0)))
    assert score_fold(cases, turned, None)["image"]["auroc"] == 1.0   # scored on the chosen side
    assert image["direction"] == "higher"


def test_image_direction_is_chosen_where_a_lower_score_is_more_anomalous():
    """Anomalous images darker as a whole on a map whose side is above: their mean is *lower*. A map
    with no fixed side reads it that way; the median and cut are those of the negated scores."""
    rng = np.random.default_rng(10)
    cases = []
    for i in range(40):
        anomalous_image = i >= 20
        maps = rng.uniform(0.4, 0.6, (1, 16, 16)).astype(np.float32) - (0.05 if anomalous_image else 0.0)
        cases.append(case_maps(f"img{i}", maps, np.ones((1, 16, 16), bool), None, [not anomalous_image], is_2d=True,
                               role="unlabeled" if anomalous_image else "normal", label=int(anomalous_image)))
    threshold = calibrate({"strategy": "normal_percentile", "percentile": 99.0}, cases, None,
                          image_side_from_validation=True)
    image = threshold.image
    assert (image["image_score"], image["side"], image["direction"]) == ("mean", "above", "lower")
    assert threshold.image_direction == "lower" and "lower more anomalous" in image["side_reason"]
    normal = np.array([image_score(maps, c.region, "mean") for c, maps in cases[:20]])
    assert threshold.image_scale("mean", "above", "lower") == pytest.approx((-np.median(normal),
                                                                            -np.percentile(normal, 5.0)))
    assert image["value"] == pytest.approx(-np.percentile(normal, 5.0))
    assert score_fold(cases, threshold, None)["image"]["auroc"] == 1.0


def test_plans_know_every_image_score():
    import typing
    from autouad.planning.plans import ThresholdPlan
    from autouad.selection.image_scores import IMAGE_SCORES
    allowed = typing.get_args(typing.get_args(typing.get_type_hints(ThresholdPlan)["image_score"])[0])
    assert set(allowed) == set(IMAGE_SCORES)


# ---- post-processing ------------------------------------------------------------------------------------
def test_opening_removes_specks_and_closing_fills_holes_within_the_roi():
    masks = np.zeros((2, 30, 30), bool)
    masks[0, 5:20, 5:20] = True
    masks[0, 12, 12] = False          # a hole narrower than the kernel
    masks[0, 25, 25] = True           # a speck smaller than the kernel
    masks[1, 0:8, 0:8] = True         # touching the border
    roi = np.ones_like(masks)
    roi[:, :, 18:] = False
    out = postprocess_slices(masks, roi, 5)
    assert not out[0, 25, 25] and out[0, 12, 12]
    assert out[0, 5:20, 5:18].all() and not out[:, :, 18:].any()
    assert out[1, 0:8, 0:8].all()     # the border does not erode a mask that touches it
    assert np.array_equal(postprocess_slices(masks[1:], None, 5)[0], out[1])  # slices are independent
    with pytest.raises(ValueError, match="unknown post-processing"):
        postprocess_slices(masks, None, 3, ["dilation"])


def test_fold_scores_are_perfect_for_a_perfect_map_and_skip_empty_references():
    rng = np.random.default_rng(7)
    case = constructed_case(rng, anomaly_value=0.9)
    normal = constructed_case(rng, anomaly_value=0.4, name="normal")  # nothing to flag
    normal[0].mask[:] = 0
    threshold = Threshold(0.6, "above", "normal_percentile")
    pp = Postprocessing(enabled=True, operations=["opening", "closing"], kernel_size=3)
    summary = score_fold([case, normal], threshold, pp)
    assert summary["num_cases"] == 2 and summary["pixel"]["num_cases_with_anomaly"] == 1
    assert summary["cases"]["normal"]["flagged_fraction"] == 0.0
    assert summary["pixel"]["cases_without_anomaly"] == {"n": 1, "with_flagged_voxels": 0,
                                                         "flagged_fraction": {"mean": 0.0, "std": 0.0, "n": 1}}
    assert summary["pixel"]["dice_without_postprocessing"]["mean"] == pytest.approx(1.0)
    assert summary["pixel"]["auroc"]["mean"] == 1.0
    assert summary["pixel"]["best_possible_dice"]["mean_dice"] == pytest.approx(1.0)


def case_maps(name, maps, region, mask, is_reference, is_2d=False, role="unlabeled", label=None):
    """A preprocessed case (its region given as the ROI) and its maps, as calibration receives them."""
    s, h, w = maps.shape
    meta = {"orientation": {"is_2d": is_2d}, "role": role, "label": label,
            "slices": {"is_reference": [bool(r) for r in is_reference]}}
    case = PreprocessedCase(name, meta, np.zeros((s, 1, h, w), np.float32),
                            None if mask is None else np.asarray(mask, np.uint8), np.asarray(region, np.uint8))
    return case, maps


def constructed_case(rng, anomaly_value: float, name: str = "case"):
    """Four 32x32 slices: a circular region, background map values around 0.4, and on the two
    last slices a square anomaly of ``anomaly_value``; the first two are normal reference slices."""
    yy, xx = np.mgrid[:32, :32]
    region = np.broadcast_to((yy - 16) ** 2 + (xx - 16) ** 2 < 14 ** 2, (4, 32, 32)).copy()
    maps = rng.normal(0.4, 0.01, (4, 32, 32)).astype(np.float32)
    mask = np.zeros((4, 32, 32), bool)
    mask[2:, 10:18, 10:18] = True
    maps[mask] = rng.normal(anomaly_value, 0.01, mask.sum())
    return case_maps(name, maps, region, mask, [True, True, False, False])


def test_strategies_are_registered_by_name():
    assert set(STRATEGIES) >= {"histogram_peak", "validation_calibrated", "normal_percentile"}
    with pytest.raises(CalibrationError, match="unknown threshold strategy 'otsu'"):
        calibrate({"strategy": "otsu"}, [], None)


def test_anomalous_side():
    maps = np.array([0.1, 0.5, 0.9])
    assert anomalous(maps, 0.5, "above").tolist() == [False, True, True]
    assert anomalous(maps, 0.5, "below").tolist() == [True, True, False]
