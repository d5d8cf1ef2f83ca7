"""Evaluation of a prediction folder (written by autouad_predict) against reference masks or labels.

Two kinds of reference:

* a folder of reference masks ``<case><ending>`` (any value > 0 is anomaly): pixel-level
  evaluation. Dice of the final masks and, when present, of ``without_postprocessing/``; with
  ``maps/``, AUROC and average precision per case and pooled inside the region of interest, and
  the best-possible Dice over one common threshold (an upper bound that peeks at the labels).
  When the prediction folder has ``scores.csv``, image-level metrics as well, with a case
  counted abnormal when its reference mask has any anomaly pixel.
* a labels file (CSV with a ``case,label`` header, or a raw dataset's dataset.json): image-level
  evaluation of ``scores.csv``.

The result is summary.json, by default in the prediction folder; the reference is only read.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from autouad.evaluation.metrics import image_level_metrics, undefined_to_none
from autouad.evaluation.scoring import CaseOutcome, score_cases
from autouad.inference.outputs import (MAPS_FOLDER, PREDICTIONS_FILE, ROIS_FOLDER, SCORES_FILE,
                                      WITHOUT_POSTPROCESSING_FOLDER)
from autouad.utils.files import load_json, save_json
from autouad.utils.images import SUPPORTED_ENDINGS, file_ending, read_image

SUMMARY_FILE = "summary.json"
ANOMALOUS_SIDES = ("above", "below")
IMAGE_METRIC_NAMES = (("auroc", "AUROC"), ("average_precision", "Average precision"), ("precision", "Precision"),
                      ("recall", "Recall"), ("specificity", "Specificity"), ("f1", "F1"), ("accuracy", "Accuracy"))


class EvaluationError(Exception):
    """Input that cannot be evaluated; the one-line message names the file and the problem."""


def default_summary_path(predictions: Path) -> Path:
    return Path(predictions) / SUMMARY_FILE


def images_by_case(folder: Path) -> dict[str, Path]:
    """Case id -> image file for the supported images directly in ``folder`` (hidden files,
    subfolders and other files are left out)."""
    found: dict[str, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        ending = file_ending(path.name)
        if path.name.startswith(".") or ending is None or not path.is_file():
            continue
        case_id = path.name[:-len(ending)]
        if case_id in found:
            raise EvaluationError(f"{path}: case {case_id} also has {found[case_id].name}; keep one file per case")
        found[case_id] = path
    return found


def _parse_binary(value, where: str) -> int:
    if str(value).strip() not in ("0", "1"):
        raise EvaluationError(f"{where}: {value!r} is not 0 or 1")
    return int(str(value).strip())


def _read_csv_rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(line number, row) for every row of a CSV whose header holds the ``required`` columns."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = [name.strip() for name in reader.fieldnames or []]
        absent = [name for name in required if name not in header]
        if absent:
            raise EvaluationError(f"{path}: header {','.join(header) or '(empty)'} lacks column(s) "
                                  f"{', '.join(absent)} (expected {','.join(required)})")
        reader.fieldnames = header
        return [(reader.line_num, row) for row in reader]


def _add_unique(table: dict, case_id: str, value, where: str) -> None:
    if not case_id:
        raise EvaluationError(f"{where}: empty case id")
    if case_id in table:
        raise EvaluationError(f"{where}: case {case_id} appears twice")
    table[case_id] = value


def read_reference_labels(path: Path, predicted: set[str] | None = None) -> dict[str, int]:
    """Image-level labels (case id -> 0 normal / 1 abnormal) from a CSV with a ``case,label``
    header, or from a raw dataset's dataset.json (its "training" and "test" cases; cases without
    a "label" are skipped). Given the ``predicted`` case ids, a dataset.json gives only the splits
    that hold some of them, so that predicting the test split does not list every training case
    as missing."""
    path = Path(path)
    labels: dict[str, int] = {}
    if path.suffix.lower() == ".csv":
        for line, row in _read_csv_rows(path, ("case", "label")):
            where = f"{path}: line {line}"
            _add_unique(labels, (row["case"] or "").strip(), _parse_binary(row["label"], where), where)
    elif path.suffix.lower() == ".json":
        try:
            meta = load_json(path)
        except json.JSONDecodeError as e:
            raise EvaluationError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(meta, dict) or not any(isinstance(meta.get(k), dict) for k in ("training", "test")):
            raise EvaluationError(f"{path}: no \"training\" or \"test\" cases (expected a dataset.json)")
        by_split: dict[str, dict[str, int]] = {}
        for split in ("training", "test"):
            by_split[split] = {}
            for case_id, info in (meta.get(split) or {}).items():
                if isinstance(info, dict) and info.get("label") is not None:
                    where = f"{path}: {split} case {case_id} label"
                    _add_unique(labels, case_id, _parse_binary(info["label"], where), where)
                    by_split[split][case_id] = labels[case_id]
        wanted = [split for split, found in by_split.items() if predicted and predicted & set(found)]
        if wanted:
            labels = {case_id: label for split in wanted for case_id, label in by_split[split].items()}
    else:
        raise EvaluationError(f"{path}: not a labels file (expected a .csv with a case,label header or a dataset.json)")
    if not labels:
        raise EvaluationError(f"{path}: holds no image-level labels")
    return labels


def read_scores(path: Path) -> dict[str, tuple[float, int]]:
    """Case id -> (score, decision) from a prediction folder's scores.csv
    (``case,score,threshold,decision``; the score is taken as higher = more anomalous)."""
    path = Path(path)
    scores: dict[str, tuple[float, int]] = {}
    for line, row in _read_csv_rows(path, ("case", "score", "decision")):
        where = f"{path}: line {line}"
        try:
            score = float(row["score"])
        except (TypeError, ValueError):
            raise EvaluationError(f"{where}: score {row['score']!r} is not a number") from None
        if not math.isfinite(score):
            raise EvaluationError(f"{where}: score {row['score']!r} is not finite")
        _add_unique(scores, (row["case"] or "").strip(), (score, _parse_binary(row["decision"], f"{where}: decision")),
                    where)
    if not scores:
        raise EvaluationError(f"{path}: has no rows")
    return scores


def read_anomalous_side(predictions: Path) -> str:
    """"above" (high map values are anomalous) or "below", from the run record predictions.json;
    "above" when the file or the key is absent."""
    record_path = Path(predictions) / PREDICTIONS_FILE
    if not record_path.is_file():
        return "above"
    try:
        record = load_json(record_path)
    except json.JSONDecodeError as e:
        raise EvaluationError(f"{record_path}: not valid JSON ({e})") from None
    side = record.get("anomalous_side", "above") if isinstance(record, dict) else "above"
    if side not in ANOMALOUS_SIDES:
        raise EvaluationError(f"{record_path}: anomalous_side {side!r} is not one of {', '.join(ANOMALOUS_SIDES)}")
    return side


def _read_like(path: Path, reference_path: Path, reference_shape: tuple[int, ...]) -> np.ndarray:
    """An image as float32 whose shape must equal the reference mask's."""
    array, _ = read_image(path, dtype=np.float32)
    if array.shape != reference_shape:
        raise EvaluationError(f"{path}: shape {array.shape} differs from reference {reference_path} ({reference_shape})")
    return array


def _file_of(files: dict[str, Path], case_id: str, folder: Path, what: str) -> Path:
    if case_id not in files:
        raise EvaluationError(f"{folder}: no {what} for case {case_id} (needed for every evaluated case)")
    return files[case_id]


def _optional_folder(folder: Path) -> dict[str, Path] | None:
    return images_by_case(folder) if folder.is_dir() else None


def _evaluate_pixels(reference: Path, predictions: Path, roi_folder: Path | None) -> dict:
    references = images_by_case(reference)
    if not references:
        raise EvaluationError(f"{reference}: no reference masks (files ending in {', '.join(SUPPORTED_ENDINGS)})")
    predicted = images_by_case(predictions)
    matched = sorted(set(references) & set(predicted))
    if not matched:
        raise EvaluationError(f"{predictions}: no prediction for any of the {len(references)} reference cases "
                              f"in {reference}")
    unprocessed_folder = predictions / WITHOUT_POSTPROCESSING_FOLDER
    maps_folder = predictions / MAPS_FOLDER
    rois_folder = Path(roi_folder) if roi_folder is not None else predictions / ROIS_FOLDER
    if roi_folder is not None and not rois_folder.is_dir():
        raise EvaluationError(f"{rois_folder}: no such region-of-interest folder")
    unprocessed, maps, rois = (_optional_folder(f) for f in (unprocessed_folder, maps_folder, rois_folder))
    anomalous_side = read_anomalous_side(predictions)

    def outcomes():
        """One case at a time: only the cases' scored pixels stay in memory, not their volumes."""
        for case_id in matched:
            reference_path = references[case_id]
            reference_mask = read_image(reference_path, dtype=np.float32)[0] > 0
            shape = reference_mask.shape
            outcome = CaseOutcome(case_id, reference=reference_mask,
                                  mask=_read_like(predicted[case_id], reference_path, shape) > 0)
            if unprocessed is not None:
                unprocessed_path = _file_of(unprocessed, case_id, unprocessed_folder, "mask")
                outcome.mask_without_postprocessing = _read_like(unprocessed_path, reference_path, shape) > 0
            if maps is not None:
                map_path = _file_of(maps, case_id, maps_folder, "anomaly map")
                outcome.map = _read_like(map_path, reference_path, shape)
                if rois is not None:
                    outcome.region = _read_like(_file_of(rois, case_id, rois_folder, "region of interest"),
                                                reference_path, shape) > 0
                inside = outcome.map if outcome.region is None else outcome.map[outcome.region]
                if not np.isfinite(inside).all():
                    raise EvaluationError(f"{map_path}: contains NaN or infinite values inside the region of interest")
            yield outcome

    summary = score_cases(outcomes(), anomalous_side)
    summary.update(reference=str(reference), predictions=str(predictions),
                   missing=sorted(set(references) - set(predicted)))
    scores_path = predictions / SCORES_FILE
    if scores_path.is_file():
        labels = {case_id: int(entry["reference_voxels"] > 0) for case_id, entry in summary["cases"].items()}
        summary["image"], image_cases = _evaluate_images(labels, scores_path)
        for case_id, values in image_cases.items():
            summary["cases"][case_id].update(values)
    return summary


def _evaluate_images(labels: dict[str, int], scores_path: Path) -> tuple[dict, dict[str, dict]]:
    """Image-level metrics of scores.csv joined on case id with ``labels``, and per case
    {"label", "score", "decision"}."""
    scores = read_scores(scores_path)
    joined = sorted(set(labels) & set(scores))
    if not joined:
        raise EvaluationError(f"{scores_path}: none of its {len(scores)} cases has a reference label")
    metrics = image_level_metrics([scores[c][0] for c in joined], [labels[c] for c in joined],
                                  [scores[c][1] for c in joined])
    metrics["cases_without_score"] = sorted(set(labels) - set(scores))
    metrics["cases_without_label"] = sorted(set(scores) - set(labels))
    per_case = {c: {"label": labels[c], "score": scores[c][0], "decision": scores[c][1]} for c in joined}
    return metrics, per_case


def evaluate_folders(reference: Path, predictions: Path, roi_folder: Path | None = None,
                     output: Path | None = None) -> dict:
    """Evaluate the prediction folder against a folder of reference masks (pixel level) or a
    labels file (image level), write summary.json to ``output`` (default
    PREDICTIONS/summary.json) and return the summary (NaN written and returned as None)."""
    reference, predictions = Path(reference), Path(predictions)
    output = Path(output) if output is not None else default_summary_path(predictions)
    if not predictions.is_dir():
        raise EvaluationError(f"{predictions}: no such prediction folder")
    if reference.is_dir():
        if output.resolve().is_relative_to(reference.resolve()):
            raise EvaluationError(f"{output}: lies inside the reference folder {reference}, which evaluation "
                                  "never writes to; choose another output")
        summary = _evaluate_pixels(reference, predictions, roi_folder)
    elif reference.is_file():
        scores_path = predictions / SCORES_FILE
        if not scores_path.is_file():
            raise EvaluationError(f"{scores_path}: not found; image-level evaluation against {reference} needs it")
        labels = read_reference_labels(reference, set(read_scores(scores_path)))
        image, per_case = _evaluate_images(labels, scores_path)
        summary = {"reference": str(reference), "predictions": str(predictions), "num_cases": len(per_case),
                   "missing": image["cases_without_score"], "pixel": None, "image": image, "cases": per_case}
    else:
        raise EvaluationError(f"{reference}: no such reference folder or labels file")
    summary = undefined_to_none(summary)
    save_json(summary, output)
    return summary


def _number(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _mean_std_text(stats: dict | None) -> str:
    if stats is None:
        return "n/a"
    if stats["mean"] is None:
        return "n/a (no case defines it)"
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}  (n={stats['n']})"


def format_summary_table(summary: dict) -> str:
    """A short human-readable table of a summary from evaluate_folders."""
    missing = summary["missing"]
    headline = f"{summary['num_cases']} case(s) evaluated"
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        headline += f", {len(missing)} missing from the predictions: {shown}"
    lines = [headline]
    pixel = summary["pixel"]
    if pixel is not None:
        best = pixel["best_possible_dice"]
        best_text = "n/a" if best is None else (f"{best['mean_dice']:.4f} at threshold {best['threshold']:.6g} "
                                                f"({best['anomalous_side']}; upper bound using the reference labels)")
        rows = [("Dice", _mean_std_text(pixel["dice"])),
                ("Dice without post-processing", _mean_std_text(pixel["dice_without_postprocessing"])),
                ("AUROC per case", _mean_std_text(pixel["auroc"])),
                ("Average precision per case", _mean_std_text(pixel["average_precision"])),
                ("Pooled AUROC", _number(pixel["pooled_auroc"])),
                ("Pooled average precision", _number(pixel["pooled_average_precision"])),
                ("Best-possible Dice", best_text)]
        lines.append("Pixel level")
        lines += [f"  {name:<30} {value}" for name, value in rows]
    image = summary["image"]
    if image is not None:
        rows = [(name, _number(image[key])) for key, name in IMAGE_METRIC_NAMES]
        rows.append(("TP / FP / TN / FN", f"{image['tp']} / {image['fp']} / {image['tn']} / {image['fn']}"))
        lines.append(f"Image level ({image['num_images']} images, {image['num_abnormal']} abnormal)")
        lines += [f"  {name:<30} {value}" for name, value in rows]
    return "\n".join(lines)
