"""Does a side chosen per fold on its labelled validation images rescue a method whose folds flip?
An analysis for issue 26 (ASC-Net on Kermany); its ``pipeline`` row measures the pipeline feature
built from it.

ASC-Net's I_ro falls into a few intensity clusters, and which cluster ends up brighter differs from
run to run; on Kermany a fold's labelled validation images (the ``train`` folder) then rank
pneumonia *below* normal by every image score (AUROC 0.21 for the mean in one fold of 2026-12-07)
while the other fold ranks them above (0.72). The pipeline fixes the anomalous side once, from the
fingerprint, for every fold. This script measures, on Kermany's 624 test X-rays, what each fold's
own choice of (image score, side) by its validation AUROC would give; here the "flipped" side is the
score negated (AUROC 1 - a, no map recomputed), where the pipeline scores the negated map instead:

* ``as_predicted``: the folds as calibrated in the work folder, predicted by the current
  AnomalyPredictor (for folds calibrated before 2026-12-07 evening: one shared image score and side,
  raw scores; the benchmark's row, as a check);
* per fold: the test AUROC of the fold's own validation-chosen (score, side);
* ``folds_by_rank``: the folds' signed scores combined by the mean of their ranks over the test
  images. The ranks use no labels, but they read the whole test set at once, which a predictor that
  scores one image at a time cannot;
* ``pipeline``: what autouad_predict gives since 2026-12-07 (evening): each fold recalibrated from
  its saved validation maps (autouad.calibration.thresholds.fold_threshold, in memory; the work
  folder is not changed), so that it keeps its normal scale and, for ASC-Net, chooses its own score,
  side (the other side: the scores of the negated map) and direction, and the test images predicted by
  AnomalyPredictor.predict_folder (the folds' scaled scores averaged image by image,
  autouad.inference.predictor.FoldImageScore).

The choice reads only the validation AUROCs the folds' calibration stored in threshold.json; the
test labels only score it.

    python benchmarks/fold_side.py --work <quality.py work folder> --methods ascnet \\
        --results benchmarks/results/fold_side_kermany_<date>.json
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from image_scores import fold_test_scores  # noqa: E402  (after the sys.path lines)
from quality import KERMANY, dataset_folder, model_folder  # noqa: E402


def ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values)) / max(len(values) - 1, 1)


def recalibrated(work: Path, predictor):
    """A predictor of the same folds, each recalibrated in memory from its saved validation maps
    (``predictor``'s models get the new thresholds too; nothing is written)."""
    from autouad.calibration.thresholds import fold_threshold, load_validation_maps
    from autouad.inference.predictor import AnomalyPredictor

    for model in predictor.models:
        fold_folder = model_folder(work, KERMANY["id"], model.method) / f"fold_{model.fold}"
        cases = load_validation_maps(fold_folder, work / "preprocessed" / model.plans.dataset / model.plans.preprocessing.data_folder,
                                     model.dataset.modality)
        model.threshold = fold_threshold(fold_folder, model.plans, cases, model.trainer.histogram_range)
    return AnomalyPredictor(predictor.models, source=predictor.source)


def predicted_scores(predictor, images: Path, names: list[str]) -> np.ndarray:
    """Each test image's score as autouad_predict gives it (predict_folder into a temporary folder)."""
    with tempfile.TemporaryDirectory() as out:
        predicted = predictor.predict_folder(images, Path(out) / "predictions")["cases"]
    return np.array([predicted[n]["score"] for n in names])


def method_row(work: Path, method: str, folds: list[int]) -> dict:
    from autouad.evaluation.evaluator import read_reference_labels
    from autouad.evaluation.metrics import roc_auc
    from autouad.inference.predictor import AnomalyPredictor

    predictor = AnomalyPredictor.from_folder(model_folder(work, KERMANY["id"], method), folds, device="cpu")
    raw = dataset_folder(work / "raw", KERMANY["id"])
    start = time.perf_counter()
    per_fold = fold_test_scores(predictor, raw / "imagesTs")
    labels = read_reference_labels(raw / "dataset.json", set(per_fold[0]["mean"]))
    names = sorted(labels)
    truth = [labels[n] for n in names]

    def vector(fold: int, how: str) -> np.ndarray:
        return np.array([per_fold[fold][how][n] for n in names])

    # the folds as calibrated in the work folder, predicted by today's predictor
    as_predicted = predicted_scores(predictor, raw / "imagesTs", names)
    row = {"as_predicted": {"image_score": predictor.image_score, "test_auroc": roc_auc(as_predicted, truth)},
           "folds": {}}
    signed_ranks = []
    for index, (fold, model) in enumerate(zip(folds, predictor.models)):
        by_score = model.threshold.image["by_image_score"]
        validation = {how: by_score[how]["validation_auroc"] for how in by_score}
        # the (score, side) whose validation AUROC is furthest from chance on the side it points to
        how = max(validation, key=lambda h: abs(validation[h] - 0.5))
        sign = 1 if validation[how] >= 0.5 else -1
        scored = sign * vector(index, how)
        signed_ranks.append(ranks(scored))
        row["folds"][str(fold)] = {
            "validation_auroc": validation, "chosen": how, "side": "declared" if sign > 0 else "flipped",
            "chosen_validation_auroc": max(validation[how], 1 - validation[how]),
            "test_auroc_declared_side": {h: roc_auc(vector(index, h), truth) for h in validation},
            "test_auroc_chosen": roc_auc(scored, truth)}
    row["folds_by_rank"] = {"test_auroc": roc_auc(np.mean(signed_ranks, axis=0), truth)}
    pipeline = recalibrated(work, predictor)
    scores = predicted_scores(pipeline, raw / "imagesTs", names)
    row["pipeline"] = {"image_score": pipeline.image_score, "reason": pipeline.image_score_reason,
                       "image_threshold": pipeline.image_threshold, "test_auroc": roc_auc(scores, truth),
                       "test_flagged": float(np.mean(scores >= pipeline.image_threshold))}
    row.update(test_images=len(names), seconds=round(time.perf_counter() - start, 1))
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a benchmarks/quality.py work folder")
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--results", type=Path, required=True)
    args = parser.parse_args(argv)
    from autouad.utils.files import load_json, save_json
    from autouad.utils.machine import machine_description

    record = load_json(args.results) if args.results.is_file() else {"methods": {}}
    command = " ".join(["python", "benchmarks/fold_side.py", *(argv if argv is not None else sys.argv[1:])])
    for method in args.methods:
        row = method_row(args.work.resolve(), method, args.folds)
        # one row per work folder and method: several runs' folds side by side
        record["methods"][f"{args.work.resolve().name}/{method}"] = dict(
            row, work=str(args.work.resolve()), command=command, machine=machine_description(),
            measured=time.strftime("%Y-%m-%d %H:%M"))
        save_json(record, args.results)
        print(f"{method}: as predicted ({row['as_predicted']['image_score']}) {row['as_predicted']['test_auroc']:.3f}; "
              + "; ".join(f"fold {f}: {r['chosen']} {r['side']} (validation {r['chosen_validation_auroc']:.3f}) "
                          f"test {r['test_auroc_chosen']:.3f}" for f, r in row["folds"].items())
              + f"; folds by rank {row['folds_by_rank']['test_auroc']:.3f}"
              + f"; pipeline ({row['pipeline']['image_score']}) {row['pipeline']['test_auroc']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
