"""ASC-Net's BraTS-6 row with and without the polarity gate, from folds a quality.py run trained.

    python benchmarks/ascnet_gate.py --work <the quality.py --datasets brats --methods ascnet work folder>
                                     [--output <work>/ascnet_gate.json]

No training: each fold's model.pt is loaded and scored twice, as benchmarks/quality.py scores the
`ascnet` row (the fold's cut recalibrated by the plans' strategy on its training patients, its
held-out patients predicted, all six scored together), once with the gate off and once with the
gate set from R_d's medians. R_d is recomputed from the fold's training patients: their slices
without tumour, inside the brain (a BraTS-6 fold trains on 3 patients, and ASC-Net's 10 % hold-out
of them rounds to none, so these are R_d's slices; the trainer samples 256 of them, this script
takes all). So folds trained before the gate existed can be compared, and for folds trained with
it the gated row is the benchmark's row up to that sampling. The orientation is the fold's own.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.quality import (BRATS, dataset_folder, fold_split, input_cases, merge_predictions,  # noqa: E402
                                model_folder, pixel_row)


def reference_medians(model, data_folder: Path, cases: list, maps: list, names: list[str]) -> tuple[float, float]:
    """R_d's medians of the input (the map's channel) and of the oriented map: the training patients'
    slices without tumour, inside the brain."""
    channel = model.plans.threshold.channel or 0
    inputs, values = [], []
    for name, case, case_maps in zip(names, cases, maps):
        mask = np.load(data_folder / f"{name}_mask.npy") > 0
        roi = np.load(data_folder / f"{name}_roi.npy") > 0
        normal = (~mask.any(axis=(1, 2)))[:, None, None] & roi
        inputs.append(case.data[:, model.trainer.input_channels][:, channel][normal])
        values.append(case_maps[normal])
    return float(np.median(np.concatenate(inputs))), float(np.median(np.concatenate(values)))


def scored_rows(work: Path) -> dict[str, dict]:
    """{"gate_off": row, "gate_on": row}. Each fold's model is loaded once, and its training patients'
    maps without the gate serve both its gate-off cut and the gate's levels."""
    from autouad.calibration.thresholds import calibrate
    from autouad.evaluation.evaluator import evaluate_folders
    from autouad.inference.predictor import AnomalyPredictor
    from autouad.model import AnomalyModel
    from autouad.preprocessing.cases import load_preprocessed_case

    raw = dataset_folder(work / "raw", BRATS["id"])
    models = model_folder(work, BRATS["id"], "ascnet")
    parts, levels = {"off": [], "on": []}, {}
    for fold in (0, 1):
        split = fold_split(work, BRATS["id"], fold)
        model = AnomalyModel.load(models / f"fold_{fold}")
        main = model.trainer.networks["M"]
        data_folder = dataset_folder(work / "preprocessed", BRATS["id"]) / model.plans.preprocessing.data_folder
        cases = [load_preprocessed_case(data_folder, name, model.dataset.modality) for name in split["train"]]
        for gate in ("off", "on"):
            main.set_polarity_gate(*(levels[fold] if gate == "on" else (None,)))
            maps = [model.anomaly_maps(case.data) for case in cases]
            if gate == "off":
                levels[fold] = reference_medians(model, data_folder, cases, maps, split["train"])
            model.threshold = calibrate(model.plans.threshold, list(zip(cases, maps)), model.trainer.histogram_range)
            out = work / "predictions" / "brats" / f"ascnet_gate_{gate}" / f"fold_{fold}"
            AnomalyPredictor([model], source=models).predict_cases(input_cases(raw, split["val"]), out, save_maps=True)
            parts[gate].append(out)
    rows = {}
    for gate, folders in parts.items():
        summary = evaluate_folders(raw / "masksTr", merge_predictions(folders, folders[0].parent / "cross_validation"))
        rows[f"gate_{gate}"] = {**pixel_row(summary),
                                "per_case_dice": {k: round(v["dice"], 4) for k, v in summary["cases"].items()}}
    rows["gate_on"]["gate_levels"] = {str(f): {"input": round(a, 4), "map": round(b, 4)} for f, (a, b) in levels.items()}
    return rows


def main() -> None:
    from autouad.utils.files import save_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    output = args.output or args.work / "ascnet_gate.json"
    rows = scored_rows(args.work)
    for name, row in rows.items():
        print(f"{name}: Dice {row['dice'][0]:.3f} +- {row['dice'][1]:.3f}, "
              f"pooled AUROC {row['pooled_auroc']:.3f}, best-possible Dice {row['best_possible_dice']:.3f}")
    save_json(rows, output, indent=1)
    print(f"written to {output}; reproduce: python benchmarks/ascnet_gate.py --work {args.work}")


if __name__ == "__main__":
    main()
