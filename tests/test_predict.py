"""autouad_predict, autouad_evaluate and autouad_summarize on small trained models: outputs in the
inputs' geometry, the plan's preprocessing reproduced exactly, fold averaging, image-level CSVs for
2D datasets, and bad input reported without losing the good cases."""
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from autouad.cli.evaluate import main as evaluate_main
from autouad.cli.predict import main as predict_main
from autouad.cli.summarize import main as summarize_main
from autouad.cli.train import main as train_main
from autouad.inference.inputs import InputCase
from autouad.inference.predictor import AnomalyPredictor, FoldImageScore
from autouad.model import MODEL_FILE, AnomalyModel
from autouad.utils.files import load_json, load_npy
from tests.conftest import write_xray_dataset

DATASET = "Dataset007_DemoBrainMRI"
MODEL = "ascnet__autouadPlans_ascnet"


@pytest.fixture(scope="module")
def trained(demo_planned, tmp_path_factory):
    """The planned demo with fold 0 trained (smoke) and calibrated; AUTOUAD_* for the test to set."""
    env = dict(demo_planned, AUTOUAD_results=str(tmp_path_factory.mktemp("trained") / "results"))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        assert train_main(["7", "0", "-m", "ascnet", "--device", "cpu"]) == 0
    return env


@pytest.fixture
def env(trained, monkeypatch):
    for key, value in trained.items():
        monkeypatch.setenv(key, value)
    return {k: Path(v) for k, v in trained.items()}


def raw_folder(env) -> Path:
    return env["AUTOUAD_raw"] / DATASET


def model_folder(env) -> Path:
    return env["AUTOUAD_results"] / DATASET / MODEL


def test_training_ends_with_a_threshold_and_validation_scores(env):
    fold = model_folder(env) / "fold_0"
    threshold = load_json(fold / "threshold.json")
    assert threshold["strategy"] in ("histogram_peak", "normal_percentile")  # smoke training may have one peak
    assert threshold["anomalous_side"] == "above" and np.isfinite(threshold["value"])
    assert threshold["requested"]["strategy"] == "histogram_peak"
    summary = load_json(fold / "validation" / "summary.json")
    assert summary["space"] == "preprocessed slices" and summary["threshold"] == threshold["value"]


def test_predicted_files_have_the_inputs_geometry(env, tmp_path, capsys):
    raw = raw_folder(env)
    out = tmp_path / "out"
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(out), "-d", "7", "-m", "ascnet",
                         "--rois", str(raw / "roisTs"), "--save-maps", "--device", "cpu"]) == 0
    record = load_json(out / "predictions.json")
    cases = sorted(record["cases"])
    assert cases and record["num_failed"] == 0 and record["folds"] == [0]
    for case in cases:
        source = sitk.ReadImage(str(raw / "imagesTs" / f"{case}_0000.nii.gz"))
        for name, pixel_type in ((f"{case}.nii.gz", sitk.sitkUInt8), (f"maps/{case}.nii.gz", sitk.sitkFloat32),
                                 (f"rois/{case}.nii.gz", sitk.sitkUInt8),
                                 (f"without_postprocessing/{case}.nii.gz", sitk.sitkUInt8)):
            written = sitk.ReadImage(str(out / name))
            assert written.GetSize() == source.GetSize() and written.GetSpacing() == source.GetSpacing()
            assert written.GetOrigin() == source.GetOrigin() and written.GetDirection() == source.GetDirection()
            assert written.GetPixelID() == pixel_type, name
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
        roi = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "roisTs" / f"{case}.nii.gz")))
        assert set(np.unique(mask)) <= {0, 1} and not (mask & (roi == 0)).any()  # never outside the brain
    # the evaluation of these files, against the test masks, lands beside them
    assert evaluate_main(["-r", str(raw / "masksTs"), "-p", str(out)]) == 0
    summary = load_json(out / "summary.json")
    assert summary["num_cases"] == len(cases) and summary["pixel"]["auroc"] is not None
    assert not (raw / "imagesTs" / "summary.json").exists() and "Dice" in capsys.readouterr().out


def test_prediction_reproduces_the_training_preprocessing_exactly(env):
    """The predictor reads a raw validation case and must give the map the trainer saved for it
    from the preprocessed data."""
    raw = raw_folder(env)
    fold = model_folder(env) / "fold_0"
    predictor = AnomalyPredictor.from_folder(model_folder(env), [0], "cpu")
    for case in load_json(fold / "validation" / "maps.json")["cases"]:
        images = sorted((raw / "imagesTr").glob(f"{case}_000?.nii.gz"))
        roi = raw / "roisTr" / f"{case}.nii.gz"
        prepared = predictor.prepare(InputCase(case, images, roi if roi.is_file() else None, ".nii.gz"))
        expected = np.asarray(load_npy(fold / "validation" / f"{case}.npy"))
        np.testing.assert_allclose(predictor.predict_maps(prepared.slices), expected, atol=1e-5)


def test_folds_are_averaged_and_their_thresholds_too(env, tmp_path):
    model = tmp_path / MODEL
    shutil.copytree(model_folder(env), model)
    shutil.copytree(model / "fold_0", model / "fold_1")
    other = AnomalyModel.load(model / "fold_1")
    other.fold = 1  # a copy of fold 0 standing in for a second fold
    other.threshold.value += 0.1
    other.save(model / "fold_1" / MODEL_FILE)
    both = AnomalyPredictor.from_folder(model, None, "cpu")
    single = AnomalyPredictor.from_folder(model, [0], "cpu")
    assert both.folds == [0, 1]
    assert both.threshold == pytest.approx(single.threshold + 0.05)
    slices = np.random.default_rng(0).random((3, 2) + both.plans.slice_size, dtype=np.float32)
    np.testing.assert_allclose(both.predict_maps(slices), single.predict_maps(slices), atol=1e-6)


def test_image_score_of_several_folds_is_the_mean_of_their_scores(env, tmp_path):
    """Each fold's image cut is a percentile of its own maps' scores; a top-k score of the folds'
    mean map is lower than the folds' scores where their peaks differ, so the predictor must score
    each fold's map and average the scores (the masks still come from the mean map)."""
    from autouad.selection.image_scores import image_score

    model = tmp_path / MODEL
    shutil.copytree(model_folder(env), model)
    shutil.copytree(model / "fold_0", model / "fold_1")
    other = AnomalyModel.load(model / "fold_1")
    other.fold = 1
    other.save(model / "fold_1" / MODEL_FILE)
    both = AnomalyPredictor.from_folder(model, None, "cpu")
    both.fold_image_scores = [FoldImageScore("top_k_mean", both.side)] * 2   # raw scores, to compare
    first = both.models[1].anomaly_maps
    both.models[1].anomaly_maps = lambda slices, batch: np.roll(first(slices, batch), 7, axis=-1)  # peaks elsewhere
    raw = raw_folder(env)
    case = sorted((raw / "imagesTs").glob("*_0000.nii.gz"))[0].name[:-len("_0000.nii.gz")]
    images = sorted((raw / "imagesTs").glob(f"{case}_000?.nii.gz"))
    prepared = both.prepare(InputCase(case, images, raw / "roisTs" / f"{case}.nii.gz", ".nii.gz"))
    fold_maps = both.predict_fold_maps(prepared.slices)
    scores = [image_score(m, prepared.region, "top_k_mean") for m in fold_maps]
    of_mean_map = image_score(both.predict_maps(prepared.slices), prepared.region, "top_k_mean")
    assert of_mean_map < np.mean(scores) - 1e-6  # what averaging the maps first would have given
    prediction = both.result(prepared, fold_maps)
    assert prediction.score == pytest.approx(np.mean(scores))
    # the mean of the map is linear: both ways agree
    both.fold_image_scores = [FoldImageScore("mean", both.side)] * 2
    assert both.result(prepared, fold_maps).score == pytest.approx(
        image_score(both.predict_maps(prepared.slices), prepared.region, "mean"), rel=1e-5)


def test_chunks_prepared_in_the_background_give_the_same_outputs(env, tmp_path):
    """Cases are read on a background thread, a group ahead of the forward passes: groups of one
    slice and one group of everything must give the same maps, in the same order, with the time
    split between computing and waiting recorded."""
    raw = raw_folder(env)
    predictor = AnomalyPredictor.from_folder(model_folder(env), [0], "cpu")
    whole = predictor.predict_folder(raw / "imagesTr", tmp_path / "whole", save_maps=True, chunk_slices=10 ** 6)
    small = predictor.predict_folder(raw / "imagesTr", tmp_path / "small", save_maps=True, chunk_slices=1)
    assert list(small["cases"]) == list(whole["cases"]) == sorted(whole["cases"]) and len(whole["cases"]) > 1
    for case in whole["cases"]:
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / run / "maps" / f"{case}.nii.gz")))
                for run in ("whole", "small"))
        np.testing.assert_allclose(a, b, atol=1e-5)
    for record in (whole, small):
        assert 0 < record["model_seconds"] <= record["seconds"] and record["waiting_for_data_seconds"] >= 0


def test_bf16_inference_stays_close_to_fp32(env):
    """--precision bf16 (the GPU default) autocasts the forward passes; the CPU default stays fp32,
    equal to the saved validation maps (test above)."""
    fp32 = AnomalyPredictor.from_folder(model_folder(env), [0], "cpu")
    bf16 = AnomalyPredictor.from_folder(model_folder(env), [0], "cpu", precision="bf16")
    assert fp32.models[0].trainer.inference_precision == "auto"
    slices = np.random.default_rng(1).random((4, 2) + fp32.plans.slice_size, dtype=np.float32)
    exact, rounded = fp32.predict_maps(slices), bf16.predict_maps(slices)
    assert rounded.dtype == np.float32 and not np.array_equal(exact, rounded)
    np.testing.assert_allclose(rounded, exact, atol=0.03)


def test_output_inside_the_input_folder_is_refused(env, capsys):
    inputs = raw_folder(env) / "imagesTs"
    before = sorted(p.name for p in inputs.iterdir())
    assert predict_main(["-i", str(inputs), "-o", str(inputs / "out"), "-d", "7", "-m", "ascnet", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "must not lie in the input folder" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in inputs.iterdir()) == before


def test_an_unreadable_file_is_skipped_and_the_rest_predicted(env, tmp_path, capsys):
    raw = raw_folder(env)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in (raw / "imagesTs").iterdir():
        shutil.copy(path, inputs)
    good = sorted({p.name.rsplit("_", 1)[0] for p in inputs.iterdir()})
    first = sorted(inputs.iterdir())[0].read_bytes()
    (inputs / "broken_0000.nii.gz").write_bytes(first[: len(first) // 2])  # truncated
    (inputs / "broken_0001.nii.gz").write_bytes(first)
    out = tmp_path / "out"
    assert predict_main(["-i", str(inputs), "-o", str(out), "-d", "7", "-m", "ascnet", "--device", "cpu"]) == 1
    record = load_json(out / "predictions.json")
    assert sorted(record["cases"]) == good and list(record["failed"]) == ["broken"]
    assert "broken_0000.nii.gz" in record["failed"]["broken"]
    assert all((out / f"{case}.nii.gz").is_file() for case in good) and not (out / "broken.nii.gz").exists()
    assert "skipped" in capsys.readouterr().err


def test_an_input_lacking_a_channel_the_model_reads_is_refused(env, tmp_path, capsys):
    """The ASC-Net plan reads FLAIR (channel 0) of the FLAIR + T1 demo: a FLAIR-only case is predicted,
    a T1-only case and a file without a channel suffix are refused with their reasons."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    source = sorted((raw_folder(env) / "imagesTs").glob("*_0000.nii.gz"))[0]
    shutil.copy(source, inputs / "flair_only_0000.nii.gz")
    shutil.copy(source, inputs / "t1_only_0001.nii.gz")
    shutil.copy(source, inputs / "no_suffix.nii.gz")
    assert predict_main(["-i", str(inputs), "-o", str(tmp_path / "out"), "-d", "7", "-m", "ascnet",
                         "--device", "cpu"]) == 1
    record = load_json(tmp_path / "out" / "predictions.json")
    assert record["num_predicted"] == 1 and "flair_only" in record["cases"]
    assert "but the model reads 0000 (0000 FLAIR, 0001 T1)" in record["failed"]["t1_only"]
    assert "no channel suffix" in record["failed"]["no_suffix.nii.gz"]


def test_summarize_prints_the_folds(env, capsys):
    assert summarize_main(["-d", "7"]) == 0
    out = capsys.readouterr().out
    assert MODEL in out and "mean" in out
    assert (env["AUTOUAD_results"] / DATASET / "validation_summary.json").is_file()


# ---- a 2D X-ray dataset: image scores and decisions ------------------------------------------------
def test_two_dimensional_images_get_scores_and_image_level_metrics(autouad_env, tmp_path):
    from autouad.cli.plan_and_preprocess import main_plan_and_preprocess

    write_xray_dataset(8, "TinyXray", 24, [True] * 8)
    assert main_plan_and_preprocess(["-d", "8", "-m", "vae", "--schedule", "smoke", "--np", "1"]) == 0
    assert train_main(["8", "0", "-m", "vae", "--device", "cpu"]) == 0
    threshold = load_json(autouad_env["results"] / "Dataset008_TinyXray" / "vae__autouadPlans_vae" / "fold_0"
                          / "threshold.json")
    assert threshold["strategy"] == "normal_percentile" and threshold["image"]["strategy"] == "normal_percentile"
    raw = autouad_env["raw"] / "Dataset008_TinyXray"
    # predict straight from a folder of plain file names (one channel: no suffix needed)
    inputs = tmp_path / "xrays"
    inputs.mkdir()
    for path in (raw / "imagesTs").iterdir():
        shutil.copy(path, inputs / path.name.replace("_0000", ""))
    out = tmp_path / "out"
    assert predict_main(["-i", str(inputs), "-o", str(out), "-d", "8", "-m", "vae", "--device", "cpu"]) == 0
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == [f"test_{i:02d}" for i in range(6)]
    # the fold's scores on its normal scale: 0 its median normal validation image, 1 its image cut
    assert all(r["decision"] in ("0", "1") and float(r["threshold"]) == pytest.approx(1.0) for r in rows)
    scale = load_json(out / "predictions.json")["fold_image_scores"]["0"]
    assert scale["center"] == pytest.approx(threshold["image"]["normal_median"])
    assert scale["center"] + scale["scale"] == pytest.approx(threshold["image"]["value"])
    assert all(int(r["decision"]) == (float(r["score"]) >= float(r["threshold"])) for r in rows)
    mask = sitk.ReadImage(str(out / "test_00.png"))
    assert mask.GetSize() == (64, 64)
    assert evaluate_main(["-r", str(raw / "dataset.json"), "-p", str(out)]) == 0
    image = load_json(out / "summary.json")["image"]
    assert image["num_images"] == 6 and image["num_abnormal"] == 3
    assert {"auroc", "precision", "recall", "specificity", "f1"} <= set(image)


def test_folds_choose_one_image_score_from_their_mean_validation_auroc():
    from types import SimpleNamespace

    from autouad.calibration.thresholds import Threshold
    from autouad.inference.predictor import folds_image_score

    def fold(number, aurocs, own="mean"):
        by_score = {how: {"value": float(i), "validation_auroc": a} for i, (how, a) in enumerate(aurocs.items())}
        image = {"image_score": own, "declared_image_score": "mean", "value": by_score[own]["value"],
                 "by_image_score": by_score}
        return SimpleNamespace(method="twophase", fold=number, threshold=Threshold(0.5, "above", "normal_percentile",
                                                                                   image=image))

    # fold 0 alone would switch to top_k_mean, fold 1 to max_mean_filtered: together top_k_mean wins
    models = [fold(0, {"mean": 0.40, "max_mean_filtered": 0.50, "top_k_mean": 0.80}, own="top_k_mean"),
              fold(1, {"mean": 0.45, "max_mean_filtered": 0.70, "top_k_mean": 0.66}, own="max_mean_filtered")]
    how, why = folds_image_score(models)
    assert how == "top_k_mean" and "folds [0, 1]" in why
    assert [m.threshold.image_cut(how) for m in models] == [2.0, 2.0]
    # within the margin the declared score stays
    close = [fold(0, {"mean": 0.70, "max_mean_filtered": 0.70, "top_k_mean": 0.71})]
    assert folds_image_score(close)[0] == "mean"
    # a fold calibrated before the image scores were compared: what it was calibrated with
    old = fold(0, {"mean": 0.4, "max_mean_filtered": 0.5, "top_k_mean": 0.8})
    del old.threshold.image["by_image_score"]
    assert folds_image_score([old])[0] == "mean" and old.threshold.image_cut("top_k_mean") is None


def scaled_fold(method, number, aurocs, own="mean", side="above", image_side=None, median=0.0, direction=None):
    """A stand-in fold whose image cut of each score is its index + 1, its opposite percentile
    ``median - 1`` and whose normal median is ``median``, as calibration keeps them."""
    from types import SimpleNamespace

    from autouad.calibration.thresholds import Threshold
    by_score = {how: {"value": float(i + 1), "normal_median": median, "opposite_value": median - 1.0,
                      "validation_auroc": a} for i, (how, a) in enumerate(aurocs.items())}
    image = {"image_score": own, "declared_image_score": "mean", "value": by_score[own]["value"],
             "by_image_score": by_score, "image_score_reason": f"{own} (stand-in)"}
    if image_side is not None:   # the other side's scores: the median turns over, the cuts are 10 + index
        image.update(side=image_side, side_reason=f"{image_side} (stand-in)", other_side_by_image_score={
            how: {"value": 10.0 + i, "normal_median": -median, "validation_auroc": 1 - a}
            for i, (how, a) in enumerate(aurocs.items())})
    if direction is not None:
        image["direction"] = direction
    return SimpleNamespace(method=method, fold=number, threshold=Threshold(0.5, side, "normal_percentile", image=image))


def test_folds_of_a_map_with_no_fixed_side_score_images_each_their_own_way_on_one_scale():
    """ASC-Net's folds may disagree on which side of I_ro the anomalies lie: each scores images with
    its own (score, side, direction), scaled so that its median normal image is 0 and its cut 1, and
    the scaled scores are averaged."""
    from autouad.inference.predictor import fold_image_scores, folds_scaled_image_score
    from autouad.selection.image_scores import image_score

    aurocs = {"mean": 0.3, "max_mean_filtered": 0.5, "top_k_mean": 0.7}
    models = [scaled_fold("ascnet", 0, aurocs, own="top_k_mean", image_side="above", median=0.5),
              scaled_fold("ascnet", 1, aurocs, own="mean", image_side="below", median=0.5),
              scaled_fold("ascnet", 2, aurocs, own="mean", image_side="above", median=0.5, direction="lower")]
    scores, how, why = fold_image_scores(models)
    assert how == ("per fold: fold 0 top_k_mean (above, higher), fold 1 mean (below, higher), "
                   "fold 2 mean (above, lower)") and "fold 1: mean (stand-in)" in why
    # fold 0 on the map's side: median 0.5, cut 3 (top_k_mean's); fold 1 on the other: median -0.5, cut 10
    assert (scores[0].center, scores[0].scale) == (0.5, 2.5)
    assert (scores[1].center, scores[1].scale) == (-0.5, 10.5)
    # fold 2 reads the mean the other way: median -0.5, cut -(0.5 - 1) = 0.5
    assert (scores[2].center, scores[2].scale) == (-0.5, 1.0)
    assert [s.scaled_cut for s in scores] == [1.0, 1.0, 1.0]
    rng = np.random.default_rng(0)
    maps, region = [rng.random((1, 16, 16)) for _ in range(3)], np.ones((1, 16, 16), bool)
    expected = np.mean([(image_score(maps[0], region, "top_k_mean") - 0.5) / 2.5,
                        (image_score(-maps[1], region, "mean") + 0.5) / 10.5,
                        (-image_score(maps[2], region, "mean") + 0.5) / 1.0])
    assert folds_scaled_image_score(maps, region, scores) == pytest.approx(expected)
    # a method whose side is fixed keeps one score and the map's side, still on each fold's scale
    fixed = [scaled_fold("twophase", 0, aurocs, own="top_k_mean", image_side="below", median=0.5, direction="lower"),
             scaled_fold("twophase", 1, aurocs, median=0.0)]
    scores, how, _ = fold_image_scores(fixed)
    assert how == "top_k_mean" and {(s.side, s.direction) for s in scores} == {("above", "higher")}
    assert [(s.center, s.scale) for s in scores] == [(0.5, 2.5), (0.0, 3.0)]


def test_folds_calibrated_before_they_kept_a_scale_are_averaged_raw():
    from autouad.inference.predictor import fold_image_scores

    aurocs = {"mean": 0.6, "max_mean_filtered": 0.5, "top_k_mean": 0.5}
    old, new = scaled_fold("twophase", 0, aurocs), scaled_fold("twophase", 1, aurocs, median=0.2)
    for entry in old.threshold.image["by_image_score"].values():
        del entry["normal_median"]
    scores, how, why = fold_image_scores([old, new])
    assert how == "mean" and "raw scores" in why
    assert all(not s.scaled and (s.center, s.scale) == (0.0, 1.0) for s in scores)
    assert [s.scaled_cut for s in scores] == [1.0, 1.0]   # each fold's raw cut (mean's: index 0 + 1)
