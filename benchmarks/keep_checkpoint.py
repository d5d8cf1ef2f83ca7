"""The best-validation checkpoint against the final one, on Kermany's held-out test X-rays.

    python benchmarks/keep_checkpoint.py [--methods ascnet draem ...] [--folds 0 1] [--work DIR]
                                         [--output benchmarks/results/keep_checkpoint_kermany.json]

Each method's folds are trained as benchmarks/quality.py trains them (the planner's plans, the
`fast` schedule, its 8-minute budget) but with ``keep_checkpoint=best_validation``: the networks
at the best point of the fold's validation curve (image AUROC of a few of the fold's validation
X-rays, from Kermany's `train` folder) stand for the fold. Then the 624 test X-rays (Kermany's
`test` folder, which neither the curve nor any cut sees) are predicted twice, fold-averaged: with
those networks (model.pt) and with the networks the schedule ended with (checkpoint_final.pt).

Kermany only, by design: on BraTS-6 the benchmark's held-out patients are the folds' validation
cases, so a checkpoint chosen on their masks would be chosen on the test set.

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

from benchmarks.quality import KERMANY, convert, fold_complete, model_folder, plan_and_preprocess  # noqa: E402


def curve(fold_folder: Path) -> dict:
    events = json.loads((fold_folder / "training_log.json").read_text())["events"]
    points = [[e["step"], e["value"]] for e in events if e["event"] == "validation"]
    kept = next((e for e in events if e["event"] == "kept checkpoint"), None)
    return {"validation_curve": points, "kept": kept}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["ascnet"])
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--work", type=Path, default=Path("autouad_keep_checkpoint"))
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "keep_checkpoint_kermany.json")
    args = parser.parse_args(argv)
    import torch

    from autouad import api
    from autouad.evaluation.evaluator import evaluate_folders
    from autouad.inference.predictor import AnomalyPredictor
    from autouad.model import CHECKPOINT_FINAL, AnomalyModel
    from autouad.utils.files import save_json
    from autouad.utils.machine import processor_name

    work = args.work.resolve()
    for kind in ("raw", "preprocessed", "results"):
        (work / kind).mkdir(parents=True, exist_ok=True)
    raw = convert(KERMANY, work)
    labels = raw / "dataset.json"
    rows = json.loads(args.output.read_text()) if args.output.is_file() else {}
    rows["machine"] = f"{processor_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    command = "python benchmarks/keep_checkpoint.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for method in args.methods:
        start = time.perf_counter()
        plan_and_preprocess(work, KERMANY["id"], method, "fast", None)
        folder = model_folder(work, KERMANY["id"], method)
        for fold in args.folds:
            fold_folder = folder / f"fold_{fold}"
            if not fold_complete(fold_folder):
                api.train(KERMANY["id"], fold, method, overrides={"keep_checkpoint": "best_validation"},
                          continue_training=(fold_folder / "checkpoint_latest.pt").is_file(),
                          preprocessed_folder=work / "preprocessed", results_folder=work / "results")
        test_images = raw / "imagesTs"
        row = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "folds": {}}
        for which in ("best_validation", "final"):
            out = work / "predictions" / method / which
            done = out.with_suffix(".done")  # beside the folder: the evaluator reads everything inside it
            if not done.is_file():
                if which == "best_validation":  # model.pt holds the kept networks
                    api.predict(test_images, out, folder, folds=args.folds, resume=out.is_dir())
                else:
                    models = [AnomalyModel.from_fold_folder(folder / f"fold_{f}", "cpu", CHECKPOINT_FINAL)
                              for f in args.folds]
                    AnomalyPredictor(models, source=folder).predict_folder(test_images, out, None, False,
                                                                           resume=out.is_dir())
                done.touch()
            row[f"test_auroc_{which}"] = round(float(evaluate_folders(labels, out)["image"]["auroc"]), 4)
        for fold in args.folds:
            row["folds"][fold] = curve(folder / f"fold_{fold}")
        row["wall_minutes_this_run"] = round((time.perf_counter() - start) / 60, 1)
        rows[method] = row
        save_json(rows, args.output)
        print(f"{method}: test AUROC {row['test_auroc_best_validation']:.3f} with the best-validation networks, "
              f"{row['test_auroc_final']:.3f} with the final ones; written to {args.output}")
    print(f"reproduce: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
