"""The image score a method's folds choose on their labelled validation images, against every image
score on Kermany's 624 test X-rays (issue 26, point 4).

For each method trained by ``benchmarks/quality.py`` in a work folder, each fold's map of each test
image is reduced by every image score (autouad.selection.image_scores) and the folds' scores are
averaged, as autouad_predict scores an image; the table
gives each score's AUROC on the test images beside its mean AUROC on the folds' validation images
(Kermany's ``train`` folder, which the folds' calibration measured), the method's declared score
and the one prediction uses (autouad.inference.predictor.folds_image_score). The choice reads the
validation images only; the test AUROC of the other scores is reported to show what the choice
gained or lost, and chooses nothing.

Folds calibrated before the image scores were compared (no ``by_image_score`` in threshold.json)
are recalibrated first (``autouad_train --val``: their validation maps are exported again). A
method already in the results file is skipped (``--force`` measures it again), so an interrupted
run resumes.

    python benchmarks/image_scores.py --work <quality.py work folder> --methods twophase ascnet draem \\
        --results benchmarks/results/image_scores_kermany.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import KERMANY, dataset_folder, model_folder  # noqa: E402  (after the sys.path lines)


def recalibrate_if_needed(work: Path, method: str, folds: list[int]) -> None:
    from autouad import api
    from autouad.calibration.thresholds import THRESHOLD_FILE
    from autouad.utils.files import load_json

    for fold in folds:
        threshold = load_json(model_folder(work, KERMANY["id"], method) / f"fold_{fold}" / THRESHOLD_FILE)
        if "by_image_score" not in (threshold.get("image") or {}):
            print(f"{method} fold {fold}: calibrated before image scores were compared; recalibrating (--val)")
            api.train(KERMANY["id"], fold, method, validation_only=True, device="cpu",
                      preprocessed_folder=work / "preprocessed", results_folder=work / "results")


def fold_test_scores(predictor, images: Path) -> list[dict[str, dict[str, float]]]:
    """Per fold, {image score: {case: that fold's score of its own map}} of every image in ``images``,
    on the predictor's side."""
    from autouad.calibration.thresholds import side_sign
    from autouad.inference.inputs import find_input_cases
    from autouad.selection.image_scores import IMAGE_SCORES, image_score
    from autouad.utils.progress import progress

    cases, failed = find_input_cases(images, predictor.dataset.channel_names, None, predictor.plans.input_channels)
    if failed:
        raise SystemExit(f"{images}: cannot read {len(failed)} image(s), e.g. {next(iter(failed.values()))}")
    scores = [{how: {} for how in IMAGE_SCORES} for _ in predictor.models]
    sign = side_sign(predictor.side)
    with progress(total=len(cases), desc="test images", unit="image") as bar:
        for prepared, _ in predictor.prepared_chunks(cases, 256, failed):
            if not prepared:
                continue
            fold_maps = predictor.predict_fold_maps(np.concatenate([p.slices for p in prepared]))
            start = 0
            for case in prepared:
                for fold, maps in enumerate(fold_maps):
                    case_map = sign * maps[start:start + len(case.slices)]
                    for how in IMAGE_SCORES:
                        scores[fold][how][case.name] = image_score(case_map, case.region, how)
                start += len(case.slices)
                bar.update(1)
    return scores


def test_scores(predictor, images: Path) -> dict[str, dict[str, float]]:
    """{image score: {case: score}}: the mean of the folds' raw scores, as autouad_predict scored an
    image until 2026-12-07 (autouad.inference.predictor.folds_mean_image_score). autouad_predict now
    puts each fold on its normal scale first (FoldImageScore), which moved the whole run's Kermany
    AUROCs by 0.007 or less (docs/results.md); this benchmark keeps the raw mean so that its stored
    figures stay comparable."""
    per_fold = fold_test_scores(predictor, images)
    return {how: {case: float(np.mean([fold[how][case] for fold in per_fold])) for case in per_fold[0][how]}
            for how in per_fold[0]}


def method_row(work: Path, method: str, folds: list[int]) -> dict:
    from autouad.evaluation.evaluator import read_reference_labels
    from autouad.evaluation.metrics import roc_auc
    from autouad.inference.predictor import AnomalyPredictor, folds_validation_auroc
    from autouad.methods.registry import get_method

    recalibrate_if_needed(work, method, folds)
    predictor = AnomalyPredictor.from_folder(model_folder(work, KERMANY["id"], method), folds, device="cpu")
    raw = dataset_folder(work / "raw", KERMANY["id"])
    start = time.perf_counter()
    scores = test_scores(predictor, raw / "imagesTs")
    labels = read_reference_labels(raw / "dataset.json", set(next(iter(scores.values()))))
    names = sorted(labels)
    validation = folds_validation_auroc(predictor.models)
    if validation is None:
        raise SystemExit(f"{method}: its folds did not compare the image scores on labelled validation images "
                         f"({predictor.image_score_reason})")
    return {"declared": get_method(method).image_score, "chosen": predictor.image_score,
            "reason": predictor.image_score_reason,
            "validation_auroc": validation,
            "test_auroc": {how: roc_auc([s[n] for n in names], [labels[n] for n in names]) for how, s in scores.items()},
            "test_images": len(names), "folds": folds, "seconds": round(time.perf_counter() - start, 1)}


def markdown(rows: dict, machine: str) -> str:
    from autouad.selection.image_scores import IMAGE_SCORES
    lines = [f"Kermany test AUROC (624 images) of each image score of the same trained folds; measured on {machine}. "
             "validation: the mean over the folds of the AUROC on their labelled validation images, what the "
             "choice reads.", "",
             "| method | declared | chosen | " + " | ".join(f"{h}: validation / test" for h in IMAGE_SCORES) + " |",
             "|---" * (3 + len(IMAGE_SCORES)) + "|"]
    for method, r in rows.items():
        cells = [f"{r['validation_auroc'][h]:.3f} / {r['test_auroc'][h]:.3f}" for h in IMAGE_SCORES]
        lines.append(f"| {method} | {r['declared']} | **{r['chosen']}** | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a benchmarks/quality.py work folder")
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/image_scores_kermany.json"))
    parser.add_argument("--force", action="store_true", help="measure again the methods already in --results")
    args = parser.parse_args(argv)
    from autouad.utils.files import atomic_output, load_json, save_json
    from autouad.utils.machine import machine_description

    machine = machine_description("cpu")
    rows = load_json(args.results)["methods"] if args.results.is_file() else {}
    for method in args.methods:
        if method in rows and not args.force:
            print(f"{method}: already in {args.results} (--force measures it again)")
            continue
        rows[method] = dict(method_row(args.work, method, args.folds), machine=machine,
                            measured=time.strftime("%Y-%m-%d %H:%M"))
        save_json({"command": " ".join(["python", "benchmarks/image_scores.py", *sys.argv[1:]]), "methods": rows},
                  args.results)
        with atomic_output(args.results.with_suffix(".md")) as tmp:
            tmp.write_text(markdown(rows, machine), encoding="utf-8")
        print(markdown({method: rows[method]}, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
