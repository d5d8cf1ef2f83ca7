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
