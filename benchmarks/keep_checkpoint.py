"""The kept (best-point) checkpoint against the final one, on cases the choice did not see labelled.

    python benchmarks/keep_checkpoint.py [--dataset kermany|brats] [--keep best_validation|best_proxy]
                                         [--methods ascnet draem ...] [--folds 0 1] [--work DIR]
                                         [--output benchmarks/results/keep_checkpoint_<dataset>.json]

Each method's folds are trained as benchmarks/quality.py trains them (the planner's plans, the
`fast` schedule, its 8-minute budget) but with ``keep_checkpoint=<keep>``: the networks at the best
point of the fold's curve stand for the fold. ``best_validation`` chooses by the labelled probe
(image AUROC of a few of the fold's validation X-rays); ``best_proxy`` label-free, by how well the
model finds blobs pasted into a fixed draw of validation slices. Then the held-out cases are
predicted twice: with the kept networks (model.pt) and with the networks the schedule ended with
(checkpoint_final.pt).

* Kermany (default): the 624 test X-rays (Kermany's `test` folder, which neither the curve nor any
  cut sees), fold-averaged; image AUROC.
* BraTS-6 (``--dataset brats``, ``best_proxy`` only): each fold's model predicts its held-out
  patients, as in benchmarks/quality.py; pooled and per-case pixel AUROC and the best-possible Dice
  (one cut for all six patients, the oracle bound; no cut calibrated on masks is involved). A
  labelled choice is refused here: the held-out patients are the folds' validation cases, so it
  would be chosen on the test masks; the proxy reads none.

Resumable: a second run with the same --work reuses trained folds and finished predictions.
Rows go to --output as they are measured.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.quality import (BRATS, KERMANY, convert, fold_complete, fold_split, input_cases,  # noqa: E402
                                merge_predictions, model_folder, pixel_row, plan_and_preprocess)


def training_log(fold_folder: Path) -> dict | None:
    path = fold_folder / "training_log.json"
    return json.loads(path.read_text()) if path.is_file() else None


def curve(fold_folder: Path) -> dict:
    events = training_log(fold_folder)["events"]
    out = {f"{name}_curve": [[e["step"], e["value"]] for e in events if e["event"] == name]
           for name in ("validation", "proxy")}
    out["kept"] = next((e for e in events if e["event"] == "kept checkpoint"), None)
    return {k: v for k, v in out.items() if v}


def kermany_scores(work: Path, raw: Path, folder: Path, folds: list[int], which: str) -> dict:
    """Test AUROC of the fold-averaged prediction of Kermany's test X-rays."""
    from autouad import api
    from autouad.evaluation.evaluator import evaluate_folders
    from autouad.inference.predictor import AnomalyPredictor
    from autouad.model import CHECKPOINT_FINAL, AnomalyModel

    out = work / "predictions" / folder.name / which
    done = out.with_suffix(".done")  # beside the folder: the evaluator reads everything inside it
    if not done.is_file():
        if which == "kept":  # model.pt holds the kept networks
            api.predict(raw / "imagesTs", out, folder, folds=folds, resume=out.is_dir())
        else:
            models = [AnomalyModel.from_fold_folder(folder / f"fold_{f}", "cpu", CHECKPOINT_FINAL) for f in folds]
            AnomalyPredictor(models, source=folder).predict_folder(raw / "imagesTs", out, None, False,
                                                                   resume=out.is_dir())
        done.touch()
    return {"test_auroc": round(float(evaluate_folders(raw / "dataset.json", out)["image"]["auroc"]), 4)}


def brats_scores(work: Path, raw: Path, folder: Path, folds: list[int], which: str) -> dict:
    """Pixel AUROC (pooled and per case) and best-possible Dice of the held-out patients, each
    predicted by the fold that held it out."""
    from autouad.evaluation.evaluator import evaluate_folders
    from autouad.inference.predictor import AnomalyPredictor
    from autouad.model import CHECKPOINT_FINAL, AnomalyModel

    parts = []
    for fold in folds:
        out = work / "predictions" / folder.name / which / f"fold_{fold}"
        done = out.with_suffix(".done")
        if not done.is_file():
            if which == "kept":
                predictor = AnomalyPredictor.from_folder(folder, [fold])
            else:
                model = AnomalyModel.from_fold_folder(folder / f"fold_{fold}", "cpu", CHECKPOINT_FINAL)
                predictor = AnomalyPredictor([model], source=folder)
            predictor.predict_cases(input_cases(raw, fold_split(work, BRATS["id"], fold)["val"]), out, save_maps=True)
            done.touch()
        parts.append(out)
    merged = merge_predictions(parts, work / "predictions" / folder.name / which / "cross_validation")
    row = pixel_row(evaluate_folders(raw / "masksTr", merged))
    def rounded(value):
        return None if value is None else round(float(value), 4)
    return {"pooled_auroc": rounded(row["pooled_auroc"]), "per_case_auroc_mean_std": [rounded(v) for v in row["auroc"]],
            "best_possible_dice": rounded(row["best_possible_dice"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["kermany", "brats"], default="kermany")
    parser.add_argument("--keep", choices=["best_validation", "best_proxy"], default=None,
                        help="default: best_validation on Kermany, best_proxy on BraTS-6")
    parser.add_argument("--methods", nargs="+", default=["ascnet"])
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--work", type=Path, default=Path("autouad_keep_checkpoint"))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    keep = args.keep or ("best_validation" if args.dataset == "kermany" else "best_proxy")
    if args.dataset == "brats" and keep == "best_validation":
        parser.error("--keep best_validation on BraTS-6 would choose on the masks of the patients it is scored on")
    spec, num_folds, scores = {"kermany": (KERMANY, None, kermany_scores), "brats": (BRATS, 2, brats_scores)}[args.dataset]
    output = args.output or REPO / "benchmarks" / "results" / f"keep_checkpoint_{args.dataset}.json"
    from autouad import api
    from autouad.utils.files import save_json
    from autouad.utils.machine import machine_description

    work = args.work.resolve()
    for kind in ("raw", "preprocessed", "results"):
        (work / kind).mkdir(parents=True, exist_ok=True)
    raw = convert(spec, work)
    rows = json.loads(output.read_text()) if output.is_file() else {}
    rows["machine"] = machine_description("cpu")
    command = "python benchmarks/keep_checkpoint.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for method in args.methods:
        start = time.perf_counter()
        plan_and_preprocess(work, spec["id"], method, "fast", num_folds)
        folder = model_folder(work, spec["id"], method)
        for fold in args.folds:
            fold_folder = folder / f"fold_{fold}"
            log = training_log(fold_folder)
            trained_with = (log.get("schedule") or {}).get("keep_checkpoint", "final") if log else keep
            if trained_with != keep:  # a work folder holds one mode's folds and predictions
                raise SystemExit(f"{fold_folder}: trained with keep_checkpoint={trained_with}, not {keep}; "
                                 f"choose another --work")
            if not fold_complete(fold_folder):
                api.train(spec["id"], fold, method, overrides={"keep_checkpoint": keep},
                          continue_training=(fold_folder / "checkpoint_latest.pt").is_file(),
                          preprocessed_folder=work / "preprocessed", results_folder=work / "results")
        row = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "keep": keep, "folds": {}}
        for which in ("kept", "final"):
            row[which] = scores(work, raw, folder, args.folds, which)
        for fold in args.folds:
            row["folds"][fold] = curve(folder / f"fold_{fold}")
        row["wall_minutes_this_run"] = round((time.perf_counter() - start) / 60, 1)
        rows[method if keep == "best_validation" else f"{method} ({keep})"] = row
        save_json(rows, output)
        print(f"{method}: kept networks {row['kept']}; final networks {row['final']}; written to {output}")
    print(f"reproduce: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
