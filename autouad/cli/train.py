"""autouad_train DATASET FOLD: train one fold (or ``all``) of a planned and preprocessed dataset.

The schedule comes from the plans; ``--schedule`` switches to another of the method's schedules and
``--epochs`` / ``--cycles`` / ``--iterations`` / ``--set key=value`` change single settings of it
without writing a trainer subclass. ``--continue`` resumes from checkpoint_latest.pt exactly; given
with a longer schedule it trains on from where a finished run stopped.

Outputs: $AUTOUAD_results/DatasetXXX_Name/<method>__<plans>/fold_K/ with checkpoint_latest.pt,
checkpoint_final.pt, training_log.json, progress.png, validation/ (the held-out cases' maps),
threshold.json (the cut calibrated on those maps, by the plans' strategy; never on test labels),
validation/summary.json and model.pt (what prediction loads). ``--val`` redoes the export,
calibration and scoring of a finished fold, e.g. after changing the threshold strategy in the plans.

Multi-GPU: ``--num-gpus N`` starts N DDP processes on this machine; under torchrun the processes
already exist and autouad joins their process group. ``--device cpu --num-gpus 2`` runs two CPU
processes with the gloo backend. A thin layer over autouad.api.train.
"""
from __future__ import annotations

import argparse
import json
import sys

from autouad import api
from autouad.calibration.thresholds import CalibrationError
from autouad.inference.predictor import PredictionError
from autouad.methods.registry import method_names
from autouad.planning.plans import PlansError
from autouad.planning.plans_files import PlansNotFoundError
from autouad.planning.planner import SCHEDULES
from autouad.training.fold_data import TrainingError
from autouad.utils.progress import set_quiet


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_settings(items: list[str] | None) -> dict:
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainingError(f"--set {item}: expected KEY=VALUE")
        overrides[key] = parse_value(value)
    return overrides


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="dataset id or DatasetXXX_Name")
    parser.add_argument("fold", help="fold number, or 'all'")
    parser.add_argument("-m", "--method", choices=method_names(), default=None,
                        help="train this method's plans (default: the planner's choice in plans.json)")
    parser.add_argument("-p", "--plans-name", default=None, help="plans to train from (default autouadPlans)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=None, help="another of the method's schedules")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per step / phase (epoch-based schedules)")
    parser.add_argument("--cycles", type=int, nargs=2, metavar=("STAGE1", "STAGE2"), default=None,
                        help="ASC-Net cycles in stage 1 and stage 2")
    parser.add_argument("--iterations", type=int, default=None, help="iterations (iteration-based schedules)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="change any schedule setting")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="scale the schedule so that training takes about this many minutes here (measured on "
                             "the first steps; the stages keep their ratios); 0 switches a schedule's budget off")
    parser.add_argument("--continue", dest="continue_training", action="store_true",
                        help="resume from checkpoint_latest.pt")
    parser.add_argument("--overwrite", action="store_true", help="start again over an existing run of this fold")
    parser.add_argument("--val", action="store_true",
                        help="no training: export the validation maps of a finished fold again, recalibrate and score")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--num-gpus", type=int, default=1, help="DDP processes (GPUs; CPU processes with --device cpu)")
    parser.add_argument("--trainer", default=None, help="dotted path of an AutoUADTrainer subclass")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="iterations between checkpoints")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--candidates", action="store_true",
                        help="train every candidate method of the plans on FOLD (each planned first when needed; "
                             "trained folds are reused), then run autouad_find_best_configuration")
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    try:
        fold = args.fold if args.fold == "all" else int(args.fold) if args.fold.isdigit() else None
        if fold is None:
            raise TrainingError(f"fold {args.fold!r} is neither a number nor 'all'")
        if args.candidates:
            if args.method or args.plans_name:
                raise TrainingError("--candidates trains every candidate of the plans; leave out -m and -p")
            api.train_candidates(args.dataset, fold, schedule=args.schedule, device=args.device, seed=args.seed,
                                 overrides={**parse_settings(args.set), **({} if args.budget_minutes is None else
                                                                           {"budget_minutes": args.budget_minutes or None})})
            return 0
        api.train(args.dataset, fold, args.method, args.schedule, plans_name=args.plans_name,
                  overrides={**parse_settings(args.set),
                             **({} if args.budget_minutes is None else {"budget_minutes": args.budget_minutes or None})},
                  epochs=args.epochs, cycles=args.cycles,
                  iterations=args.iterations, continue_training=args.continue_training, overwrite=args.overwrite,
                  validation_only=args.val, device=args.device, num_gpus=args.num_gpus, trainer=args.trainer,
                  checkpoint_every=args.checkpoint_every, seed=args.seed)
    except (TrainingError, CalibrationError, PlansNotFoundError, PlansError, PredictionError, FileNotFoundError,
            ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; resume with --continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
