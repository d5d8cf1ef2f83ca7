"""The Python API and the model object: the demo's model predicts one image in memory exactly as
api.predict writes it; a fold trained before model.pt existed still loads; a misspelt plans key
fails at load; nothing in the library sets AUTOUAD_* or calls a command line with an argv list."""
import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from autouad import AnomalyModel, AnomalyPredictor, api
from autouad.model import MODEL_FILE
from autouad.planning.plans import PlansError
from autouad.planning.plans_files import find_plans
from dataset_conversion import demo

REPO = Path(__file__).resolve().parents[1]
DATASET = "Dataset999_Demo"


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    """The README's demo pipeline through the API, with explicit folders: generate, plan, train fold
    0 (smoke), predict the test cases."""
    root = tmp_path_factory.mktemp("api")
    folders = {"raw_folder": root / "raw", "preprocessed_folder": root / "preprocessed",
               "results_folder": root / "results"}
    demo.convert(999, "Demo", raw_folder=root / "raw", seed=0, num_normal=2, num_patients=2, num_test=2, spacing=3.0)
    planned = api.plan_and_preprocess(999, schedule="smoke", num_processes=1, raw_folder=root / "raw",
                                      preprocessed_folder=root / "preprocessed")
    trained = api.train(999, 0, schedule="smoke", device="cpu", preprocessed_folder=root / "preprocessed",
                        results_folder=root / "results")
    raw = root / "raw" / DATASET
    run = api.predict(raw / "imagesTs", root / "predictions", dataset=999, roi_folder=raw / "roisTs",
                      save_maps=True, device="cpu", results_folder=root / "results", raw_folder=root / "raw")
    return {"root": root, "raw": raw, "plans": planned.plans, "trained": trained, "run": run,
            "model_folder": run.model_folder, **folders}


def test_the_demo_model_predicts_in_memory_what_predict_writes(demo_model):
    [fold] = demo_model["trained"]
    assert fold.fold == 0 and (fold.folder / MODEL_FILE).is_file() and fold.strategy
    predictor = AnomalyPredictor.from_folder(demo_model["model_folder"], device="cpu")
    assert predictor.folds == [0] and predictor.plans.method == demo_model["plans"].method
    raw, out = demo_model["raw"], demo_model["run"].output_folder
    cases = sorted(demo_model["run"].record["cases"])
    assert len(cases) == 2 and not demo_model["run"].failed
    for case in cases:
        images = [sitk.ReadImage(str(raw / "imagesTs" / f"{case}_{c:04d}.nii.gz")) for c in range(2)]
        result = predictor.predict(images, roi=sitk.ReadImage(str(raw / "roisTs" / f"{case}.nii.gz")), name=case)
        for produced, written in ((result.mask, out / f"{case}.nii.gz"), (result.map, out / "maps" / f"{case}.nii.gz"),
                                  (result.region, out / "rois" / f"{case}.nii.gz")):
            written = sitk.ReadImage(str(written))
            assert np.array_equal(sitk.GetArrayFromImage(produced), sitk.GetArrayFromImage(written))
            for attribute in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
                assert getattr(produced, attribute)() == getattr(images[0], attribute)()
        assert result.score == pytest.approx(demo_model["run"].record["cases"][case]["score"])


def test_a_model_file_holds_what_prediction_needs_and_loads_weights_only(demo_model, tmp_path):
    fold = demo_model["model_folder"] / "fold_0"
    state = torch.load(fold / MODEL_FILE, weights_only=True)
    assert state["method"] == demo_model["plans"].method and state["plans"]["plans_name"] == "autouadPlans"
    assert set(state["networks"]) == {"M"}  # ASC-Net predicts with M; its discriminator stays in the checkpoint
    assert state["threshold"]["value"] == json.loads((fold / "threshold.json").read_text())["value"]
    model = AnomalyModel.load(fold / MODEL_FILE)
    assert model.threshold is not None and model.method == "ascnet" and model.dataset.modality == "MRI"
    # a half-precision copy is half the size and predicts maps within fp16 rounding
    half = model.save(tmp_path / "half.pt", precision="fp16")
    assert half.stat().st_size < 0.6 * (fold / MODEL_FILE).stat().st_size
    slices = np.random.default_rng(0).random((4, 2) + model.plans.slice_size, dtype=np.float32)
    np.testing.assert_allclose(AnomalyModel.load(half).anomaly_maps(slices), model.anomaly_maps(slices), atol=5e-3)


def test_a_malformed_or_foreign_model_file_is_refused_in_one_line(demo_model, tmp_path):
    from autouad.methods import trainer_class
    from autouad.model import ModelError
    state = torch.load(demo_model["model_folder"] / "fold_0" / MODEL_FILE, weights_only=True)
    broken = dict(state)
    del broken["fold"]
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(ModelError, match=r"broken\.pt: malformed model file \(KeyError") as error:
        AnomalyModel.load(tmp_path / "broken.pt")
    assert "\n" not in str(error.value)
    # a file cannot have another method's trainer (or any unrelated class) run its networks
    torch.save(dict(state, trainer=trainer_class("vae").dotted_name()), tmp_path / "foreign.pt")
    with pytest.raises(ModelError, match=r"foreign\.pt: its trainer .* is not ascnet's trainer"):
        AnomalyModel.load(tmp_path / "foreign.pt")


def test_a_fold_trained_before_model_files_still_loads_and_predicts_the_same(demo_model, tmp_path):
    """What autouad_train wrote before model.pt existed: checkpoint_final.pt without plans or trainer,
    the trainer in training_log.json, the plans and dataset.json beside the folds, threshold.json."""
    legacy = tmp_path / "ascnet__autouadPlans"
    shutil.copytree(demo_model["model_folder"], legacy)
    (legacy / "fold_0" / MODEL_FILE).unlink()
    checkpoint = legacy / "fold_0" / "checkpoint_final.pt"
    state = torch.load(checkpoint, weights_only=True)
    del state["plans"], state["trainer"]
    torch.save(state, checkpoint)
    old = AnomalyPredictor.from_folder(legacy, device="cpu")
    new = AnomalyPredictor.from_folder(demo_model["model_folder"], device="cpu")
    assert old.models[0].source == checkpoint and old.threshold == new.threshold
    record = old.predict_folder(demo_model["raw"] / "imagesTs", tmp_path / "old", demo_model["raw"] / "roisTs")
    for case in record["cases"]:
        a = sitk.ReadImage(str(tmp_path / "old" / f"{case}.nii.gz"))
        b = sitk.ReadImage(str(demo_model["run"].output_folder / f"{case}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_a_misspelt_plans_key_fails_at_load_naming_the_file_and_key(demo_model, tmp_path):
    preprocessed = demo_model["preprocessed_folder"] / DATASET
    bad = tmp_path / DATASET
    shutil.copytree(preprocessed, bad, ignore=shutil.ignore_patterns("autouadPlans_2d"))
    plans = json.loads((bad / "plans.json").read_text())
    plans["preprocessing"]["slice_sise"] = plans["preprocessing"].pop("slice_size")
    (bad / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(PlansError) as error:
        find_plans(bad)
    message = str(error.value)
    assert message.startswith(str(bad / "plans.json")) and "'slice_sise'" in message and "\n" not in message
    with pytest.raises(PlansError, match="batch_size: '16' is not an integer"):
        (bad / "plans.json").write_text(json.dumps(dict(json.loads((preprocessed / "plans.json").read_text()),
                                                        batch_size="16")))
        api.train(999, 0, preprocessed_folder=tmp_path, results_folder=tmp_path / "results")


def library_offences(repo: Path) -> list[str]:
    """The CLIs are layers over autouad.api: library code, benchmarks and converters receive folders
    as arguments and call the API, never ``os.environ[...] = ...`` or ``main([...])``, and no
    function outside autouad/cli takes an argparse Namespace."""
    offenders = []
    for folder in ("autouad", "benchmarks", "dataset_conversion"):
        for path in (repo / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            in_cli = path.parent.name == "cli"
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Attribute)
                                and target.value.attr == "environ"):
                            offenders.append(f"{path}:{node.lineno}: assigns os.environ")
                if isinstance(node, ast.Call) and (
                        (node.args and isinstance(node.args[0], ast.List) and "main" in ast.unparse(node.func))
                        or any(isinstance(a, ast.Name) and a.id.endswith("main") for a in node.args)):
                    offenders.append(f"{path}:{node.lineno}: calls a command line: {ast.unparse(node)[:80]}")
                if not in_cli and isinstance(node, ast.Attribute) and node.attr == "Namespace":
                    offenders.append(f"{path}:{node.lineno}: uses an argparse Namespace")
                if isinstance(node, ast.Attribute) and node.attr in ("symlink_to", "hardlink_to") and \
                        path.parent.name == "benchmarks":
                    offenders.append(f"{path}:{node.lineno}: builds folders of links")
    return offenders


def test_the_library_never_sets_autouad_folders_nor_calls_a_command_line():
    offenders = library_offences(REPO)
    assert not offenders, "\n".join(offenders)


def test_find_best_configuration_writes_instructions_that_predict_follows(demo_model, tmp_path):
    """The demo: autouad_find_best_configuration -d 999 -f 0 lists the intensity baseline among the
    candidates; autouad_predict -d 999 follows the choice and names it; and the masks it writes for a
    validation case are the masks find_best_configuration scored (evaluation and deployment agree)."""
    from autouad.inference.configured import ConfiguredPredictor
    from autouad.selection.configurations import PixelConfiguration, PixelScorer, ensemble_values
    from autouad.selection.find_best import INSTRUCTIONS_FILE, gather

    folders = {k: demo_model[k] for k in ("raw_folder", "preprocessed_folder", "results_folder")}
    instructions = api.find_best_configuration(999, [0], quiet=True, **folders)
    results = demo_model["results_folder"] / DATASET
    assert (results / INSTRUCTIONS_FILE).is_file() and (results / "inference_instructions.txt").is_file()
    names = [c["configuration"] for c in instructions["candidates"]]
    assert any(n.startswith("intensity:") for n in names) and any(n.startswith("ascnet with ") for n in names)
    chosen = instructions["chosen"]
    assert chosen["configuration"] == names[0] and "in-sample" in instructions["fitting"]

    raw = demo_model["raw"]
    run = api.predict(raw / "imagesTs", tmp_path / "out", dataset=999, roi_folder=raw / "roisTs", device="cpu",
                      **{k: folders[k] for k in ("raw_folder", "results_folder")})
    assert run.record["configuration"] == chosen["configuration"] and run.num_predicted == 2
    assert run.record["warnings"] == instructions["warnings"]

    task, folds, candidates, evidence, kernels, _, _ = gather(DATASET, folders["raw_folder"],
                                                           folders["preprocessed_folder"],
                                                           folders["results_folder"], [0], quiet=True)
    pool = {c.name: c for c in candidates}
    members = tuple(chosen["members"])
    if len(members) > 1:
        ensemble_values(evidence, members, chosen["candidate"])
    scorer = PixelScorer({n: c.value_range for n, c in pool.items()} | {chosen["candidate"]: None})
    config = PixelConfiguration(chosen["candidate"], chosen["threshold"]["source"], chosen["postprocessing"]["kernel"])
    params = {k: v for k, v in chosen["threshold"].items() if k in ("value", "z", "percentile")}
    predictor = ConfiguredPredictor(instructions, "cpu", source=results / INSTRUCTIONS_FILE)
    case = evidence[0]
    images = [sitk.ReadImage(str(raw / "imagesTr" / f"{case.name}_{c:04d}.nii.gz")) for c in range(2)]
    result = predictor.predict(images, roi=sitk.ReadImage(str(raw / "roisTr" / f"{case.name}.nii.gz")), name=case.name)
    from autouad.dataset.validation import case_from_images
    from autouad.dataset.raw_dataset import CaseFiles
    loaded = case_from_images(CaseFiles(case.name, "test", [], None, None, None, None, case.name),
                              [result.mask])
    assert np.array_equal(loaded.data[0] > 0, scorer.masks(config, params, case))


def test_a_dicom_series_is_predicted_into_nifti_in_its_geometry(demo_model, tmp_path):
    """A folder whose subfolder is a DICOM series (written by SimpleITK from a demo FLAIR volume with
    an oblique direction) is predicted by a model that reads FLAIR: a NIfTI mask with the series'
    origin, spacing and direction."""
    from tests.test_dicom import write_dicom_series

    flair = sitk.ReadImage(str(demo_model["raw"] / "imagesTs" / "demo_test_000_0000.nii.gz"))
    flair = sitk.Cast(sitk.RescaleIntensity(flair, 0, 1000), sitk.sitkInt16)
    rotation = sitk.VersorTransform((0, 0, 1), 0.3)
    turned = np.array(rotation.GetMatrix()).reshape(3, 3) @ np.array(flair.GetDirection()).reshape(3, 3)
    flair.SetDirection(tuple(turned.ravel()))
    flair.SetOrigin((12.5, -30.0, 7.0))
    write_dicom_series(flair, tmp_path / "scans" / "patient_a")
    assert demo_model["plans"].input_channels == [0]
    predictor = AnomalyPredictor.from_folder(demo_model["model_folder"], device="cpu")
    record = predictor.predict_folder(tmp_path / "scans", tmp_path / "out")
    assert record["num_predicted"] == 1 and not record["failed"]
    mask = sitk.ReadImage(str(tmp_path / "out" / "patient_a.nii.gz"))
    series = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "scans" / "patient_a")))
    assert mask.GetSize() == series.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), series.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetSpacing(), series.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(mask.GetDirection(), series.GetDirection(), atol=1e-4)


def test_an_exported_model_predicts_the_same_after_install_elsewhere(demo_model, tmp_path):
    from autouad.inference.archive import ModelArchiveError, read_archive

    archive = api.export_model(999, tmp_path / "model.zip", model_folder=demo_model["model_folder"],
                               results_folder=demo_model["results_folder"])
    installed = api.install_model(archive, results_folder=tmp_path / "elsewhere")
    assert installed == tmp_path / "elsewhere" / DATASET
    with pytest.raises(ModelArchiveError, match="already exists"):
        api.install_model(archive, results_folder=tmp_path / "elsewhere")
    raw = demo_model["raw"]
    for model, out in ((installed / demo_model["model_folder"].name, "installed"), (archive, "zip")):
        run = api.predict(raw / "imagesTs", tmp_path / out, model, roi_folder=raw / "roisTs", device="cpu")
        for case in run.record["cases"]:
            a = sitk.ReadImage(str(tmp_path / out / f"{case}.nii.gz"))
            b = sitk.ReadImage(str(demo_model["run"].output_folder / f"{case}.nii.gz"))
            assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)), (out, case)

    import hashlib
    import zipfile

    def rewrite(name: str, entries: dict[str, bytes], fix_manifest: bool = True) -> Path:
        target = tmp_path / name
        manifest = json.loads(entries["manifest.json"])
        if fix_manifest:
            manifest["files"] = {k: hashlib.sha256(v).hexdigest() for k, v in entries.items() if k != "manifest.json"}
        with zipfile.ZipFile(target, "w") as z:
            z.writestr("manifest.json", json.dumps(manifest))
            for k, v in entries.items():
                if k != "manifest.json":
                    z.writestr(k, v)
        return target

    with zipfile.ZipFile(archive) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    escaping = dict(entries, **{"../outside.txt": b"x"})
    with pytest.raises(ModelArchiveError, match="would leave the model's folder"):
        read_archive(rewrite("escape.zip", escaping))
    model_pt = next(n for n in entries if n.endswith("model.pt"))
    data = entries[model_pt]
    tampered = dict(entries, **{model_pt: data[:1000] + bytes([data[1000] ^ 1]) + data[1001:]})
    with pytest.raises(ModelArchiveError, match="does not match its SHA-256"):
        read_archive(rewrite("tampered.zip", tampered, fix_manifest=False))
    import io
    buffer = io.BytesIO()
    torch.save({"networks": {}, "payload": Path("/")}, buffer)   # needs pickle to load a Path
    with pytest.raises(ModelArchiveError, match="does not load as weights only"):
        read_archive(rewrite("pickled.zip", dict(entries, **{model_pt: buffer.getvalue()})))
