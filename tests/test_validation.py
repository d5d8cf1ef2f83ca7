"""A broken dataset gets one report naming every problem, a non-zero exit and no output."""

import numpy as np

from autouad.cli.plan_and_preprocess import main_plan_and_preprocess
from autouad.dataset.raw_dataset import RawDatasetWriter
from autouad.utils.files import load_json, save_json
from tests.conftest import write_volume


def make_good_dataset(raw, n=4):
    rng = np.random.default_rng(0)
    with RawDatasetWriter(11, "Bad", modality="MRI", channel_names={"0": "FLAIR"}, raw_folder=raw) as w:
        for i in range(n):
            img = rng.random((5, 12, 10)).astype(np.float32) + 1
            mask = np.zeros((5, 12, 10), np.uint8)
            mask[2, 4:6, 4:6] = 1
            w.add_case(f"case_{i}", [img], role="normal" if i < 2 else "unlabeled",
                       mask=mask if i >= 2 else None)
    return w.target


def test_three_problems_in_one_report(autouad_env, capsys):
    folder = make_good_dataset(autouad_env["raw"])
    # 1. a truncated file
    path = folder / "imagesTr" / "case_0_0000.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # 2. a mask whose geometry disagrees with its image
    write_volume(np.zeros((5, 12, 10), np.uint8), folder / "masksTr" / "case_2.nii.gz", spacing=(1.0, 1.0, 2.0))
    # 3. an image with NaN
    nan_img = np.ones((5, 12, 10), np.float32)
    nan_img[1, 1, 1] = np.nan
    write_volume(nan_img, folder / "imagesTr" / "case_3_0000.nii.gz")

    status = main_plan_and_preprocess(["-d", "11", "--np", "1"])
    err = capsys.readouterr().err
    assert status == 1
    report = [line for line in err.splitlines() if line.strip().startswith("- ")]
    assert len(report) == 3, err
    assert any("case_0_0000.nii.gz" in l and "truncated" in l for l in report)
    assert any("case_2.nii.gz" in l and "spacing" in l for l in report)
    assert any("case_3_0000.nii.gz" in l and "NaN" in l for l in report)
    # nothing written that a rerun could trust
    assert not any(autouad_env["preprocessed"].iterdir())


def test_verify_only_writes_nothing(autouad_env, capsys):
    make_good_dataset(autouad_env["raw"])
    assert main_plan_and_preprocess(["-d", "11", "--verify-only", "--np", "1"]) == 0
    assert "all files check out" in capsys.readouterr().out
    assert not any(autouad_env["preprocessed"].iterdir())


def test_dataset_json_problems_listed_together(autouad_env, capsys):
    folder = make_good_dataset(autouad_env["raw"])
    meta = load_json(folder / "dataset.json")
    meta["modalty"] = "MRI"  # unknown key (typo)
    meta["training"]["case_1"]["role"] = "healthy"  # unknown role
    (folder / "imagesTr" / "case_1_0000.nii.gz").unlink()  # missing channel (reported once the json is fixed)
    save_json(meta, folder / "dataset.json")
    assert main_plan_and_preprocess(["-d", "11", "--np", "1"]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'modalty'" in err and "role 'healthy'" in err


def test_constant_and_empty_problems(autouad_env, capsys):
    folder = make_good_dataset(autouad_env["raw"])
    write_volume(np.full((5, 12, 10), 3.0, np.float32), folder / "imagesTr" / "case_1_0000.nii.gz")
    (folder / "imagesTr" / "case_0_0000.nii.gz").unlink()
    assert main_plan_and_preprocess(["-d", "11", "--np", "1"]) == 1
    err = capsys.readouterr().err
    assert "case_1_0000.nii.gz: image is constant" in err
    assert "case_0_0000.nii.gz: missing channel file" in err
