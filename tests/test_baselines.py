"""The non-learned baselines against brute force."""
import json

import numpy as np
import pytest

from autouad.evaluation.baselines import knn_scores, shrink


def test_shrink_averages_areas_and_standardises():
    image = np.random.default_rng(0).random((64, 96))
    out = shrink(image, 32)
    blocks = image.reshape(32, 2, 32, 3).mean((1, 3))
    expected = (blocks - blocks.mean()) / blocks.std()
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert shrink(np.full((10, 10), 3.0), 4).tolist() == np.zeros((4, 4)).tolist()  # constant: no division by 0


def test_knn_scores_equal_brute_force():
    rng = np.random.default_rng(1)
    normal, queries = rng.normal(size=(50, 12)), rng.normal(size=(7, 12))
    for k in (1, 3):
        brute = [np.sort(np.linalg.norm(normal - q, axis=1))[:k].mean() for q in queries]
        np.testing.assert_allclose(knn_scores(normal, queries, k, chunk=3), brute, rtol=1e-9)
    assert knn_scores(normal, normal[:2], 1) == pytest.approx([0.0, 0.0], abs=1e-6)
    with pytest.raises(ValueError):
        knn_scores(normal, queries, 51)


def test_leave_one_out_scores_skip_only_the_image_itself():
    rng = np.random.default_rng(2)
    normal = rng.normal(size=(20, 6))
    normal[5] = normal[4]  # a duplicate is a real neighbour at distance 0, the image itself is not
    for k in (1, 2):
        brute = [np.sort(np.linalg.norm(np.delete(normal, i, 0) - x, axis=1))[:k].mean() for i, x in enumerate(normal)]
        np.testing.assert_allclose(knn_scores(normal, None, k, chunk=7), brute, rtol=1e-9, atol=1e-7)
    assert knn_scores(normal, None, 1)[4] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        knn_scores(normal, None, 20)


def test_knn_baseline_writes_a_prediction_folder_the_evaluator_scores(autouad_env, capsys):
    from autouad.cli.baseline import main
    from autouad.evaluation.evaluator import evaluate_folders
    from conftest import write_xray_dataset

    write_xray_dataset(7, "KnnXray", num_normal=8, unlabeled_abnormal=[True, False], num_test=6)
    raw = autouad_env["raw"] / "Dataset007_KnnXray"
    out = autouad_env["results"].parent / "knn"
    assert main(["knn", "-d", "7", "-o", str(out)]) == 0
    rows = (out / "scores.csv").read_text().splitlines()
    assert rows[0] == "case,score,threshold,decision" and len(rows) == 7
    record = json.loads((out / "predictions.json").read_text())
    assert record["num_normal_reference"] == 8 and record["num_predicted"] == 6
    summary = evaluate_folders(raw / "dataset.json", out)
    assert summary["image"]["num_images"] == 6
    # the output may not lie among the inputs
    assert main(["knn", "-d", "7", "-o", str(raw / "imagesTs" / "out")]) == 1
    assert "must not lie in the input folder" in capsys.readouterr().err


def test_intensity_baseline_marks_bright_anomalies_at_a_label_free_threshold(autouad_env):
    """Reference: a normal case and a patient whose tumour slice is excluded by the
    slices_without_anomaly protocol; scored: a case with a bright block. The mask is the block, the
    outputs have the input's geometry, and the evaluator's best-possible Dice is the oracle's."""
    import SimpleITK as sitk

    from autouad.dataset.raw_dataset import RawDatasetWriter, load_raw_dataset
    from autouad.evaluation.baselines import intensity_baseline_predictions
    from autouad.evaluation.evaluator import evaluate_folders

    rng = np.random.default_rng(3)
    shape = (6, 24, 20)
    brain = np.zeros(shape, np.uint8)
    brain[:, 3:21, 3:17] = 1

    def image(array):
        img = sitk.GetImageFromArray(array.astype(np.float32))
        img.SetSpacing((1.0, 1.2, 3.0))
        img.SetOrigin((5.0, -3.0, 2.0))
        return img

    def scan(block=None, value=0.0):
        array = (100 + 5 * rng.normal(size=shape)) * brain
        mask = np.zeros(shape, np.uint8)
        if block is not None:
            array[block] += value
            mask[block] = 1
        return array, mask

    tumour = (slice(2, 4), slice(8, 14), slice(6, 12))
    with RawDatasetWriter(8, "Flair", modality="MRI", channel_names={"0": "FLAIR"}, file_ending=".nii.gz",
                          normal_reference="slices_without_anomaly") as writer:
        normal, _ = scan()
        writer.add_case("normal", [image(normal)], role="normal", roi=image(brain))
        # the patient's tumour slices are 10x brighter than the test tumour: they must not set the threshold
        patient, patient_mask = scan((slice(1, 2), slice(5, 19), slice(4, 16)), 1000.0)
        writer.add_case("patient", [image(patient)], role="unlabeled", mask=image(patient_mask), roi=image(brain))
        test, test_mask = scan(tumour, 60.0)
        writer.add_case("test", [image(test)], split="test", mask=image(test_mask), roi=image(brain))
    raw = load_raw_dataset(autouad_env["raw"] / "Dataset008_Flair")
    out = autouad_env["results"].parent / "intensity"
    record = intensity_baseline_predictions(raw.test_cases(), raw.training_cases(), 0, out,
                                            normal_reference="slices_without_anomaly", percentile=99.9)
    mask = sitk.ReadImage(str(out / "test.nii.gz"))
    source = sitk.ReadImage(str(raw.folder / "imagesTs" / "test_0000.nii.gz"))
    for geometry in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(mask, geometry)() == getattr(source, geometry)(), geometry
    predicted = sitk.GetArrayFromImage(mask).astype(bool)
    assert predicted[tumour].all() and predicted.sum() < 1.05 * predicted[tumour].size
    assert record["threshold"] < 5  # standardised units: set by normal tissue, not by the patient's tumour
    summary = evaluate_folders(raw.folder / "masksTs", out)
    assert summary["pixel"]["dice"]["mean"] > 0.95
    assert summary["pixel"]["best_possible_dice"]["mean_dice"] >= summary["pixel"]["dice"]["mean"] - 1e-9
