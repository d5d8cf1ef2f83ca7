"""One table of bad inputs, each run through the entry point that meets it: convert, plan and
preprocess, train, predict, evaluate.

Every bad input must give a one-line message that names its file and the problem, no traceback, no
input changed (checksums before and after) and no partial output file. Where an entry point works
case by case (predict, evaluate), the good cases of the same run are still done; where it works on
a whole dataset (convert, plan and preprocess, train), it refuses the dataset and says why, and
writes nothing. The suite prints its totals: inputs tried, tracebacks, inputs changed, partial files.
"""
import hashlib
import json
import os
import shutil
import sys
import traceback
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from autouad import api
from autouad.cli.evaluate import main as evaluate_main
from autouad.cli.plan_and_preprocess import main_plan_and_preprocess
from autouad.cli.predict import main as predict_main
from autouad.cli.train import main as train_main
from dataset_conversion import demo
from dataset_conversion.convert import main as convert_main
from tests.conftest import write_volume, write_xray_dataset

DATASET = "Dataset007_DemoBrainMRI"
XRAYS = "Dataset008_TinyXray"
TOTALS = {"inputs tried": 0, "tracebacks": 0, "inputs changed": 0, "partial files": 0, "not one line": 0}

# spaces and non-ASCII make a good case name (ASCII only where the file system's encoding has no "ä")
UNUSUAL_NAME = "pätient one" if "ä".encode(sys.getfilesystemencoding(), "ignore") else "patient one"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A 3D model (the VAE on the tiny demo brain MRI, smoke, fold 0) and a 2D one (the VAE on tiny
    synthetic X-rays), in their own AUTOUAD_* folders."""
    root = tmp_path_factory.mktemp("bad_inputs")
    folders = {kind: root / kind for kind in ("raw", "preprocessed", "results")}
    with pytest.MonkeyPatch.context() as env:
        for kind, folder in folders.items():
            env.setenv(f"AUTOUAD_{kind}", str(folder))
        demo.convert(7, raw_folder=folders["raw"], seed=0, num_normal=2, num_patients=2, num_test=1, spacing=4.0)
        write_xray_dataset(8, "TinyXray", 6, [True, False, True, False])
        for dataset in (7, 8):
            api.plan_and_preprocess(dataset, method="vae", schedule="smoke", num_processes=1)
            api.train(dataset, 0, "vae", device="cpu")
    yield folders
    print("\nbad-input suite totals: " + ", ".join(f"{k} {v}" for k, v in TOTALS.items()))
    assert TOTALS["tracebacks"] == TOTALS["inputs changed"] == TOTALS["partial files"] == 0


@pytest.fixture
def env(models, monkeypatch):
    for kind, folder in models.items():
        monkeypatch.setenv(f"AUTOUAD_{kind}", str(folder))
    return models


def checksums(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders if folder.exists() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(entry, argv: list[str], inputs: list[Path], capsys) -> tuple[int, str]:
    """Run a command line in-process; count a traceback (an exception escaping) and changed inputs."""
    before = checksums(*inputs)
    try:
        code = entry(argv)
    except SystemExit as e:   # argparse
        code = e.code
    except Exception:
        TOTALS["tracebacks"] += 1
        raise AssertionError("a traceback escaped:\n" + traceback.format_exc())
    captured = capsys.readouterr()
    output = captured.out + captured.err
    if "Traceback" in output:
        TOTALS["tracebacks"] += 1
    if checksums(*inputs) != before:
        TOTALS["inputs changed"] += 1
    return code, output


def partial_files(folder: Path) -> list[Path]:
    found = [p for p in folder.rglob(".*") if p.is_file()] if folder.exists() else []
    TOTALS["partial files"] += len(found)
    return found


def one_line(message: str, *needles: str) -> None:
    """The problem is one line that names what it is about."""
    lines = [line for line in message.splitlines() if all(n in line for n in needles)]
    if not lines:
        TOTALS["not one line"] += 1
    assert lines, f"no single line names {needles}:\n{message}"


# ---- files that a case-by-case entry point meets: predict ---------------------------------------------------
def good_case(env) -> Path:
    return sorted((env["raw"] / DATASET / "imagesTs").glob("*_0000.nii.gz"))[0]


def nifti(path: Path, array: np.ndarray, spacing=(4.0, 4.0, 4.0)) -> None:
    write_volume(array.astype(np.float32), path, spacing=spacing)


def bad_volumes(folder: Path, good: Path) -> dict[str, str]:
    """{file name: what its message must say}: the bad 3D inputs of one prediction run."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.ReadImage(str(good))
    array = sitk.GetArrayFromImage(image)
    (folder / "empty_0000.nii.gz").write_bytes(b"")
    data = good.read_bytes()
    (folder / "truncated_0000.nii.gz").write_bytes(data[: len(data) // 2])
    with_nan = array.astype(np.float32).copy()
    with_nan[1, 1, 1] = np.nan
    nibabel.save(nibabel.Nifti1Image(with_nan.transpose(2, 1, 0), np.eye(4)), str(folder / "nan_0000.nii.gz"))
    nifti(folder / "constant_0000.nii.gz", np.full(array.shape, 7.0))
    nibabel.save(nibabel.Nifti1Image(np.random.default_rng(0).random((5, 6, 7, 2)).astype(np.float32), np.eye(4)),
                 str(folder / "fourd_0000.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray((np.random.default_rng(0).random((20, 24)) * 255).astype(np.uint8)),
                    str(folder / "flat_0000.png"))
    small = folder / "huge_0000.nii"
    nifti(small, np.zeros((4, 5, 6)))
    header = bytearray(small.read_bytes())
    header[40:56] = np.array([3, 30000, 30000, 30000, 1, 1, 1, 1], "<i2").tobytes()
    small.write_bytes(bytes(header))
    shutil.copy(good, folder / f"{UNUSUAL_NAME}_0000.nii.gz")
    shutil.copy(good, folder / "good_0000.nii.gz")
    return {"empty_0000.nii.gz": "empty file", "truncated_0000.nii.gz": "truncated",
            "nan_0000.nii.gz": "NaN", "constant_0000.nii.gz": "constant", "fourd_0000.nii.gz": "4D",
            "flat_0000.png": "2D image", "huge_0000.nii": "refused before reading"}


def test_predict_refuses_each_bad_volume_in_one_line_and_does_the_good_ones(env, tmp_path, capsys):
    inputs = tmp_path / "in"
    expected = bad_volumes(inputs, good_case(env))
    TOTALS["inputs tried"] += len(expected) + 2
    out = tmp_path / "out"
    code, output = run(predict_main, ["-i", str(inputs), "-o", str(out), "-d", "7", "--method", "vae",
                                      "--device", "cpu", "--quiet"], [inputs], capsys)
    assert code == 1
    record = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert set(record["cases"]) == {"good", UNUSUAL_NAME}
    for file, problem in expected.items():
        case = file.rsplit("_", 1)[0]
        assert case in record["failed"] and problem in record["failed"][case], (file, record["failed"].get(case))
        one_line(output, file, problem)
        assert not list(out.glob(f"{case}.*"))
    assert not partial_files(out)


def test_predict_refuses_rois_that_do_not_fit(env, tmp_path, capsys):
    good = good_case(env)
    inputs, rois = tmp_path / "in", tmp_path / "rois"
    for name in ("shifted", "empty", "fine"):
        (inputs).mkdir(exist_ok=True)
        shutil.copy(good, inputs / f"{name}_0000.nii.gz")
    roi = sitk.ReadImage(str(env["raw"] / DATASET / "roisTs" / good.name.replace("_0000", "")))
    rois.mkdir()
    sitk.WriteImage(roi, str(rois / "fine.nii.gz"))
    shifted = sitk.Image(roi)
    shifted.SetOrigin(tuple(o + 10 for o in roi.GetOrigin()))
    sitk.WriteImage(shifted, str(rois / "shifted.nii.gz"))
    sitk.WriteImage(roi * 0, str(rois / "empty.nii.gz"))
    TOTALS["inputs tried"] += 3
    out = tmp_path / "out"
    code, output = run(predict_main, ["-i", str(inputs), "-o", str(out), "-d", "7", "--method", "vae",
                                      "--rois", str(rois), "--device", "cpu", "--quiet"], [inputs, rois], capsys)
    record = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert code == 1 and list(record["cases"]) == ["fine"]
    one_line(output, "shifted.nii.gz", "geometry differs")
    one_line(output, "empty.nii.gz", "region-of-interest mask is empty")
    assert not partial_files(out)


def test_two_dimensional_oddities_and_a_volume_for_a_2d_model(env, tmp_path, capsys):
    """RGB, RGBA, grey + alpha and 16-bit PNGs are pictures the X-ray model predicts (read as the
    converter reads them); a 3D volume is refused."""
    from PIL import Image
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(1)
    grey = (rng.random((64, 64)) * 255).astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1), "RGB").save(inputs / "rgb.png")
    Image.fromarray(np.stack([grey] * 3 + [np.full_like(grey, 255)], -1), "RGBA").save(inputs / "rgba.png")
    Image.fromarray(np.stack([grey, np.full_like(grey, 255)], -1), "LA").save(inputs / "grey_alpha.png")
    sitk.WriteImage(sitk.GetImageFromArray(grey.astype(np.uint16) * 257), str(inputs / "sixteen.png"))
    shutil.copy(good_case(env), inputs / "volume.nii.gz")
    TOTALS["inputs tried"] += 5
    out = tmp_path / "out"
    code, output = run(predict_main, ["-i", str(inputs), "-o", str(out), "-d", "8", "--device", "cpu", "--quiet"],
                       [inputs], capsys)
    record = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert code == 1 and set(record["cases"]) == {"rgb", "rgba", "grey_alpha", "sixteen"}
    scores = [record["cases"][c]["score"] for c in ("rgb", "rgba", "grey_alpha", "sixteen")]
    assert np.allclose(scores, scores[0], atol=1e-3)   # one picture, one score, whatever its encoding
    one_line(output, "volume.nii.gz", "3D volume")
    assert not partial_files(out)


def test_wrong_channels_and_output_folders_are_refused(env, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(good_case(env), inputs / "only_t1_0001.nii.gz")
    TOTALS["inputs tried"] += 3
    code, output = run(predict_main, ["-i", str(inputs), "-o", str(tmp_path / "out"), "-d", "7", "--method", "vae",
                                      "--device", "cpu", "--quiet"], [inputs], capsys)
    assert code == 1
    one_line(output, "only_t1_0001.nii.gz", "model reads 0000")
    code, output = run(predict_main, ["-i", str(inputs), "-o", str(inputs), "-d", "7", "--device", "cpu"], [inputs],
                       capsys)
    assert code == 1
    one_line(output, str(inputs), "must not lie in the input folder")
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    code, output = run(predict_main, ["-i", str(inputs), "-o", str(blocked / "out"), "-d", "7", "--device", "cpu"],
                       [inputs], capsys)
    assert code == 1
    one_line(output, str(blocked))


def unwritable_folder(tmp_path: Path) -> Path:
    """An output folder that cannot be made or written: a read-only folder for a normal user; root
    writes into those, so for root a folder in sysfs, which the kernel refuses to anyone."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return locked
    folder = Path("/sys/autouad_unwritable")
    try:
        folder.mkdir()
    except OSError:
        return folder
    folder.rmdir()
    pytest.skip("running as root without a sysfs that refuses new folders: no folder here is unwritable to root")


def test_a_read_only_output_folder_is_refused(env, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(good_case(env), inputs / "good_0000.nii.gz")
    locked = unwritable_folder(tmp_path)
    TOTALS["inputs tried"] += 1
    try:
        code, output = run(predict_main, ["-i", str(inputs), "-o", str(locked), "-d", "7", "--device", "cpu"],
                           [inputs], capsys)
    finally:
        if locked.is_relative_to(tmp_path):
            locked.chmod(0o755)
    assert code == 1
    one_line(output, str(locked))


# ---- evaluate ------------------------------------------------------------------------------------------------
def test_evaluate_names_a_damaged_reference(env, tmp_path, capsys):
    good = good_case(env)
    out = tmp_path / "pred"
    run(predict_main, ["-i", str(good.parent), "-o", str(out), "-d", "7", "--method", "vae", "--device", "cpu",
                       "--quiet"], [good.parent], capsys)
    references = tmp_path / "ref"
    references.mkdir()
    case = good.name.replace("_0000", "")
    (references / case).write_bytes((env["raw"] / DATASET / "masksTs" / case).read_bytes()[:100])
    TOTALS["inputs tried"] += 1
    code, output = run(evaluate_main, ["-r", str(references), "-p", str(out)], [references, good.parent], capsys)
    assert code == 1
    one_line(output, case)
    assert not partial_files(out)


# ---- whole-dataset entry points: convert, plan and preprocess, train -------------------------------------------
def test_convert_refuses_a_damaged_source_and_writes_nothing(env, tmp_path, capsys, monkeypatch):
    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    good = good_case(env)
    shutil.copy(good, source / "images" / "a.nii.gz")
    data = good.read_bytes()
    (source / "images" / "b.nii.gz").write_bytes(data[: len(data) // 3])
    (source / "images" / "c.nii.gz").write_bytes(b"")
    TOTALS["inputs tried"] += 2
    raw = tmp_path / "raw"
    monkeypatch.setenv("AUTOUAD_raw", str(raw))   # the converter's own output folder
    code, output = run(convert_main, ["nifti-folders", "-i", str(source), "-d", "30", "--modality", "MRI"], [source],
                       capsys)
    assert code == 1
    # the first damaged file in name order stops the conversion, named with its problem
    one_line(output, "b.nii.gz", "truncated")
    assert not raw.exists() or not any(raw.rglob("*.nii.gz"))
    assert not partial_files(raw)


def test_plan_and_preprocess_reports_every_problem_of_a_malformed_dataset(env, tmp_path, capsys):
    folder = env["raw"] / "Dataset031_Broken"
    shutil.copytree(env["raw"] / DATASET, folder)
    meta = json.loads((folder / "dataset.json").read_text())
    meta["modalty"] = meta.pop("modality")
    (folder / "dataset.json").write_text(json.dumps(meta))
    TOTALS["inputs tried"] += 1
    code, output = run(main_plan_and_preprocess, ["-d", "31", "--np", "1", "--quiet"], [folder], capsys)
    assert code == 1
    one_line(output, "dataset.json", "modalty")
    (folder / "dataset.json").write_text("{ not json")
    TOTALS["inputs tried"] += 1
    code, output = run(main_plan_and_preprocess, ["-d", "31", "--np", "1", "--quiet"], [folder], capsys)
    assert code == 1
    one_line(output, "dataset.json")
    assert not (env["preprocessed"] / "Dataset031_Broken" / "plans.json").exists()


def test_train_refuses_a_malformed_plans_file(env, tmp_path, capsys):
    plans_path = env["preprocessed"] / DATASET / "autouadPlans_vae.json"
    saved = plans_path.read_bytes()
    try:
        plans = json.loads(saved)
        plans["batch_size"] = "sixty-four"
        plans_path.write_text(json.dumps(plans))
        TOTALS["inputs tried"] += 1
        code, output = run(train_main, ["7", "1", "-m", "vae", "--device", "cpu", "--quiet"], [plans_path], capsys)
        assert code == 1
        one_line(output, "autouadPlans_vae.json", "batch_size")
    finally:
        plans_path.write_bytes(saved)
