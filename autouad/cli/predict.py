"""autouad_predict -i IN -o OUT -d DATASET: anomaly masks for a folder of images.

The model is the trained folds of DATASET in $AUTOUAD_results (``-m`` / ``-p`` pick among several
methods or plans; ``--model-folder`` points at a model folder directly, e.g. one received from a
colleague). Every fold's map is averaged and cut at the folds' calibrated threshold; see
autouad.inference.predictor for the outputs. Input files are named ``<case>_0000<ending>`` per
channel (a plain file name will do when the plan reads one channel); ``--rois`` gives region-of-
interest masks ``<case><ending>`` (brain, liver) when the dataset was trained with them.

An unreadable or unfit input is reported and skipped; the others are predicted. The exit status
is 1 when any case was skipped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from autouad.inference.outputs import PREDICTIONS_FILE
from autouad.inference.predictor import AnomalyPredictor, PredictionError, check_folders
from autouad.paths import find_dataset_name, results_root
from autouad.planning.method_plans import METHODS
from autouad.planning.plans_files import DEFAULT_PLANS_NAME
from autouad.training.base_trainer import CHECKPOINT_FINAL


def find_model_folder(dataset: str, method: str | None, plans_name: str | None) -> Path:
    """The one trained ``<method>__<plans>`` folder of the dataset that fits -m / -p."""
    root = results_root() / dataset
    found = sorted(p for p in root.glob("*__*") if p.is_dir() and any(p.glob(f"fold_*/{CHECKPOINT_FINAL}")))
    fits = [p for p in found if (method is None or p.name.split("__")[0] == method)
            and (plans_name is None or p.name.split("__", 1)[1] == plans_name)]
    if len(fits) > 1 and plans_name is None:
        # the planner's own choice (plans.json, autouadPlans) wins over plans made with -m
        default = [p for p in fits if p.name.split("__", 1)[1] == DEFAULT_PLANS_NAME]
        fits = default or fits
    if len(fits) == 1:
        return fits[0]
    if not fits:
        trained = ", ".join(p.name for p in found) or "none"
        raise PredictionError(f"{root}: no trained model fits -m {method} -p {plans_name} (trained: {trained}); "
                              f"train one with autouad_train")
    raise PredictionError(f"{root}: several trained models fit ({', '.join(p.name for p in fits)}); choose with -m / -p")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", type=Path, required=True, help="folder of images to predict")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the outputs (not the input folder)")
    parser.add_argument("-d", "--dataset", default=None, help="dataset id or DatasetXXX_Name the model was trained on")
    parser.add_argument("-m", "--method", choices=METHODS, default=None, help="which trained method")
    parser.add_argument("-p", "--plans-name", default=None, help="which plans the model was trained with")
    parser.add_argument("--model-folder", type=Path, default=None, help="a trained <method>__<plans> folder")
    parser.add_argument("-f", "--folds", type=int, nargs="+", default=None, help="folds to average (default: all trained)")
    parser.add_argument("--rois", type=Path, default=None, help="folder of region-of-interest masks <case><ending>")
    parser.add_argument("--save-maps", action="store_true", help="also write the float anomaly maps and the regions")
    parser.add_argument("--no-postprocess", action="store_true", help="skip the plan's opening and closing")
    parser.add_argument("--checkpoint", default=CHECKPOINT_FINAL, help="checkpoint file of each fold")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="slices per forward pass")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: bf16 autocast on a GPU, fp32 on the CPU (default)")
    args = parser.parse_args(argv)
    try:
        check_folders(args.input, args.output, args.rois)
        if args.device == "auto":
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        elif args.device == "cuda" and not torch.cuda.is_available():
            raise PredictionError("--device cuda: no CUDA GPU is visible to torch")
        if args.model_folder is not None:
            model_folder = args.model_folder
        elif args.dataset is not None:
            model_folder = find_model_folder(find_dataset_name(args.dataset), args.method, args.plans_name)
        else:
            raise PredictionError("say which model predicts: -d DATASET (with -m / -p) or --model-folder")
        predictor = AnomalyPredictor(model_folder, args.folds, args.device, args.checkpoint,
                                     postprocess=not args.no_postprocess, batch_size=args.batch_size,
                                     precision=args.precision)
        roi_name = predictor.dataset_meta.get("roi_name")
        if roi_name and args.rois is None:
            print(f"warning: the model was trained inside {roi_name} masks; without --rois the "
                  f"{'body' if predictor.modality == 'CT' else 'non-zero region'} of each image stands in for them",
                  file=sys.stderr)
        print(f"model: {model_folder} (folds {', '.join(map(str, predictor.folds))}); threshold "
              f"{predictor.threshold:.4g}, anomalous {predictor.side} it")
        record = predictor.predict_folder(args.input, args.output, args.rois, args.save_maps)
    except (PredictionError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    busy = record["model_seconds"] / record["seconds"] if record["seconds"] else 0.0
    print(f"predicted {record['num_predicted']} case(s) in {record['seconds']:.1f} s into {args.output} "
          f"(the model computed {busy:.0%} of the time, waited {record['waiting_for_data_seconds']:.1f} s for data)"
          + (f"; {record['num_failed']} skipped (see {args.output / PREDICTIONS_FILE})" if record["num_failed"] else ""))
    return 1 if record["num_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
