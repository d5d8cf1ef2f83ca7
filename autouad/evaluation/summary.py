"""A table of every trained fold of every model of a dataset, from the folds' validation summaries.

Reads each fold's ``validation/summary.json`` (written by autouad_train after calibrating the fold)
and ``threshold.json``; a row per fold and the mean over folds per model, saved as
``$AUTOUAD_results/DatasetXXX_Name/validation_summary.json``. The figures are the folds' own
validation cases in the preprocessed slice space; autouad_evaluate scores predicted files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from autouad.calibration.thresholds import THRESHOLD_FILE
from autouad.evaluation.fold_validation import SUMMARY_FILE
from autouad.training.base_trainer import VALIDATION_FOLDER
from autouad.utils.files import load_json, save_json

SUMMARY_TABLE_FILE = "validation_summary.json"


class NothingToSummarize(FileNotFoundError):
    pass


COLUMNS = (("dice", "Dice"), ("dice_without_postprocessing", "Dice (no pp)"), ("auroc", "AUROC"),
           ("average_precision", "AP"))


def fold_rows(results_dataset_folder: Path) -> list[dict]:
    rows = []
    for summary_path in sorted(Path(results_dataset_folder).glob(f"*__*/fold_*/{VALIDATION_FOLDER}/{SUMMARY_FILE}")):
        fold_folder = summary_path.parent.parent
        summary = load_json(summary_path)
        threshold = load_json(fold_folder / THRESHOLD_FILE) if (fold_folder / THRESHOLD_FILE).is_file() else {}
        pixel, image = summary.get("pixel") or {}, summary.get("image") or {}
        row = {"model": fold_folder.parent.name, "fold": int(fold_folder.name.split("_")[1]),
               "cases": summary.get("num_cases"), "strategy": threshold.get("strategy"),
               "threshold": threshold.get("value")}
        for key, _ in COLUMNS:
            row[key] = (pixel.get(key) or {}).get("mean")
        row["best_possible_dice"] = (pixel.get("best_possible_dice") or {}).get("mean_dice")
        row["image_auroc"], row["image_f1"] = image.get("auroc"), image.get("f1")
        rows.append(row)
    return rows


def model_means(rows: list[dict]) -> list[dict]:
    means = []
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        mean = {"model": model, "fold": "mean", "cases": sum(r["cases"] or 0 for r in mine),
                "strategy": "/".join(sorted({str(r["strategy"]) for r in mine})), "threshold": None}
        for key in [k for k, _ in COLUMNS] + ["best_possible_dice", "image_auroc", "image_f1"]:
            values = [r[key] for r in mine if r[key] is not None]
            mean[key] = float(np.mean(values)) if values else None
        means.append(mean)
    return means


def format_table(rows: list[dict]) -> str:
    headers = ["model", "fold", "cases", "threshold"] + [h for _, h in COLUMNS] + ["best Dice", "img AUROC", "img F1"]
    keys = [k for k, _ in COLUMNS] + ["best_possible_dice", "image_auroc", "image_f1"]

    def cell(v) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = [[r["model"], str(r["fold"]), cell(r["cases"]),
              "-" if r["threshold"] is None else f"{r['strategy']} {r['threshold']:.4g}"] + [cell(r[k]) for k in keys]
             for r in rows]
    widths = [max(len(x) for x in col) for col in zip(headers, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), fmt.format(*("-" * w for w in widths))] + [fmt.format(*ln) for ln in lines])


def summarize_folds(results_dataset_folder: Path) -> dict:
    """{"dataset", "rows"} with a row per fold and per model (the mean of its folds), saved beside
    the models; NothingToSummarize when no fold has a validation summary."""
    folder = Path(results_dataset_folder)
    rows = fold_rows(folder)
    if not rows:
        raise NothingToSummarize(f"{folder}: no fold has {VALIDATION_FOLDER}/{SUMMARY_FILE}; train with autouad_train "
                                 f"(or recalibrate a finished fold with --val)")
    table = {"dataset": folder.name, "rows": rows + model_means(rows)}
    save_json(table, folder / SUMMARY_TABLE_FILE)
    return table
