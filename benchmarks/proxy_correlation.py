"""How well the label-free proxy of find_best_configuration ranks the candidates, against their true
out-of-fold ranking, on datasets that do have labels.

    python benchmarks/proxy_correlation.py --work /root/qwork_budget [--folds 0 1] [--output benchmarks/results/proxy_correlation.json]

For each dataset of a quality-benchmark work folder (BraTS-6: masks; Kermany: image labels) the
candidates are compared twice, out of fold on the same trained folds: once with the validation
cases' real masks or labels (pixel level: each candidate's best configuration's mean Dice; image
level: each candidate's image AUROC), once on synthetic anomalies pasted into their normal tissue
(autouad.selection.proxy), as a dataset without labels would be. The output is the Spearman rank
correlation between the two rankings, whether both choose the same candidate, and both rankings.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASETS = {"brats": 1, "kermany": 2}


def best_per_candidate(comparison) -> dict[str, float]:
    """candidate -> the selection score of its best configuration (single candidates only)."""
    best: dict[str, float] = {}
    for result in comparison.ranked:
        if result.candidate.startswith("ensemble:"):
            continue
        value = result.key(comparison.task)[0]
        best[result.candidate] = max(best.get(result.candidate, -1.0), value)
    return best


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def measure(work: Path, dataset_id: int, folds: list[int]) -> dict:
    from autouad.paths import find_dataset_name
    from autouad.selection.find_best import compare, gather

    name = find_dataset_name(dataset_id, (work / "raw",))
    start = time.time()
    rankings = {}
    for proxy in (False, True):
        task, folds_, candidates, evidence, kernels, _, used = gather(name, work / "raw", work / "preprocessed",
                                                                      work / "results", folds, quiet=True, proxy=proxy)
        rankings["proxy" if used else "true"] = best_per_candidate(compare(evidence, candidates, folds_, task,
                                                                           kernels, quiet=True))
    common = sorted(set(rankings["true"]) & set(rankings["proxy"]))
    true = [rankings["true"][c] for c in common]
    proxy = [rankings["proxy"][c] for c in common]
    return {"dataset": name, "task": task, "folds": folds, "candidates": common,
            "true": {c: rankings["true"][c] for c in common}, "proxy": {c: rankings["proxy"][c] for c in common},
            "spearman": spearman(true, proxy),
            "same_choice": bool(common) and common[int(np.argmax(true))] == common[int(np.argmax(proxy))],
            "true_choice": common[int(np.argmax(true))] if common else None,
            "proxy_choice": common[int(np.argmax(proxy))] if common else None,
            "seconds": round(time.time() - start, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a benchmarks/quality.py work folder")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--output", type=Path, default=Path("proxy_correlation.json"))
    args = parser.parse_args(argv)
    from autouad.evaluation.metrics import undefined_to_none
    from autouad.utils.files import save_json
    from autouad.utils.machine import machine_description
    rows = [measure(args.work, DATASETS[d], args.folds) for d in args.datasets]
    result = {"machine": machine_description(), "measured": time.strftime("%Y-%m-%d %H:%M"), "datasets": rows}
    save_json(undefined_to_none(result), args.output)
    for row in rows:
        print(f"{row['dataset']}: Spearman {row['spearman']:.2f} over {len(row['candidates'])} candidates; "
              f"true choice {row['true_choice']}, proxy choice {row['proxy_choice']}")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
