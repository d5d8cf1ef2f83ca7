"""Planner decisions for different data situations, overrides, subclassing and splits."""
import copy

import numpy as np
import pytest

from autouad.planning.planner import AutoUADPlanner, PlanningError, plan_dataset
from autouad.planning.variants import (HistogramEqualizationPlanner, LowResolutionPlanner,
                                       NoHistogramEqualizationPlanner)
from autouad.utils.files import load_json, save_json


def fingerprint(modality="MRI", dimension=3, normal=4, unlabeled=4, masks=True, roi="brain", protocol="cases",
                polarity="bright", n_patients=None, anomaly_fraction=0.09, spacing=(1.0, 1.0, 1.0),
                shape=(155, 240, 240), bbox=(140, 170, 140)):
    cases = []
    for i in range(normal + unlabeled):
        role = "normal" if i < normal else "unlabeled"
        c = {"case": f"c{i:03d}", "split": "train", "role": role,
             "patient": f"p{(i if n_patients is None else i % n_patients):03d}", "label": None,
             "dimension": dimension, "spacing": list(spacing), "shape": list(shape),
             "n_slices": shape[0], "foreground_slices": bbox[0], "foreground_bbox_shape": list(bbox),
             "reference_slices": bbox[0] if role == "normal" else (bbox[0] // 2 if protocol != "cases" else 0)}
        cases.append(c)
    contrast = 1.0 if polarity == "bright" else -1.0
    summary = {"num_training_cases": len(cases), "num_test_cases": 0,
               "num_patients": len({c["patient"] for c in cases}), "num_normal_cases": normal,
               "num_unlabeled_cases": unlabeled, "dimension": dimension, "median_spacing": list(spacing),
               "median_shape": list(shape), "max_foreground_bbox_shape": list(bbox),
               "num_foreground_slices": bbox[0] * len(cases),
               "num_reference_slices": sum(c["reference_slices"] for c in cases),
               "num_cases_with_masks": unlabeled if masks else 0,
               "foreground_intensity": {"ch0": {"max": 255.0}}}
    if masks:
        summary["anomaly_fraction_mean"] = anomaly_fraction
        summary["anomaly_polarity"] = {"ch0": {"median_contrast": contrast, "polarity": polarity,
                                               "cases_bright": unlabeled if contrast > 0 else 0, "cases": unlabeled}}
    return {"dataset": "Dataset001_X", "modality": modality, "channel_names": ["ch0"], "roi_name": roi,
            "normal_reference": protocol, "summary": summary, "cases": cases}


def plan(tmp_path, fp, **kw):
    """The plans as plans.json holds them."""
    kw.setdefault("schedule", "fast")
    return plan_dataset(fp, tmp_path, **kw).to_dict()


def test_mri_with_normal_and_unlabeled_plans_ascnet(tmp_path):
    p = plan(tmp_path, fingerprint())
    assert p["method"] == "ascnet" and p["task"] == "segmentation"
    # every method the data can train is a candidate, those of their paper's setting first, each with a reason
    listed = [c["method"] for c in p["candidates"]]
    assert listed[:2] == ["ascnet", "caae"] and set(listed) == {"ascnet", "caae", "aae", "vae", "healthygan",
                                                                "twophase", "draem"}
    reasons = {c["method"]: c["reason"] for c in p["candidates"]}
    assert "baseline" in reasons["aae"] and "lacks 2D data" in reasons["healthygan"]
    assert p["threshold"] == {"strategy": "histogram_peak", "peak": "rightmost", "cut": "valley"}
    assert p["preprocessing"]["normalization"]["scheme"] == "minmax"
    assert p["preprocessing"]["crop"] == "roi" and p["preprocessing"]["mode"] == "spacing"
    h, w = p["preprocessing"]["slice_size"]
    assert h % 16 == 0 and w % 16 == 0 and h * w <= 25600
    # large anomalies: BraTS's 9x9 at the papers' 1 mm pixels, the same physical size on the planned grid
    assert p["postprocessing"]["kernel_size"] == kernel_at_plan_spacing(9, p)
    assert all(p["reasons"][k] for k in ("method", "geometry", "threshold", "batch_size", "num_folds"))


def test_dark_anomalies_take_the_leftmost_peak(tmp_path):
    p = plan(tmp_path, fingerprint(polarity="dark", anomaly_fraction=0.005))
    assert p["threshold"]["peak"] == "leftmost"
    assert p["postprocessing"]["kernel_size"] == kernel_at_plan_spacing(5, p)


def kernel_at_plan_spacing(paper_kernel: int, plans: dict) -> int:
    mm = float(np.mean(plans["preprocessing"]["target_spacing"]))
    candidates = range(1, 2 * paper_kernel, 2)  # odd sizes; the one closest to the paper's millimetres
    return min(candidates, key=lambda k: abs(k * mm - paper_kernel * 1.0))


def test_normal_only_plans_caae_with_zscore(tmp_path):
    p = plan(tmp_path, fingerprint(unlabeled=0, masks=False))
    assert p["method"] == "caae"
    assert p["preprocessing"]["normalization"]["scheme"] == "zscore"
    assert p["preprocessing"]["slice_size"] == [32, 32]  # the paper's 32x32 slices
    assert p["threshold"]["strategy"] == "normal_percentile"  # no masks: label-free


def test_ct_with_liver_roi_plans_twophase(tmp_path):
    p = plan(tmp_path, fingerprint(modality="CT", roi="liver", normal=6, unlabeled=0, masks=False,
                                   spacing=(3.0, 0.8, 0.8), shape=(112, 512, 512), bbox=(30, 200, 220)))
    assert p["method"] == "twophase"
    norm = p["preprocessing"]["normalization"]
    assert norm["scheme"] == "ct_window" and norm["histogram_equalization"] is True
    assert p["preprocessing"]["slice_size"][0] * p["preprocessing"]["slice_size"][1] <= 128 * 128
    variant = plan(tmp_path / "noeq", fingerprint(modality="CT", roi="liver", normal=6, unlabeled=0, masks=False,
                                                  spacing=(3.0, 0.8, 0.8), shape=(112, 512, 512), bbox=(30, 200, 220)),
                   planner_class=NoHistogramEqualizationPlanner)
    assert variant["preprocessing"]["normalization"] == dict(norm, histogram_equalization=False)
    assert "switched off" in variant["reasons"]["normalization"]


def test_low_resolution_variant_halves_each_side_and_says_so(tmp_path):
    xray = dict(modality="X-ray", dimension=2, roi=None, masks=False, shape=(1, 224, 224), bbox=(1, 224, 224),
                normal=200, unlabeled=200)
    full = plan(tmp_path, fingerprint(**xray), method="twophase")
    low = plan(tmp_path / "low", fingerprint(**xray), method="twophase", planner_class=LowResolutionPlanner)
    assert full["preprocessing"]["slice_size"] == [128, 128]
    assert low["preprocessing"]["slice_size"] == [64, 64]
    assert "LowResolutionPlanner" in low["reasons"]["geometry"]
    assert low["planner"] == "autouad.planning.variants.LowResolutionPlanner"
    # the pixel budget (and with it the batch that fits) is the plan's only other change
    changed = ("preprocessing", "reasons", "batch_size", "planner")
    assert {k: v for k, v in low.items() if k not in changed} == {k: v for k, v in full.items() if k not in changed}


def test_histogram_equalization_variant_switches_it_on_and_removes_brightness(tmp_path):
    import numpy as np

    from autouad.planning.plans import Normalization
    from autouad.preprocessing.normalization import equalize_slice_histograms, normalize_channel

    xray = dict(modality="X-ray", dimension=2, roi=None, masks=False, shape=(1, 224, 224), bbox=(1, 224, 224),
                normal=200, unlabeled=200)
    default = plan(tmp_path, fingerprint(**xray), method="ascnet")
    equalized = plan(tmp_path / "eq", fingerprint(**xray), method="ascnet", planner_class=HistogramEqualizationPlanner)
    assert default["preprocessing"]["normalization"]["histogram_equalization"] is False
    assert equalized["preprocessing"]["normalization"] == dict(default["preprocessing"]["normalization"],
                                                               histogram_equalization=True)
    assert "switched on" in equalized["reasons"]["normalization"]
    # a z-score method gets [0, 1] first, the range equalisation works on
    caae = plan(tmp_path / "caae", fingerprint(**xray), method="caae", planner_class=HistogramEqualizationPlanner)
    assert caae["preprocessing"]["normalization"]["scheme"] == "minmax"
    assert caae["preprocessing"]["normalization"]["histogram_equalization"] is True
    # what the variant is for: the same X-ray exposed brighter gives the same network input
    scheme = Normalization(**{k: v for k, v in equalized["preprocessing"]["normalization"].items()})
    image = np.random.default_rng(0).integers(10, 200, size=(1, 32, 32)).astype(np.float32)
    everywhere = np.ones_like(image, dtype=bool)
    inputs = [equalize_slice_histograms(normalize_channel(x, everywhere, scheme), everywhere)
              for x in (image, image + 40)]
    assert not np.allclose(normalize_channel(image, everywhere, scheme),
                           normalize_channel(image + 40, everywhere, scheme))
    np.testing.assert_allclose(inputs[0], inputs[1])


def test_xray_image_level_plans_healthygan(tmp_path):
    xray = dict(modality="X-ray", dimension=2, roi=None, masks=False, shape=(1, 224, 224), bbox=(1, 224, 224),
                normal=200, unlabeled=200)
    p = plan(tmp_path, fingerprint(**xray))
    assert p["method"] == "healthygan" and p["task"] == "image"
    assert p["preprocessing"]["mode"] == "resize" and p["preprocessing"]["slice_size"] == [64, 64]  # fast: CPU
    assert p["threshold"]["strategy"] == "normal_percentile"
    assert p["batch_size"] == 32  # the paper's batch at 128x128 and below
    paper = plan(tmp_path, fingerprint(**xray), schedule="paper")
    assert paper["preprocessing"]["slice_size"] == [224, 224]  # never upsampled past the native size


def test_no_reference_is_a_clear_error(tmp_path):
    with pytest.raises(PlanningError, match="no normal reference"):
        plan(tmp_path, fingerprint(normal=0, protocol="cases"))


def test_slice_protocol_counts_as_reference(tmp_path):
    p = plan(tmp_path, fingerprint(normal=0, unlabeled=6, protocol="slices_without_anomaly"))
    assert p["method"] == "ascnet"


def test_overrides_are_recorded(tmp_path):
    p = plan(tmp_path, fingerprint(), method="caae", schedule="smoke", num_folds=3)
    assert p["method"] == "caae" and p["schedule"]["name"] == "smoke" and p["folds"]["num_folds"] == 3
    assert p["command_line_overrides"] == {"method": "caae", "schedule": "smoke", "num_folds": 3}
    assert "command line" in p["reasons"]["method"]
    assert p["threshold"]["strategy"] == "validation_calibrated"  # masks exist for validation cases


def test_batch_size_respects_memory_budget(tmp_path):
    p = plan(tmp_path, fingerprint(), memory_budget_gb=1.0)
    assert p["batch_size"] < 16 and "memory" in p["reasons"]["batch_size"]


def test_subclass_changes_one_decision(tmp_path):
    class SevenByseven(AutoUADPlanner):
        def choose_postprocessing(self):
            value, _ = super().choose_postprocessing()
            return dict(value, kernel_size=7), "7x7 suits our lesions"

    base = plan(tmp_path / "a", fingerprint())
    sub = plan(tmp_path / "b", fingerprint(), planner_class=SevenByseven)
    assert sub["postprocessing"]["kernel_size"] == 7 and sub["reasons"]["postprocessing"] == "7x7 suits our lesions"
    for key in ("method", "preprocessing", "threshold", "batch_size", "folds"):
        assert sub[key] == base[key]


def test_splits_are_patient_wise_and_deterministic(tmp_path):
    fp = fingerprint(normal=10, unlabeled=10, n_patients=7)  # several cases per patient
    plan(tmp_path / "a", fp, num_folds=2)
    plan(tmp_path / "b", copy.deepcopy(fp), num_folds=2)
    a, b = load_json(tmp_path / "a" / "splits_final.json"), load_json(tmp_path / "b" / "splits_final.json")
    assert a == b
    patient = {c["case"]: c["patient"] for c in fp["cases"]}
    all_val = []
    for fold in a:
        assert not {patient[c] for c in fold["train"]} & {patient[c] for c in fold["val"]}
        all_val += fold["val"]
    assert sorted(all_val) == sorted(patient)  # every case validated exactly once


def test_user_splits_are_kept_and_checked(tmp_path):
    fp = fingerprint()
    ids = [c["case"] for c in fp["cases"]]
    tmp_path.mkdir(exist_ok=True)
    save_json([{"train": ids[:6], "val": ids[6:]}, {"train": ids[2:], "val": ids[:2]},
               {"train": ids[:2] + ids[4:], "val": ids[2:4]}], tmp_path / "splits_final.json")
    p = plan(tmp_path, fp)
    assert p["folds"]["num_folds"] == 3 and "kept" in p["reasons"]["splits"]
    bad = [{"train": ids[:5], "val": ids[4:]}]  # c004 in both
    save_json(bad, tmp_path / "splits_final.json")
    with pytest.raises(PlanningError, match="both train and val"):
        plan(tmp_path, fp)


def test_small_lesions_keep_a_kernel_that_does_not_erase_them(tmp_path):
    """MS-like data: many small lesions and one heavily affected patient push the mean anomaly share
    above the 'large anomalies' line, but the masks' own post-processing losses (measured in the
    fingerprint) forbid the 9x9 kernel: the planner keeps the largest size that erases at most 10 %."""
    from autouad.fingerprint.extractor import postprocessing_loss

    yy, xx = np.mgrid[:64, :64]
    mask = np.zeros((4, 64, 64), bool)
    for cy, cx in ((12, 12), (12, 40), (40, 20), (44, 48), (28, 30)):
        mask[1:3][:, (yy - cy) ** 2 + (xx - cx) ** 2 <= 12] = True    # lesions about 7 mm across at 1 mm
    losses = postprocessing_loss(mask, np.ones_like(mask), (1.0, 1.0, 1.0))
    assert losses["3"]["lost"] / losses["3"]["voxels"] < 0.1 and losses["9"]["lost"] == losses["9"]["voxels"]

    fp = fingerprint(anomaly_fraction=0.05)  # "large" by the share rule: 9x9 before the masks are asked
    fp["summary"]["postprocessing_loss"] = {size: losses[size]["lost"] / losses[size]["voxels"] for size in losses}
    p = plan(tmp_path, fp, method="caae")     # caae at 1 mm plans no resampling to speak of
    kept = fp["summary"]["postprocessing_loss"]
    assert p["postprocessing"]["enabled"] and p["postprocessing"]["kernel_size"] <= 5
    allowed = max(int(s) for s, loss in kept.items() if loss <= 0.10)
    assert f"at most {allowed} mm" in p["reasons"]["postprocessing"]
    fp["summary"]["postprocessing_loss"] = {size: 0.5 for size in kept}   # nothing survives: no post-processing
    assert plan(tmp_path / "none", fp, method="caae")["postprocessing"] == {"enabled": False}


def test_multichannel_data_adds_an_every_channel_candidate(tmp_path):
    fp = fingerprint()
    fp["channel_names"] = ["T1", "FLAIR"]
    fp["summary"]["anomaly_polarity"] = {
        "T1": {"median_contrast": -0.1, "polarity": "dark", "cases_bright": 1, "cases": 4},
        "FLAIR": {"median_contrast": 1.5, "polarity": "bright", "cases_bright": 4, "cases": 4}}
    p = plan(tmp_path, fp)
    # the paper's method reads one sequence (the most contrasted); its every-channel variant is the next candidate
    assert p["input_channels"] == [1]
    assert p["candidates"][1]["method"] == p["candidates"][0]["method"] and p["candidates"][1]["all_channels"]
    assert not any(c["all_channels"] for i, c in enumerate(p["candidates"]) if i != 1)
    variant = plan(tmp_path, fp, method=p["method"], all_channels=True, plans_name="autouadPlans_x_allchannels")
    assert variant["input_channels"] == [0, 1] and "every channel" in variant["reasons"]["input_channels"]
    # ASC-Net's histogram peak is read on FLAIR's channel of I_ro, the bright side
    assert variant["method"] == "ascnet"
    assert variant["threshold"]["channel"] == 1 and variant["threshold"]["peak"] == "rightmost"
    # a one-channel dataset has no such variant
    assert not any(c["all_channels"] for c in plan(tmp_path, fingerprint())["candidates"])


def test_budgeted_segmentation_plans_keep_the_best_proxy_point(tmp_path):
    # a budgeted schedule on pixel-level data keeps the label-free proxy's best point, with the reason
    for method in ("draem", "caae"):
        p = plan(tmp_path, fingerprint(), method=method)
        assert p["schedule"]["keep_checkpoint"] == "best_proxy" and "best_proxy" in p["reasons"]["schedule"]
        assert "keep_checkpoint" not in plan(tmp_path, fingerprint(), method=method, schedule="paper")["schedule"]
    # ASC-Net's plans keep the final networks (its orientation is decided on them); X-rays too
    assert plan(tmp_path, fingerprint(), method="ascnet")["schedule"]["keep_checkpoint"] == "final"
    xray = dict(modality="X-ray", dimension=2, roi=None, masks=False, shape=(1, 224, 224), bbox=(1, 224, 224),
                normal=200, unlabeled=200)
    assert "keep_checkpoint" not in plan(tmp_path, fingerprint(**xray), method="healthygan")["schedule"]
