"""Validation quality against training minutes, per method, from a quality-benchmark work folder.

    python benchmarks/quality_vs_minutes.py --work /root/qwork_budget \
        [--output benchmarks/results/quality_vs_minutes.json] [--plot docs/images/quality_vs_minutes.png]

Every fold's ``training_log.json`` holds the trainer's ``validation`` events (the quick validation
figure it logs while training: pixel AUROC on the fold's validation slices, or image AUROC for 2D
image-level data, with the minutes of training so far) and its ``budget`` event (how the schedule
was fitted to the budget: seconds per iteration measured on the first steps, the factor applied to
the paper's schedule, the iterations kept). This script gathers them per dataset and method, writes
them as JSON and draws one panel per dataset with one line per method and fold. The curves already in
--output of methods this work folder did not train stay (a benchmark run a few methods at a time, in
several work folders, draws one figure); --replace starts from nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autouad.selection.evidence import candidate_name  # noqa: E402  (after the sys.path line)
from autouad.utils.files import save_figure, save_json  # noqa: E402


def gather(work: Path) -> dict:
    """{dataset: {method: [{fold, metric, minutes: [...], values: [...], budget: {...} | None}]}}."""
    out: dict = {}
    for log_file in sorted((work / "results").glob("*/*__*/fold_*/training_log.json")):
        fold_folder = log_file.parent
        # the same method on every channel is its own line
        method = candidate_name(*fold_folder.parent.name.split("__", 1))
        dataset = fold_folder.parent.parent.name
        log = json.loads(log_file.read_text(encoding="utf-8"))
        events = log.get("events", [])
        validation = [e for e in events if e.get("event") == "validation"]
        budget = next((e for e in events if e.get("event") == "budget"), None)
        if not validation:
            continue
        out.setdefault(dataset, {}).setdefault(method, []).append({
            "fold": int(fold_folder.name.split("_")[1]), "metric": validation[0].get("metric"),
            "minutes": [e["minutes"] for e in validation], "values": [e["value"] for e in validation],
            "budget": {k: v for k, v in budget.items() if k not in ("step", "event")} if budget else None})
    return out


def merge(old: dict, new: dict) -> dict:
    """``old``'s curves with ``new``'s in place of those of the same dataset and method."""
    out = {dataset: dict(methods) for dataset, methods in old.items()}
    for dataset, methods in new.items():
        out.setdefault(dataset, {}).update(methods)
    return out


def plot(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted(curves)
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.5), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # one colour per method in every panel
    methods = sorted({m for dataset in datasets for m in curves[dataset]})
    for ax, dataset in zip(axes[0], datasets):
        for method, folds in sorted(curves[dataset].items()):
            colour = colours[methods.index(method) % len(colours)]
            for fold in folds:
                ax.plot(fold["minutes"], fold["values"], marker="o", markersize=3, color=colour,
                        linestyle="-" if fold["fold"] == 0 else "--",
                        label=f"{method} fold {fold['fold']}")
        metric = next(iter(curves[dataset].values()))[0]["metric"]
        ax.set(title=dataset, xlabel="training minutes", ylabel=f"validation {metric}")
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="the quality benchmark's work folder")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/quality_vs_minutes.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs/images/quality_vs_minutes.png")
    parser.add_argument("--replace", action="store_true",
                        help="write only this work folder's curves (default: keep --output's curves of other methods)")
    args = parser.parse_args(argv)
    curves = gather(args.work)
    if not curves:
        print(f"{args.work}: no training_log.json with validation events under results/", file=sys.stderr)
        return 1
    if args.output.is_file() and not args.replace:
        curves = merge(json.loads(args.output.read_text(encoding="utf-8")), curves)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_json(curves, args.output, indent=1)
    plot(curves, args.plot)
    for dataset, methods in curves.items():
        print(dataset)
        for method, folds in sorted(methods.items()):
            for f in folds:
                b = f["budget"] or {}
                print(f"  {method:<11} fold {f['fold']}: {f['metric']} {f['values'][0]:.3f} -> {f['values'][-1]:.3f} "
                      f"(best {max(f['values']):.3f}) in {f['minutes'][-1]:.1f} min"
                      + (f"; budget {b.get('budget_minutes')} min, factor {b.get('factor')}, "
                         f"{b.get('iterations')} iterations" if b else ""))
    print(f"wrote {args.output} and {args.plot}")
    print(f"reproduce: python benchmarks/quality_vs_minutes.py --work {args.work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
