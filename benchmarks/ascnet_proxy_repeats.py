"""Does ASC-Net's label-free orientation evidence tell a good fold from a weak one?

    python benchmarks/ascnet_proxy_repeats.py [--repeats benchmarks/results/ascnet_fast_repeats.json]

Reads the whole BraTS-6 runs stored in ascnet_fast_repeats.json (each fold's orientation event and
its validation figures, written by benchmarks/quality.py runs) and sets, for every fold, the
separation of the orientation's evidence, |AUROC - 0.5| of I_in's input outliers under raw I_ro
(read without any mask when the fold was trained), against the fold's validation pixel AUROC and
best-possible Dice (read with the masks afterwards). It prints the Spearman rank correlations and
what picking the better of two runs of the same fold by that separation would give, against one
run, over every pair of stored runs. No training: it reads stored figures only.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.proxy_correlation import spearman  # noqa: E402


def fold_rows(repeats: dict) -> list[dict]:
    """One row per stored fold with an orientation and validation figures."""
    rows = []
    for run in repeats["brats"]["runs"]:
        for fold, figures in (run.get("folds") or {}).items():
            orientation = figures.get("orientation") or {}
            if "input_outliers_auroc" not in orientation or "validation_pixel_auroc" not in figures:
                continue
            rows.append({"run": run["run"], "fold": int(fold), "iterations": figures.get("iterations"),
                         "separation": abs(orientation["input_outliers_auroc"] - 0.5),
                         "pixel_auroc": figures["validation_pixel_auroc"],
                         "best_possible_dice": figures["validation_best_possible_dice"]})
    return rows


def best_of_two(rows: list[dict], key: str) -> dict[int, dict]:
    """Per fold: the mean of ``key`` over single runs, and over every pair of runs when the pair's
    run with the larger separation is kept (what a label-free choice between two restarts gives)."""
    out = {}
    for fold in sorted({r["fold"] for r in rows}):
        runs = [r for r in rows if r["fold"] == fold]
        pairs = list(itertools.combinations(runs, 2))
        chosen = [max(pair, key=lambda r: r["separation"])[key] for pair in pairs]
        oracle = [max(r[key] for r in pair) for pair in pairs]
        out[fold] = {"runs": len(runs), "one_run": sum(r[key] for r in runs) / len(runs),
                     "best_of_two_by_separation": sum(chosen) / len(chosen),
                     "best_of_two_by_the_masks": sum(oracle) / len(oracle)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=Path, default=REPO / "benchmarks/results/ascnet_fast_repeats.json")
    args = parser.parse_args(argv)
    rows = fold_rows(json.loads(args.repeats.read_text(encoding="utf-8")))
    print("| run | fold | iterations | separation | validation pixel AUROC | best-possible Dice |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r["separation"]):
        print(f"| {r['run']} | {r['fold']} | {r['iterations']} | {r['separation']:.3f} | {r['pixel_auroc']:.3f} "
              f"| {r['best_possible_dice']:.3f} |")
    separation = [r["separation"] for r in rows]
    for key in ("pixel_auroc", "best_possible_dice"):
        rho = spearman(separation, [r[key] for r in rows])
        print(f"\nSpearman rank correlation, separation against {key}: {rho:.3f} ({len(rows)} folds)")
    for fold, figures in best_of_two(rows, "best_possible_dice").items():
        print(f"fold {fold} ({figures['runs']} runs), best-possible Dice: one run {figures['one_run']:.3f}, "
              f"the better of two by separation {figures['best_of_two_by_separation']:.3f}, "
              f"by the masks {figures['best_of_two_by_the_masks']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
