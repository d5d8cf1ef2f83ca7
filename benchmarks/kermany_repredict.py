"""Predict Kermany's 624 test X-rays again from the folds a ``benchmarks/quality.py`` work folder
trained, with this checkout's predictor, and record each method's image metrics beside the row the
run recorded. For a change of prediction alone (no training): the rows differ only by it.

    python benchmarks/kermany_repredict.py --work <quality.py work folder> --methods ascnet twophase \\
        --compare benchmarks/results/quality_fast_2026-12-07.json \\
        --results benchmarks/results/kermany_repredict_<date>.json

Predictions go to <work>/predictions_repredicted/<method> (a finished method is predicted again).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import (KERMANY, METHODS, dataset_folder,  # noqa: E402  (after the sys.path lines)
                     predict_kermany_method)
from autouad.utils.machine import machine_description  # noqa: E402

METRICS = ("auroc", "average_precision", "precision", "recall", "specificity", "f1")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--methods", nargs="+", required=True, choices=METHODS)
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--compare", type=Path, default=None, help="a quality.py results file whose Kermany rows "
                                                                   "the new ones are shown beside")
    parser.add_argument("--results", type=Path, required=True)
    args = parser.parse_args(argv)
    from autouad.utils.files import load_json, save_json

    work = args.work.resolve()
    raw = dataset_folder(work / "raw", KERMANY["id"])
    before = load_json(args.compare)["kermany"] if args.compare else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    record = load_json(args.results) if args.results.is_file() else {"rows": {}}
    record.update(machine=machine_description(), commit=commit,
                  command="python " + " ".join([Path(__file__).name] + (argv if argv is not None else sys.argv[1:])))
    for method in args.methods:
        out = work / "predictions_repredicted" / method
        start = time.perf_counter()
        image = predict_kermany_method(work, raw, method, args.folds, out)
        row = {"now": {k: image[k] for k in METRICS}, "image_score": image["image_score"],
               "seconds": round(time.perf_counter() - start, 1), "measured": time.strftime("%Y-%m-%d %H:%M")}
        if method in before:
            row["before"] = {k: before[method].get(k) for k in METRICS}
        record["rows"][method] = row
        save_json(record, args.results)
        print(f"{method} ({image['image_score']}): " + ", ".join(
            f"{k} {row['now'][k]:.3f}" + (f" (was {row['before'][k]:.3f})" if "before" in row else "")
            for k in METRICS), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
