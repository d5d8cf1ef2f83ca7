"""benchmarks/quality.py: each fold's cut comes from its training patients, never from the patients
it is scored on; results accumulate across runs of the same schedule and refuse another's."""
import json
import os
import shutil

import pytest

from autouad import api
from autouad.calibration.thresholds import validation_calibrated_threshold
from autouad.preprocessing.cases import load_preprocessed_case
from autouad.utils.files import load_json
from dataset_conversion import demo
from tests.conftest import load_benchmark

DATASET = "Dataset007_DemoBrainMRI"


quality = load_benchmark("quality")


@pytest.fixture(scope="module")
def trained_vae(tmp_path_factory):
    """Four demo patients whose tumour-free slices are the normal reference (as in BraTS), two
    patient-wise folds, the VAE's fold 0 trained for two iterations, in the benchmark's work folder."""
    work = tmp_path_factory.mktemp("quality")
    demo.convert(7, raw_folder=work / "raw", seed=0, num_normal=0, num_patients=4, num_test=0, spacing=4.0,
                 normal_reference="slices_without_anomaly")
    api.plan_and_preprocess(7, method="vae", schedule="smoke", num_folds=2, num_processes=1, **quality.folders(work))
    api.train(7, 0, "vae", device="cpu", iterations=2, preprocessed_folder=work / "preprocessed",
              results_folder=work / "results")
    return work


def test_a_folds_cut_is_calibrated_on_its_training_patients(trained_vae, tmp_path):
    work = trained_vae
    split = quality.fold_split(work, 7, 0)
    fold = work / "results" / DATASET / "vae__autouadPlans_vae" / "fold_0"
    own = (fold / "threshold.json").read_bytes()
    assert load_json(fold / "threshold.json")["cases"] == split["val"]

    predictor = quality.recalibrated_predictor(work, 7, "vae", 0, split["train"])
    threshold = predictor.models[0].threshold
    assert threshold.details["cases"] == split["train"] and not set(split["train"]) & set(split["val"])
    assert threshold.strategy == "validation_calibrated"
    assert threshold.details["requested"]["strategy"] == "validation_calibrated"
    assert (fold / "threshold.json").read_bytes() == own  # the trained model is left as it was

    # the cut is the Dice-optimal one on the training patients' maps and masks
    model = predictor.models[0]
    data = work / "preprocessed" / DATASET / model.plans.preprocessing.data_folder
    cases = []
    for name in split["train"]:
        case = load_preprocessed_case(data, name)
        maps = model.anomaly_maps(case.data)
        cases.append((maps[case.region], case.anomaly_mask[case.region]))
    assert threshold.value == pytest.approx(validation_calibrated_threshold(cases, "above")[0])

    # predicting the held-out patients uses that cut
    out = tmp_path / "predicted"
    record = predictor.predict_cases(quality.input_cases(work / "raw" / DATASET, split["val"]), out)
    assert record["num_predicted"] == len(split["val"]) and not record["failed"]
    used = load_json(out / "predictions.json")["fold_thresholds"]
    assert [t["value"] for t in used.values()] == [threshold.value]
    assert quality.fold_cuts([out]) == "best Dice on the training patients' masks"


def test_a_resumed_run_reuses_only_a_fold_trained_exported_and_calibrated(trained_vae, tmp_path):
    fold = tmp_path / "fold_0"
    shutil.copytree(trained_vae / "results" / DATASET / "vae__autouadPlans_vae" / "fold_0", fold)
    assert quality.fold_complete(fold)
    final = fold / "checkpoint_final.pt"
    later = (fold / "threshold.json").stat().st_mtime + 10
    os.utime(final, (later, later))  # trained again after its calibration: its maps are stale
    assert not quality.fold_complete(fold)
    os.utime(final, (later - 20, later - 20))
    (fold / "validation" / "summary.json").unlink()  # interrupted before the validation was scored
    assert not quality.fold_complete(fold)
    assert not quality.fold_complete(tmp_path / "fold_1")


def test_results_accumulate_and_refuse_another_schedule(tmp_path):
    path = tmp_path / "quality.json"
    first = quality.Results(path, "fast", [0, 1], "machine A")
    first.record("brats", "vae", {"error": "RuntimeError: stopped"})
    second = quality.Results(path, "fast", [0, 1], "machine B")
    second.record("brats", quality.FLAIR_LABEL_FREE, {"error": "RuntimeError: also stopped"})
    second.record("brats", f"ascnet {quality.OWN_HISTOGRAM}", {"error": "RuntimeError: not run"})
    second.record("brats", "ascnet", {"error": "RuntimeError: not run"})
    saved = json.loads(path.read_text())
    # table order (baselines, each method with its own-histogram row after it), both runs' rows
    assert list(saved["brats"]) == [quality.FLAIR_LABEL_FREE, "ascnet", f"ascnet {quality.OWN_HISTOGRAM}", "vae"]
    assert saved["brats"]["vae"]["machine"] == "machine A"
    assert "| vae | error: RuntimeError: stopped |" in path.with_suffix(".md").read_text()
    # an undefined figure is null in the JSON (strict: no NaN) and n/a in the table
    second.record("kermany", "vae", {"auroc": float("nan"), "average_precision": 0.5, "training_seconds": 60.0})
    saved = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert saved["kermany"]["vae"]["auroc"] is None
    assert "| vae | n/a | 0.500 | n/a | n/a | n/a | n/a | n/a | 1.0 min |" in path.with_suffix(".md").read_text()
    # a re-measured row with the same figures keeps its first stamp; other figures replace it
    third = quality.Results(path, "fast", [0, 1], "machine C")
    third.record("brats", "vae", {"error": "RuntimeError: stopped"})
    second.record("kermany", "vae", {"dice": (0.5, 0.25), "training_seconds": 60.0})
    quality.Results(path, "fast", [0, 1], "machine D").record("kermany", "vae", {"dice": (0.5, 0.25),
                                                                               "training_seconds": 60.0})
    saved = json.loads(path.read_text())
    assert (saved["brats"]["vae"]["machine"], saved["kermany"]["vae"]["machine"]) == ("machine A", "machine B")
    third.record("brats", "vae", {"error": "RuntimeError: stopped elsewhere"})
    assert json.loads(path.read_text())["brats"]["vae"]["machine"] == "machine C"
    with pytest.raises(SystemExit, match="smoke"):
        quality.Results(path, "smoke", [0, 1], "machine C")


def test_set_reaches_every_trained_fold_and_the_trained_rows(tmp_path, monkeypatch):
    """--set KEY=VALUE (an A/B run, float32 against bf16 say) changes the schedule of every fold
    trained, and the rows of trained methods say so; the baselines, which train nothing, do not."""
    settings = quality.parse_settings(["training_precision=bf16", "budget_minutes=2"])
    assert settings == {"training_precision": "bf16", "budget_minutes": 2}
    trained = []

    def fake_train(dataset, fold, method, overrides=None, results_folder=None, **kwargs):
        trained.append((fold, overrides))
        folder = quality.model_folder(tmp_path, 7, method) / f"fold_{fold}"
        folder.mkdir(parents=True)
        (folder / "training_log.json").write_text(json.dumps({"entries": [{"seconds": 3.0}]}))

    monkeypatch.setattr(quality, "plan_and_preprocess", lambda *args, **kwargs: None)
    monkeypatch.setattr(quality, "dataset_folder", lambda root, dataset_id: root / DATASET)
    monkeypatch.setattr(api, "train", fake_train)
    assert quality.train_folds(tmp_path, 7, "vae", "fast", [0, 1], 2, settings) == {0: 3.0, 1: 3.0}
    assert trained == [(0, settings), (1, settings)]

    results = quality.Results(tmp_path / "quality.json", "fast", [0, 1], "machine A", settings)
    results.record("kermany", quality.PIXEL_KNN, {"auroc": 0.6})
    results.record("kermany", "vae", {"auroc": 0.7, "training_seconds": 6.0})
    saved = json.loads((tmp_path / "quality.json").read_text())["kermany"]
    assert "settings" not in saved[quality.PIXEL_KNN] and saved["vae"]["settings"] == settings


def test_a_one_fold_run_skips_the_brats_auto_row_instead_of_recording_an_error(tmp_path, monkeypatch, capsys):
    """`auto` on BraTS-6 is chosen leave-one-fold-out: with --folds 0 there is no other fold, so the
    row is left out (and said so), not written as a failure; with two folds it is measured."""
    from argparse import Namespace

    def fake_auto(args, work, results):
        assert len(args.folds) == 2, "the one-fold run must not try the selection"
        return {"dice": (0.8, 0.1), "dice_without_postprocessing": (None, None), "auroc": (0.9, 0.1),
                "pooled_auroc": None, "average_precision": (None, None), "best_possible_dice": None,
                "num_cases": 6, "cut": "fold 0: FLAIR; fold 1: FLAIR (chosen on the other fold)"}

    monkeypatch.setattr(quality, "brats_auto", fake_auto)
    results = quality.Results(tmp_path / "quality.json", "fast", [0], "machine A")
    quality.record_brats_auto(Namespace(folds=[0]), tmp_path, results)
    assert quality.AUTO not in results.data["brats"]
    assert "skipped" in capsys.readouterr().out
    results = quality.Results(tmp_path / "two.json", "fast", [0, 1], "machine A")
    quality.record_brats_auto(Namespace(folds=[0, 1]), tmp_path, results)
    assert tuple(results.data["brats"][quality.AUTO]["dice"]) == (0.8, 0.1)


def test_each_command_records_its_whole_wall_time_beside_the_rows(tmp_path):
    """A run of many hours is judged by its whole wall time: each command appends its own, and a
    later command on the same results file keeps the earlier ones."""
    path = tmp_path / "quality.json"
    args = quality.argparse.Namespace(datasets=["brats", "kermany"], methods=["vae", "caae"])
    quality.Results(path, "fast", [0, 1], "machine A").record_command(args, 0.0, 331.04)
    later = quality.Results(path, "fast", [0, 1], "machine B", {"budget_minutes": 4})
    later.record_command(quality.argparse.Namespace(datasets=["kermany"], methods=["vae"]), 0.0, 12.0)
    saved = json.loads(path.read_text())
    assert [(c["minutes"], c["datasets"], c["machine"], c["settings"]) for c in saved["commands"]] == [
        (331.0, ["brats", "kermany"], "machine A", {}), (12.0, ["kermany"], "machine B", {"budget_minutes": 4})]
    table = path.with_suffix(".md").read_text()
    assert ": brats kermany, vae caae: 331.0 min" in table and "--set {'budget_minutes': 4}: 12.0 min" in table
