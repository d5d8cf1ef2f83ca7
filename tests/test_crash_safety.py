"""Nothing is lost when a process dies: autouad_predict killed with SIGKILL leaves only whole output
files and a record of them, and --continue predicts only what is missing; two autouad_train
processes on different folds of one dataset at the same time do not clash."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from autouad import api
from autouad.utils.files import load_json
from dataset_conversion import demo

DATASET = "Dataset007_DemoBrainMRI"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny demo, planned for the VAE (smoke), with both folds trained by two processes at once."""
    root = tmp_path_factory.mktemp("crash")
    env = dict(os.environ, AUTOUAD_raw=str(root / "raw"), AUTOUAD_preprocessed=str(root / "preprocessed"),
               AUTOUAD_results=str(root / "results"))
    demo.convert(7, raw_folder=root / "raw", seed=0, num_normal=2, num_patients=2, num_test=1, spacing=4.0)
    api.plan_and_preprocess(7, method="vae", schedule="smoke", num_processes=1, raw_folder=root / "raw",
                            preprocessed_folder=root / "preprocessed")
    train = Path(sys.executable).with_name("autouad_train")
    processes = [subprocess.Popen([str(train), "7", str(fold), "-m", "vae", "--device", "cpu", "--quiet"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, encoding="utf-8",
                                  errors="replace") for fold in (0, 1)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    return {"root": root, "env": env, "codes": [p.returncode for p in processes], "outputs": outputs}


def test_two_trainings_of_one_dataset_at_once_do_not_clash(trained):
    assert trained["codes"] == [0, 0], trained["outputs"]
    model = trained["root"] / "results" / DATASET / "vae__autouadPlans_vae"
    for fold in (0, 1):
        folder = model / f"fold_{fold}"
        assert (folder / "model.pt").is_file() and load_json(folder / "training_log.json")["finished"]
        assert load_json(folder / "threshold.json")["fold"] == fold
    assert load_json(model / "plans.json")["method"] == "vae"
    assert not [p for p in model.rglob(".*") if p.is_file()]   # no temporary file left behind


def test_a_killed_prediction_leaves_whole_files_and_continue_finishes_it(trained, tmp_path):
    raw = trained["root"] / "raw" / DATASET
    inputs = tmp_path / "in"
    inputs.mkdir()
    source = sorted((raw / "imagesTs").glob("*_000?.nii.gz"))
    for copy in range(12):  # enough cases that the kill lands in the middle
        for path in source:
            shutil.copy(path, inputs / path.name.replace("demo_test_000", f"case{copy:02d}"))
    out = tmp_path / "out"
    predict = Path(sys.executable).with_name("autouad_predict")
    command = [str(predict), "-i", str(inputs), "-o", str(out), "-d", "7", "-m", "vae", "--device", "cpu", "--quiet"]
    process = subprocess.Popen(command + ["--batch-size", "1"], env=trained["env"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        record = out / "predictions.json"
        if record.is_file() and 2 <= len(load_json(record)["cases"]) < 12:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    if process.returncode != -signal.SIGKILL:
        pytest.skip("the prediction finished before it could be killed; nothing to check")
    record = load_json(out / "predictions.json")
    assert not record["complete"]
    finished = set(record["cases"])
    for path in out.rglob("*.nii.gz"):
        if not path.name.startswith("."):
            sitk.GetArrayFromImage(sitk.ReadImage(str(path)))   # every visible output reads whole
    for name in finished:
        assert (out / f"{name}.nii.gz").is_file()

    done = subprocess.run(command + ["--continue"], env=trained["env"], capture_output=True,
                          encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"continuing: {len(finished)} case(s) already predicted" in done.stderr
    record = load_json(out / "predictions.json")
    assert record["complete"] and record["num_predicted"] == 12 and set(record["cases"]) >= finished
    assert not [p for p in out.rglob(".*") if p.is_file()]
    masks = {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in out.glob("*.nii.gz")}
    assert len(masks) == 12 and all(np.array_equal(m, masks["case00.nii.gz"]) for m in masks.values())
