"""Add one whole ASC-Net run on BraTS-6 to benchmarks/results/ascnet_fast_repeats.json.

    python benchmarks/ascnet_collect_run.py --work WORK --results QUALITY.json --run K --commit 9338416 \
        [--note "..."] [--repeats benchmarks/results/ascnet_fast_repeats.json]

WORK is the --work folder of `python benchmarks/quality.py --schedule fast --datasets brats --methods
ascnet ...` (or of a whole fast run), QUALITY.json its --results. For each fold the script reads what
the fold logged (training_log.json: iterations, precision, the orientation's evidence, the restarts'
records, the labelled probe's curve) and its validation summary; the run's `ascnet` and `auto` rows
come from QUALITY.json. benchmarks/ascnet_proxy_repeats.py then reads every stored fold. Reads files
only (no torch); a run name already stored is refused, so that nothing is overwritten.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPEATS = REPO / "benchmarks" / "results" / "ascnet_fast_repeats.json"
FOLDS = "results/Dataset001_BraTS2015DeepMedic/ascnet__autouadPlans_ascnet"
ORIENTATION_KEYS = ("input_outliers", "input_outliers_auroc", "reference_input_median", "reference_map_median",
                    "inputs_above_reference_p99", "inputs_below_reference_p1", "expected_side", "decided_by",
                    "inverted")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: cannot be read ({e})")


def fold_record(folder: Path) -> dict:
    """What one fold logged and how its validation patients scored."""
    log = read_json(folder / "training_log.json")
    summary = read_json(folder / "validation" / "summary.json")["pixel"]
    events = log["events"]
    curve = [e for e in events if e["event"] == "validation"]
    [orientation] = [e for e in events if e["event"] == "orientation"][-1:] or [{}]
    record = {"iterations": log["entries"][-1]["step"] if log["entries"] else 0,
              "training_precision": log.get("training_precision"),
              "orientation": {k: orientation[k] for k in ORIENTATION_KEYS if k in orientation},
              "labelled_probe_raw_I_ro": [e["value"] for e in curve],
              "proxy": [e["value"] for e in events if e["event"] == "proxy"],
              "curve_steps": [e["step"] for e in curve],
              "validation_dice": round(summary["dice"]["mean"], 4),
              "validation_pixel_auroc": round(summary["pooled_auroc"], 4),
              "validation_best_possible_dice": round(summary["best_possible_dice"]["mean_dice"], 4)}
    restarts = [{k: v for k, v in e.items() if k not in ("event", "major")} for e in events if e["event"] == "restart"]
    if restarts:
        record["restarts"] = restarts
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True, help="the run's quality.py --results file")
    parser.add_argument("--run", required=True, help="the run's name in the repeats file (A, B, ...)")
    parser.add_argument("--commit", required=True, help="the commit the run measured")
    parser.add_argument("--note", default="")
    parser.add_argument("--repeats", type=Path, default=REPEATS)
    args = parser.parse_args(argv)

    repeats = read_json(args.repeats)
    runs = repeats["brats"]["runs"]
    if any(r["run"] == args.run for r in runs):
        raise SystemExit(f"{args.repeats}: already holds a run {args.run}; choose another --run")
    quality = read_json(args.results)
    rows = quality["brats"]
    folds = {}
    for folder in sorted((args.work / FOLDS).glob("fold_*")):
        if (folder / "validation" / "summary.json").is_file():
            folds[folder.name.removeprefix("fold_")] = fold_record(folder)
    if not folds:
        raise SystemExit(f"{args.work / FOLDS}: no fold with a validation summary")
    row = rows.get("ascnet")
    runs.append({"run": args.run, "commit": args.commit, "machine": (row or {}).get("machine"),
                 "settings": (row or {}).get("settings", {}), "note": args.note, "folds": folds,
                 "ascnet": row, "auto": rows.get("auto")})
    tmp = args.repeats.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(repeats, indent=1) + "\n", encoding="utf-8")
    tmp.replace(args.repeats)
    for fold, f in folds.items():
        o = f["orientation"]
        print(f"run {args.run} fold {fold}: {f['iterations']} iterations, outliers under raw I_ro "
              f"{o.get('input_outliers_auroc')}, validation pixel AUROC {f['validation_pixel_auroc']}, "
              f"best-possible Dice {f['validation_best_possible_dice']}, Dice {f['validation_dice']}"
              + (f", restarts {[(r['restart'], r['separation']) for r in f['restarts']]}" if "restarts" in f else ""))
    print(f"added to {args.repeats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
