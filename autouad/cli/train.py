"""autouad_train DATASET FOLD: train one fold (or ``all``) of a planned and preprocessed dataset.

The schedule comes from the plans; ``--schedule`` switches to another of the method's schedules and
``--epochs`` / ``--cycles`` / ``--iterations`` / ``--set key=value`` change single settings of it
without writing a trainer subclass. ``--continue`` resumes from checkpoint_latest.pt exactly; given
with a longer schedule it trains on from where a finished run stopped.

Outputs: $AUTOUAD_results/DatasetXXX_Name/<method>__<plans>/fold_K/ with checkpoint_latest.pt,
checkpoint_final.pt, training_log.json, progress.png and validation/ (the held-out cases' maps).
Each fold ends by calibrating its threshold on those maps (threshold.json, by the plans' strategy;
never on test labels) and scoring its validation cases (validation/summary.json). ``--val`` does
only this for a finished fold, e.g. after changing the threshold strategy in the plans.

Multi-GPU: ``--num-gpus N`` starts N DDP processes on this machine; under torchrun the processes
already exist and autouad joins their process group. ``--device cpu --num-gpus 2`` runs two CPU
processes with the gloo backend (what the tests do).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import torch

from autouad.calibration.thresholds import CalibrationError, calibrate_fold, load_validation_cases
from autouad.evaluation.fold_validation import SUMMARY_FILE, score_fold
from autouad.methods import trainer_class
from autouad.paths import find_dataset_name, preprocessed_root, results_root
from autouad.planning.method_plans import METHODS, load_method_plans
from autouad.planning.plans_files import PlansNotFoundError, find_plans
from autouad.planning.planner import SCHEDULES
from autouad.training.base_trainer import (CHECKPOINT_FINAL, CHECKPOINT_LATEST, LOG_FILE, VALIDATION_FOLDER,
                                          apply_schedule_overrides)
from autouad.training.fold_data import TrainingError
from autouad.utils.files import atomic_output, load_json


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def schedule_overrides(args, plans: dict) -> tuple[dict, dict]:
    """The schedule to start from and the single settings the command line changes in it."""
    schedule = dict(plans["schedule"])
    if args.schedule:
        schedules = load_method_plans(plans["method"])["schedules"]
        schedule = dict(schedules[args.schedule], name=args.schedule)
    overrides = {}
    if args.cycles is not None:
        overrides.update(stage1_cycles=args.cycles[0], stage2_cycles=args.cycles[1])
    if args.epochs is not None:
        key = next((k for k in ("epochs_per_step", "phase1_epochs", "epochs") if k in schedule), None)
        if key is None:
            raise TrainingError(f"the {plans['method']} schedule counts iterations, not epochs; use --iterations")
        overrides[key] = args.epochs
    if args.iterations is not None:
        if "iterations" not in schedule:
            raise TrainingError(f"the {plans['method']} schedule has no 'iterations'; it has {sorted(schedule)}")
        overrides["iterations"] = args.iterations
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainingError(f"--set {item}: expected KEY=VALUE")
        overrides[key] = parse_value(value)
    apply_schedule_overrides(schedule, overrides)  # reports a bad key before any process starts
    return schedule, overrides


def choose_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA GPU is visible to torch")
    return requested


def fold_output_folder(dataset: str, plans: dict, fold: int) -> Path:
    return results_root() / dataset / f"{plans['method']}__{plans['plans_name']}" / f"fold_{fold}"


def train_fold(args, dataset: str, plans: dict, plans_path: Path, fold: int, device: str,
               rank: int = 0, world_size: int = 1) -> Path:
    output = fold_output_folder(dataset, plans, fold)
    if rank == 0:
        check_output_folder(output, args)
    schedule, overrides = schedule_overrides(args, plans)
    plans = dict(plans, schedule=schedule)
    cls = trainer_class(plans["method"], args.trainer)
    trainer = cls(plans, fold, plans_path.parent, output, device=device, schedule_overrides=overrides,
                  seed=args.seed, rank=rank, world_size=world_size)
    if args.checkpoint_every:
        trainer.checkpoint_every = args.checkpoint_every
    trainer.initialize()
    if args.continue_training:
        trainer.resume()
    if rank == 0:
        save_plans_copy(plans_path, output.parent)
    if args.val and not trainer.finished:
        raise TrainingError(f"{output}: fold {fold} has not finished training ({trainer.position['step']} "
                            f"iterations); --val needs a finished fold")
    if trainer.finished:
        if rank == 0:
            print(f"fold {fold} already finished its schedule ({trainer.position['step']} iterations); "
                  f"exporting validation maps again")
    else:
        trainer.run_training()
    if rank == 0:
        folder = trainer.export_validation()
        data = trainer.data_loading_seconds()
        print(f"fold {fold}: trained in {trainer.elapsed():.0f} s ({data:.1f} s of it making batches); "
              f"outputs in {output}; validation maps in {folder}")
        calibrate_and_score(trainer, plans, plans_path.parent, output)
    return output


def calibrate_and_score(trainer, plans: dict, preprocessed_folder: Path, output: Path) -> None:
    """threshold.json from the fold's validation maps, then the fold's validation scores."""
    modality = load_json(preprocessed_folder / "dataset.json")["modality"]
    cases = load_validation_cases(output, preprocessed_folder / plans["preprocessing"]["data_folder"], modality)
    threshold = calibrate_fold(output, plans, cases, trainer.histogram_range)
    how = threshold["how"] + (f" (instead of {plans['threshold']['strategy']}: {threshold['fallback_reason']})"
                              if "fallback_reason" in threshold else "")
    print(f"fold {trainer.fold}: threshold {threshold['value']:.4g} ({how}), anomalous {threshold['anomalous_side']} it")
    summary = score_fold(cases, threshold, plans.get("postprocessing"), output / VALIDATION_FOLDER / SUMMARY_FILE)
    pixel, image = summary["pixel"], summary["image"]
    if pixel:
        print(f"fold {trainer.fold} validation ({summary['num_cases']} cases, {summary['space']}): "
              f"Dice {pixel['dice']['mean']:.3f} ± {pixel['dice']['std']:.3f} "
              f"(without post-processing {pixel['dice_without_postprocessing']['mean']:.3f}), "
              f"AUROC {pixel['auroc']['mean']:.3f}, AP {pixel['average_precision']['mean']:.3f}")
    if image:
        print(f"fold {trainer.fold} validation images: AUROC {image['auroc']:.3f}, F1 {image['f1']:.3f}")


def check_output_folder(output: Path, args) -> None:
    existing = [n for n in (CHECKPOINT_LATEST, CHECKPOINT_FINAL) if (output / n).exists()]
    if args.continue_training:
        if not (output / CHECKPOINT_LATEST).is_file():
            raise TrainingError(f"{output / CHECKPOINT_LATEST}: no checkpoint to continue from; start without --continue")
    elif existing and not args.overwrite:
        raise TrainingError(f"{output} already holds {', '.join(existing)}; use --continue to resume it or "
                            f"--overwrite to start again")
    elif existing:
        for name in (CHECKPOINT_LATEST, CHECKPOINT_FINAL, LOG_FILE):
            (output / name).unlink(missing_ok=True)


def save_plans_copy(plans_path: Path, method_folder: Path) -> None:
    """Prediction reads the plans, dataset.json and fingerprint from the trained model's folder."""
    method_folder.mkdir(parents=True, exist_ok=True)
    for source, name in ((plans_path, "plans.json"), (plans_path.parent / "dataset.json", "dataset.json"),
                         (plans_path.parent / "dataset_fingerprint.json", "dataset_fingerprint.json")):
        if source.is_file():
            with atomic_output(method_folder / name) as tmp:
                shutil.copyfile(source, tmp)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, args) -> None:
    backend = "nccl" if args.device == "cuda" else "gloo"
    torch.distributed.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world_size)
    try:
        _train_all(args, rank, world_size)
    finally:
        torch.distributed.destroy_process_group()


def _train_all(args, rank: int, world_size: int) -> None:
    device = args.device
    if device == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
        device = f"cuda:{rank % torch.cuda.device_count()}"
    if world_size > 1 and device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    for fold in args.folds:
        train_fold(args, args.dataset_name, args.plans, args.plans_path, fold, device, rank, world_size)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="autouad_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="dataset id or DatasetXXX_Name")
    parser.add_argument("fold", help="fold number, or 'all'")
    parser.add_argument("-m", "--method", choices=METHODS, default=None,
                        help="train this method's plans (default: the planner's choice in plans.json)")
    parser.add_argument("-p", "--plans-name", default=None, help="plans to train from (default autouadPlans)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=None, help="another of the method's schedules")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per step / phase (epoch-based schedules)")
    parser.add_argument("--cycles", type=int, nargs=2, metavar=("STAGE1", "STAGE2"), default=None,
                        help="ASC-Net cycles in stage 1 and stage 2")
    parser.add_argument("--iterations", type=int, default=None, help="iterations (iteration-based schedules)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="change any schedule setting")
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
    args = parser.parse_args(argv)
    try:
        args.device = choose_device(args.device)
        args.dataset_name = find_dataset_name(args.dataset)
        if args.val:
            args.continue_training = True
        args.plans, args.plans_path = find_plans(preprocessed_root() / args.dataset_name, args.method, args.plans_name)
        num_folds = args.plans["folds"]["num_folds"]
        if args.fold == "all":
            args.folds = list(range(num_folds))
        elif args.fold.isdigit() and int(args.fold) < num_folds:
            args.folds = [int(args.fold)]
        else:
            raise TrainingError(f"fold {args.fold} is out of range: {args.dataset_name} has folds 0 to "
                                f"{num_folds - 1} (or 'all')")
        schedule_overrides(args, args.plans)  # report bad overrides before starting processes
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size > 1:  # under torchrun
            backend = "nccl" if args.device == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)
            try:
                _train_all(args, torch.distributed.get_rank(), world_size)
            finally:
                torch.distributed.destroy_process_group()
        elif args.num_gpus > 1:
            if args.device == "cuda" and torch.cuda.device_count() < args.num_gpus:
                raise TrainingError(f"--num-gpus {args.num_gpus}: only {torch.cuda.device_count()} GPU(s) visible")
            torch.multiprocessing.spawn(_ddp_worker, args=(args.num_gpus, _free_port(), args), nprocs=args.num_gpus)
        else:
            _train_all(args, 0, 1)
    except (TrainingError, CalibrationError, PlansNotFoundError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; resume with --continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
