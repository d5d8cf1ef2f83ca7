"""Evaluation: the metrics against hand counts and brute-force loops, the evaluator on small prediction
folders written with SimpleITK, and autouad_evaluate's exit codes and messages."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from autouad.cli.evaluate import main
from autouad.evaluation.evaluator import (EvaluationError, evaluate_folders, format_summary_table,
                                          read_reference_labels)
from autouad.evaluation.metrics import (average_precision, best_mean_dice, candidate_thresholds,
                                        counts_at_thresholds, dice, dice_at_thresholds, image_level_metrics,
                                        mean_std, pool_values, roc_auc)

SHAPE = (4, 16, 16)


# ---------------------------------------------------------------- brute-force references


def brute_roc_auc(scores, labels):
    positives = [s for s, y in zip(scores, labels) if y]
    negatives = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives))
    return wins / (len(positives) * len(negatives))


def brute_counts(scores, labels, threshold):
    tp = sum(1 for s, y in zip(scores, labels) if s >= threshold and y)
    fp = sum(1 for s, y in zip(scores, labels) if s >= threshold and not y)
    fn = sum(1 for s, y in zip(scores, labels) if s < threshold and y)
    return tp, fp, fn


def brute_average_precision(scores, labels):
    num_positive = sum(bool(y) for y in labels)
    total, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        tp, fp, _ = brute_counts(scores, labels, threshold)
        recall = tp / num_positive
        total += (recall - previous_recall) * tp / (tp + fp)
        previous_recall = recall
    return total


def brute_dice(scores, labels, threshold):
    tp, fp, fn = brute_counts(scores, labels, threshold)
    return 1.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def random_case(rng, n=None):
    n = int(rng.integers(2, 40)) if n is None else n
    return rng.integers(0, 6, n).astype(float), rng.random(n) < 0.35


# ---------------------------------------------------------------- metrics


def test_dice_by_hand():
    reference = np.zeros((3, 4), bool)
    reference[0, :2] = True
    prediction = np.zeros((3, 4), bool)
    prediction[0, 1:4] = True
    assert dice(prediction, reference) == pytest.approx(2 * 1 / (3 + 2))
    assert dice(np.zeros(5, bool), np.zeros(5, bool)) == 1.0
    assert dice(np.ones(5, bool), np.zeros(5, bool)) == 0.0
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((2, 2)), np.zeros(4))


def test_roc_auc_and_average_precision_by_hand():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert roc_auc(scores, labels) == pytest.approx(0.75)
    assert average_precision(scores, labels) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # Tied scores form one threshold: (1, 1) gives P = 1/2 at R = 1/2, then P = 2/3 at R = 1.
    assert average_precision([1, 1, 0], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert roc_auc([1, 1], [0, 1]) == 0.5
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1])) and math.isnan(roc_auc([0.1, 0.2], [0, 0]))
    assert math.isnan(average_precision([0.1, 0.2], [0, 0]))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([np.nan, 1.0], [0, 1])


def test_metrics_match_brute_force_loops_on_random_data_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(60):
        scores, labels = random_case(rng)
        if labels.any() and not labels.all():
            assert roc_auc(scores, labels) == pytest.approx(brute_roc_auc(scores, labels), abs=1e-12)
        if labels.any():
            assert average_precision(scores, labels) == pytest.approx(brute_average_precision(scores, labels), abs=1e-12)
        thresholds = np.array([-1.0, 0.0, 0.5, 2.0, 3.0, 5.0, 5.5])
        tp, fp, fn = counts_at_thresholds(scores, labels, thresholds)
        assert list(zip(tp, fp, fn)) == [brute_counts(scores, labels, t) for t in thresholds]
        assert dice_at_thresholds(scores, labels, thresholds) == pytest.approx(
            [brute_dice(scores, labels, t) for t in thresholds])


def test_metrics_match_sklearn_when_available():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for _ in range(30):
        scores, labels = random_case(rng, 200)
        scores = scores + rng.integers(0, 2, scores.size) * 0.5  # ties and non-ties
        assert roc_auc(scores, labels) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)
        assert average_precision(scores, labels) == pytest.approx(
            sklearn_metrics.average_precision_score(labels, scores), abs=1e-12)


def test_candidate_thresholds_few_and_many_values():
    few = candidate_thresholds([np.array([3.0, 1.0, 1.0]), np.array([2.0])])
    assert list(few[:3]) == [1.0, 2.0, 3.0] and len(few) == 4 and few[3] > 3.0
    many_scores = [np.random.default_rng(2).random(5000).astype(np.float32)]
    many = candidate_thresholds(many_scores, max_candidates=64)
    assert len(many) <= 64 and np.all(np.diff(many) > 0)
    assert many[0] == many_scores[0].min()
    # The extra cut predicts nothing, also when compared in float32.
    assert counts_at_thresholds(many_scores[0], np.ones(5000, bool), many[-1:])[0][0] == 0
    assert np.float32(many[-1]) > many_scores[0].max()


def test_best_mean_dice_matches_brute_force_over_thresholds_and_cases():
    rng = np.random.default_rng(3)
    cases = [random_case(rng) for _ in range(5)]
    threshold, mean_dice = best_mean_dice(cases)
    candidates = sorted({float(s) for scores, _ in cases for s in scores}) + [1e9]
    brute = [np.mean([brute_dice(s, y, t) for s, y in cases]) for t in candidates]
    assert mean_dice == pytest.approx(max(brute))
    assert threshold == candidates[int(np.argmax(brute))]
    with pytest.raises(ValueError):
        best_mean_dice([])


def test_image_level_metrics_by_hand_and_without_positive_decisions():
    metrics = image_level_metrics([0.1, 0.6, 0.4, 0.9], [0, 0, 1, 1], [0, 1, 0, 1])
    assert (metrics["tp"], metrics["fp"], metrics["tn"], metrics["fn"]) == (1, 1, 1, 1)
    for key in ("precision", "recall", "specificity", "f1", "accuracy"):
        assert metrics[key] == 0.5
    assert metrics["auroc"] == 0.75 and metrics["average_precision"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert metrics["num_images"] == 4 and metrics["num_abnormal"] == 2
    nothing_flagged = image_level_metrics([0.1, 0.2], [0, 1], [0, 0])
    assert nothing_flagged["precision"] == 0.0 and nothing_flagged["f1"] == 0.0 and nothing_flagged["recall"] == 0.0


def test_mean_std_ignores_nan_and_uses_population_std():
    assert mean_std([1.0, 2.0, float("nan"), None]) == {"mean": 1.5, "std": 0.5, "n": 2}
    empty = mean_std([float("nan")])
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["std"])


def test_pool_values_subsamples_evenly_and_keeps_pairs():
    arrays = [np.arange(10), np.arange(10, 25)]
    assert list(pool_values(arrays)) == list(range(25))
    sample = pool_values(arrays, max_values=5)
    assert list(sample) == [0, 5, 10, 15, 20]
    assert list(pool_values([a * 2 for a in arrays], max_values=5)) == [2 * v for v in sample]


# ---------------------------------------------------------------- prediction folders


def write(array: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))


def block(slices, rows, columns) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[slices, rows, columns] = 1
    return mask


# case_a: 32 reference voxels, 32 predicted, 16 shared -> Dice 0.5
# case_b: nothing anywhere -> Dice 1.0
# case_c: 3 reference voxels, 3 predicted, 1 shared -> Dice 1/3
REFERENCES = {"case_a": block(slice(1, 3), slice(4, 8), slice(4, 8)),
              "case_b": np.zeros(SHAPE, np.uint8),
              "case_c": block(2, 10, slice(10, 13))}
PREDICTIONS = {"case_a": block(slice(1, 3), slice(4, 8), slice(6, 10)),
               "case_b": np.zeros(SHAPE, np.uint8),
               "case_c": block(2, 10, slice(12, 15))}
EXPECTED_DICE = {"case_a": 0.5, "case_b": 1.0, "case_c": 1 / 3}


def anomaly_map(reference: np.ndarray, seed: int) -> np.ndarray:
    """Higher inside the anomaly, noisy, on a 0.05 grid (few distinct values, so every one of
    them is a candidate threshold)."""
    noise = np.random.default_rng(seed).random(SHAPE)
    return (np.round((0.5 * reference + 0.7 * noise) * 20) / 20).astype(np.float32)


@pytest.fixture
def folders(tmp_path):
    """REF with case_a..c and case_missing (no prediction); PRED with case_a..c, a stray
    prediction without reference and a non-image file."""
    reference, predictions = tmp_path / "REF", tmp_path / "PRED"
    for case_id, mask in REFERENCES.items():
        write(mask, reference / f"{case_id}.nii.gz")
        write(PREDICTIONS[case_id], predictions / f"{case_id}.nii.gz")
    write(np.zeros(SHAPE, np.uint8), reference / "case_missing.nii.gz")
    write(np.ones(SHAPE, np.uint8), predictions / "stray.nii.gz")
    (predictions / "notes.txt").write_text("not an image")
    return reference, predictions


def add_maps(predictions, maps: dict[str, np.ndarray], side: str | None) -> None:
    for case_id, values in maps.items():
        write(values, predictions / "maps" / f"{case_id}.nii.gz")
    if side is not None:
        (predictions / "predictions.json").write_text(json.dumps({"anomalous_side": side}))


def test_dice_from_files_equals_hand_count_and_summary_lands_in_predictions(folders):
    reference, predictions = folders
    summary = evaluate_folders(reference, predictions)
    assert set(summary["cases"]) == set(EXPECTED_DICE) and summary["num_cases"] == 3
    assert summary["missing"] == ["case_missing"]
    for case_id, expected in EXPECTED_DICE.items():
        assert summary["cases"][case_id]["dice"] == pytest.approx(expected)
    assert summary["cases"]["case_a"]["reference_voxels"] == 32 and summary["cases"]["case_c"]["predicted_voxels"] == 3
    # subject-wise means run over the cases with anomalies; case_b (empty reference) reports what got flagged
    values = [EXPECTED_DICE["case_a"], EXPECTED_DICE["case_c"]]
    assert summary["pixel"]["dice"] == pytest.approx({"mean": np.mean(values), "std": np.std(values), "n": 2})
    without = summary["pixel"]["cases_without_anomaly"]
    assert (without["n"], without["with_flagged_voxels"], without["flagged_fraction"]["mean"]) == (1, 0, 0.0)
    pixel = summary["pixel"]
    assert pixel["dice_without_postprocessing"] is None and pixel["auroc"] is None and pixel["best_possible_dice"] is None
    assert summary["image"] is None
    assert json.loads((predictions / "summary.json").read_text()) == summary
    assert not (reference / "summary.json").exists()
    assert "Dice" in format_summary_table(summary) and "case_missing" in format_summary_table(summary)


def test_without_postprocessing_masks_are_evaluated(folders):
    reference, predictions = folders
    for case_id, mask in REFERENCES.items():
        write(mask, predictions / "without_postprocessing" / f"{case_id}.nii.gz")  # perfect before post-processing
    summary = evaluate_folders(reference, predictions)
    assert summary["pixel"]["dice_without_postprocessing"] == {"mean": 1.0, "std": 0.0, "n": 2}
    assert summary["cases"]["case_a"]["dice_without_postprocessing"] == 1.0
    assert summary["cases"]["case_a"]["dice"] == 0.5


def test_maps_with_side_below_equal_negated_maps_with_side_above(folders, tmp_path):
    reference, predictions = folders
    maps = {case_id: anomaly_map(mask, seed) for seed, (case_id, mask) in enumerate(REFERENCES.items())}
    add_maps(predictions, maps, None)  # no predictions.json: "above"
    above = evaluate_folders(reference, predictions, output=tmp_path / "above.json")
    add_maps(predictions, {case_id: -values for case_id, values in maps.items()}, "below")
    below = evaluate_folders(reference, predictions, output=tmp_path / "below.json")
    for case_id in ("case_a", "case_c"):
        assert above["cases"][case_id]["auroc"] == pytest.approx(below["cases"][case_id]["auroc"])
        assert above["cases"][case_id]["average_precision"] == pytest.approx(below["cases"][case_id]["average_precision"])
        expected = roc_auc(maps[case_id], REFERENCES[case_id])
        assert above["cases"][case_id]["auroc"] == pytest.approx(expected)
    # A case without anomaly has no AUROC / AP: None in the summary, left out of the mean.
    assert above["cases"]["case_b"]["auroc"] is None and above["pixel"]["auroc"]["n"] == 2
    for key in ("pooled_auroc", "pooled_average_precision"):
        assert above["pixel"][key] == pytest.approx(below["pixel"][key])
    best_above, best_below = above["pixel"]["best_possible_dice"], below["pixel"]["best_possible_dice"]
    assert best_above["mean_dice"] == pytest.approx(best_below["mean_dice"])
    assert best_below["threshold"] == pytest.approx(-best_above["threshold"]) and best_below["anomalous_side"] == "below"
    assert "reference labels" in best_above["note"]
    assert above["pixel"]["pooled_auroc"] > 0.8  # the maps are informative


def test_best_possible_dice_is_at_least_the_dice_at_any_single_threshold(folders):
    reference, predictions = folders
    maps = {case_id: anomaly_map(mask, 10 + seed) for seed, (case_id, mask) in enumerate(REFERENCES.items())}
    add_maps(predictions, maps, "above")
    best = evaluate_folders(reference, predictions)["pixel"]["best_possible_dice"]
    abnormal = [c for c in REFERENCES if REFERENCES[c].any()]  # the subject-wise mean runs over these
    for threshold in np.arange(-0.05, 1.3, 0.05):
        mean_at_threshold = np.mean([dice(maps[c] >= threshold, REFERENCES[c]) for c in abnormal])
        assert best["mean_dice"] >= mean_at_threshold - 1e-12
    at_best = np.mean([dice(maps[c] >= best["threshold"], REFERENCES[c]) for c in abnormal])
    assert at_best == pytest.approx(best["mean_dice"])


def test_roi_restricts_auroc(folders, tmp_path):
    reference, predictions = folders
    case_id, mask = "case_a", REFERENCES["case_a"]
    perfect_inside = mask.astype(np.float32)
    perfect_inside[0] = 5.0  # slice 0 (outside the ROI) holds normal voxels scored above the anomaly
    add_maps(predictions, {case_id: perfect_inside}, "above")
    roi = np.ones(SHAPE, np.uint8)
    roi[0] = 0
    only_case_a = tmp_path / "REF_a"
    write(mask, only_case_a / "case_a.nii.gz")
    whole_image = evaluate_folders(only_case_a, predictions)
    write(roi, tmp_path / "ROI" / "case_a.nii.gz")
    with_roi_folder = evaluate_folders(only_case_a, predictions, roi_folder=tmp_path / "ROI")
    write(roi, predictions / "rois" / "case_a.nii.gz")
    with_prediction_rois = evaluate_folders(only_case_a, predictions)
    assert whole_image["cases"][case_id]["auroc"] < 0.8
    assert with_roi_folder["cases"][case_id]["auroc"] == 1.0 and with_prediction_rois["cases"][case_id]["auroc"] == 1.0
    assert with_roi_folder["pixel"]["best_possible_dice"]["mean_dice"] == 1.0
    write(roi, tmp_path / "ROI_other" / "case_b.nii.gz")
    with pytest.raises(EvaluationError, match="ROI_other: no region of interest for case case_a"):
        evaluate_folders(only_case_a, predictions, roi_folder=tmp_path / "ROI_other")


def test_shape_mismatch_names_both_files(folders):
    reference, predictions = folders
    write(np.zeros((4, 16, 15), np.uint8), predictions / "case_c.nii.gz")
    with pytest.raises(EvaluationError) as error:
        evaluate_folders(reference, predictions)
    message = str(error.value)
    assert message.startswith(f"{predictions / 'case_c.nii.gz'}: shape (4, 16, 15) differs from reference")
    assert str(reference / "case_c.nii.gz") in message and "\n" not in message


def test_no_matching_case_is_an_error(folders, tmp_path):
    reference, _ = folders
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    with pytest.raises(EvaluationError, match="no prediction for any of the 4 reference cases"):
        evaluate_folders(reference, empty)


def write_scores(predictions, rows) -> None:
    predictions.mkdir(parents=True, exist_ok=True)
    lines = ["case,score,threshold,decision"] + [f"{c},{s},0.5,{d}" for c, s, d in rows]
    (predictions / "scores.csv").write_text("\n".join(lines) + "\n")


SCORE_ROWS = [("x1", 0.1, 0), ("x2", 0.6, 1), ("x3", 0.4, 0), ("x4", 0.9, 1), ("x6", 0.3, 0)]


def check_hand_counted_image_metrics(summary):
    image = summary["image"]
    assert (image["tp"], image["fp"], image["tn"], image["fn"]) == (1, 1, 1, 1)
    assert image["auroc"] == 0.75 and image["precision"] == 0.5
    assert summary["missing"] == ["x5"] and image["cases_without_label"] == ["x6"]
    assert summary["pixel"] is None and summary["num_cases"] == 4
    assert summary["cases"]["x4"] == {"label": 1, "score": 0.9, "decision": 1}


def test_image_level_from_scores_csv_and_labels_csv(tmp_path):
    predictions = tmp_path / "PRED"
    write_scores(predictions, SCORE_ROWS)
    labels = tmp_path / "labels.csv"
    labels.write_text("case,label\nx1,0\nx2,0\nx3,1\nx4,1\nx5,1\n")
    check_hand_counted_image_metrics(evaluate_folders(labels, predictions))
    assert "Image level (4 images, 2 abnormal)" in format_summary_table(evaluate_folders(labels, predictions))


def test_image_level_from_dataset_json(tmp_path):
    predictions = tmp_path / "PRED"
    write_scores(predictions, SCORE_ROWS)
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text(json.dumps({
        "name": "toy", "training": {"x1": {"role": "normal", "label": 0}, "x2": {"role": "unlabeled", "label": 0},
                                    "x6": {"role": "unlabeled"}},
        "test": {"x3": {"label": 1}, "x4": {"label": 1}, "x5": {"label": 1}}}))
    assert read_reference_labels(dataset_json) == {"x1": 0, "x2": 0, "x3": 1, "x4": 1, "x5": 1}
    check_hand_counted_image_metrics(evaluate_folders(dataset_json, predictions))


def test_bad_labels_files_name_the_file_and_line(tmp_path):
    bad_value = tmp_path / "labels.csv"
    bad_value.write_text("case,label\nx1,2\n")
    with pytest.raises(EvaluationError, match=r"labels.csv: line 2: '2' is not 0 or 1"):
        read_reference_labels(bad_value)
    bad_header = tmp_path / "other.csv"
    bad_header.write_text("id,y\nx1,1\n")
    with pytest.raises(EvaluationError, match="lacks column"):
        read_reference_labels(bad_header)


def test_2d_png_masks_with_image_level_labels_from_the_masks(tmp_path):
    reference, predictions = tmp_path / "REF", tmp_path / "PRED"
    abnormal = np.zeros((8, 8), np.uint8)
    abnormal[2:4, 2:4] = 255  # any value > 0 is anomaly
    write(abnormal, reference / "img1.png")
    write(np.zeros((8, 8), np.uint8), reference / "img2.png")
    predicted = np.zeros((8, 8), np.uint8)
    predicted[2:4, 2:3] = 1
    write(predicted, predictions / "img1.png")
    write(predicted, predictions / "img2.png")
    write_scores(predictions, [("img1", 0.8, 1), ("img2", 0.7, 1)])
    summary = evaluate_folders(reference, predictions)
    assert summary["cases"]["img1"]["dice"] == pytest.approx(2 * 2 / (4 + 2))
    assert summary["cases"]["img2"]["dice"] == 0.0
    image = summary["image"]
    assert (image["tp"], image["fp"], image["num_abnormal"], image["auroc"]) == (1, 1, 1, 1.0)
    assert summary["cases"]["img2"]["label"] == 0


# ---------------------------------------------------------------- command line


def one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_cli_prints_the_table_and_writes_summary(folders, capsys):
    reference, predictions = folders
    assert main(["-r", str(reference), "-p", str(predictions)]) == 0
    out = capsys.readouterr().out
    assert "Dice" in out and f"summary written to {predictions / 'summary.json'}" in out
    assert (predictions / "summary.json").is_file()


def test_cli_output_option_and_refusal_to_write_into_the_reference(folders, tmp_path, capsys):
    reference, predictions = folders
    assert main(["-r", str(reference), "-p", str(predictions), "-o", str(tmp_path / "out" / "s.json")]) == 0
    assert (tmp_path / "out" / "s.json").is_file() and not (predictions / "summary.json").exists()
    capsys.readouterr()
    assert main(["-r", str(reference), "-p", str(predictions), "-o", str(reference / "s.json")]) == 1
    one_line_error(capsys, "inside the reference folder")
    assert not (reference / "s.json").exists()


def test_cli_errors_are_one_line_with_exit_code_1(folders, tmp_path, capsys):
    reference, predictions = folders
    write(np.zeros((4, 16, 15), np.uint8), predictions / "case_c.nii.gz")
    assert main(["-r", str(reference), "-p", str(predictions)]) == 1
    one_line_error(capsys, "case_c.nii.gz: shape (4, 16, 15) differs from reference")
    assert main(["-r", str(tmp_path / "nowhere"), "-p", str(predictions)]) == 1
    one_line_error(capsys, "nowhere: no such reference folder or labels file")
    (predictions / "case_a.nii.gz").write_bytes(b"not an image")
    assert main(["-r", str(reference), "-p", str(predictions)]) == 1
    one_line_error(capsys, "case_a.nii.gz")
    labels = tmp_path / "labels.csv"
    labels.write_text("case,label\ncase_a,1\n")
    assert main(["-r", str(labels), "-p", str(predictions)]) == 1
    one_line_error(capsys, "scores.csv: not found")


def test_a_maps_folder_must_hold_every_evaluated_case(folders):
    reference, predictions = folders
    add_maps(predictions, {"case_a": anomaly_map(REFERENCES["case_a"], 0)}, "sideways")
    with pytest.raises(EvaluationError, match="predictions.json: anomalous_side 'sideways'"):
        evaluate_folders(reference, predictions)
    (predictions / "predictions.json").write_text(json.dumps({"anomalous_side": "below"}))
    with pytest.raises(EvaluationError, match="maps: no anomaly map for case case_b"):
        evaluate_folders(reference, predictions)
