"""The front half on the real data in ../shared/data (skipped where it is absent)."""
import numpy as np
import pytest
import SimpleITK as sitk

from autouad.cli.plan_and_preprocess import main_plan_and_preprocess
from autouad.preprocessing.orientation import Orientation
from autouad.utils.files import load_json
from dataset_conversion.convert import main as convert_main
from tests.conftest import shared_data


def test_brats_deepmedic_front_half(autouad_env):
    source = shared_data("brats2015_deepmedic6")
    assert convert_main(["brats-deepmedic", "-i", str(source), "-d", "1"]) == 0
    assert main_plan_and_preprocess(["-d", "1", "--np", "2"]) == 0
    pre = autouad_env["preprocessed"] / "Dataset001_BraTS2015DeepMedic"
    fp = load_json(pre / "dataset_fingerprint.json")
    s = fp["summary"]
    assert s["num_training_cases"] == 6 and fp["channel_names"] == ["FLAIR", "T1c"]
    assert s["median_spacing"] == pytest.approx([1.0, 1.0, 1.0])
    assert all(c["file_shape"] == [155, 240, 240] for c in fp["cases"])  # 240 x 240 x 155 voxels
    assert s["anomaly_polarity"]["FLAIR"]["polarity"] == "bright"
    plans = load_json(pre / "plans.json")  # as the file holds it
    assert plans["method"] == "ascnet" and plans["threshold"]["peak"] == "rightmost"
    data_dir = pre / plans["preprocessing"]["data_folder"]
    case_dirs = {d.name: d for split in ("train", "validation", "test") for d in (source / split).iterdir()}
    total_reference = 0
    for case, folder in case_dirs.items():
        meta = load_json(data_dir / f"{case}.json")
        brain = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "brainmask.nii.gz"))) > 0
        tumour = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "OTMultiClass.nii.gz"))) > 0
        orientation = Orientation.from_dict(meta["orientation"])
        # back in the file's axes, the slices written are exactly the slices that contain brain
        brain_c, tumour_c = orientation.to_canonical(brain), orientation.to_canonical(tumour)
        assert meta["slices"]["canonical_index"] == np.flatnonzero(brain_c.any(axis=(1, 2))).tolist()
        # and the normal reference slices are exactly those without tumour labels
        expected_reference = [not tumour_c[z].any() for z in meta["slices"]["canonical_index"]]
        assert meta["slices"]["is_reference"] == expected_reference
        assert 130 <= meta["num_slices"] <= 145
        arr = np.load(data_dir / f"{case}.npy", mmap_mode="r")
        assert arr.shape == (meta["num_slices"], 2) + tuple(plans["preprocessing"]["slice_size"])
        total_reference += sum(expected_reference)
    assert s["num_reference_slices"] == total_reference


@pytest.mark.slow   # 5840 JPEGs converted and preprocessed: about 60 s on 2 cores
def test_kermany_front_half(autouad_env):
    source = shared_data("chestxray_kermany")
    assert convert_main(["chestxray-folders", "-i", str(source), "-d", "2"]) == 0
    raw = autouad_env["raw"] / "Dataset002_ChestXray"
    meta = load_json(raw / "dataset.json")
    roles = [c["role"] for c in meta["training"].values()]
    assert roles.count("normal") == 1341 and roles.count("unlabeled") == 3875
    test_labels = [c["label"] for c in meta["test"].values()]
    assert len(test_labels) == 624 and test_labels.count(0) == 234 and test_labels.count(1) == 390
    assert main_plan_and_preprocess(["-d", "2", "--np", "2"]) == 0
    pre = autouad_env["preprocessed"] / "Dataset002_ChestXray"
    s = load_json(pre / "dataset_fingerprint.json")["summary"]
    assert s["dimension"] == 2 and s["num_normal_cases"] == 1341 and s["num_unlabeled_cases"] == 3875
    assert s["num_test_cases"] == 624
    plans = load_json(pre / "plans.json")
    assert plans["method"] == "healthygan" and plans["task"] == "image"
    index = load_json(pre / plans["preprocessing"]["data_folder"] / "dataset_index.json")
    test_cases = [c for c in index["cases"].values() if c["split"] == "test"]
    assert len(test_cases) == 624 and sorted({c["label"] for c in test_cases}) == [0, 1]
    # folds never hold test images, and never split a patient
    splits = load_json(pre / "splits_final.json")
    patient = {k: v["patient"] for k, v in index["cases"].items()}
    for fold in splits:
        assert not set(fold["val"]) & set(meta["test"])
        assert not {patient[c] for c in fold["train"]} & {patient[c] for c in fold["val"]}
