"""Training folds of a planned and preprocessed dataset: what ``autouad.api.train`` and
``autouad_train`` run.

Per fold: build the method's trainer from the plans (the schedule with any overrides), train it or
resume it, export the validation cases' maps, calibrate the fold's threshold on them (by the plans'
strategy; never on test labels), score the fold's validation cases, and save the trained model
(``model.pt``: autouad.model.AnomalyModel). Outputs: $AUTOUAD_results/DatasetXXX_Name/
<method>__<plans>/fold_K/.

Multi-GPU: ``num_gpus`` > 1 starts that many DDP processes on this machine; under torchrun the
processes exist already and join their process group. ``device="cpu", num_gpus=2`` runs two CPU
processes with the gloo backend (what the tests do).
"""
from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import torch

from autouad.calibration.thresholds import calibrate_fold, load_validation_maps
from autouad.evaluation.fold_validation import SUMMARY_FILE, score_fold
from autouad.methods import get_method, trainer_class
from autouad.model import MODEL_FILE, AnomalyModel, DatasetFacts
from autouad.planning.method_plans import load_method_plans
from autouad.planning.plans import Plans, keeps_best_proxy_by_default
from autouad.training.base_trainer import (CHECKPOINT_FINAL, CHECKPOINT_LATEST, LOG_FILE,
                                          VALIDATION_FOLDER, apply_schedule_overrides)
from autouad.training.fold_data import TrainingError
from autouad.utils.console import tolerate_ascii_consoles
from autouad.utils.files import atomic_output, load_json


@dataclass
class TrainRequest:
    """Everything a training run needs, as plain values (it travels to DDP worker processes)."""
    dataset: str                       # DatasetXXX_Name
    plans: Plans
    plans_path: Path                   # the plans file (its folder is the preprocessed dataset folder)
    results_folder: Path               # $AUTOUAD_results
    folds: list[int]
    schedule: str | None = None        # another of the method's schedules
    overrides: dict = field(default_factory=dict)
    continue_training: bool = False
    overwrite: bool = False
    validation_only: bool = False      # no training: export, calibrate and score a finished fold again
    device: str = "cpu"
    num_gpus: int = 1
    trainer: str | None = None         # dotted path of a user's AutoUADTrainer subclass
    checkpoint_every: int | None = None
    seed: int = 12345
    quiet: bool = False


@dataclass
class TrainedFold:
    fold: int
    folder: Path
    seconds: float
    threshold: float
    strategy: str
    validation: dict                   # the fold's validation summary (score_cases)


def alias_overrides(method: str, **values) -> dict:
    """Schedule overrides from the command-line shorthands (``epochs=10``, ``cycles=[2, 1]``,
    ``iterations=500``), through the keys the method's registry declaration maps them to."""
    aliases = get_method(method).schedule_aliases
    overrides = {}
    for option, value in values.items():
        if value is None:
            continue
        keys = aliases.get(option)
        if not keys:
            offered = ", ".join(f"--{k}" for k in aliases) or "--set KEY=VALUE"
            raise TrainingError(f"the {method} schedule has no --{option}; use {offered}")
        overrides.update(zip(keys, value if isinstance(value, (list, tuple)) else [value] * len(keys)))
    return overrides


def resolve_schedule(plans: Plans, schedule: str | None, overrides: dict) -> dict:
    """The schedule to start from (the plans', or another of the method's by name), checked
    against the overrides before any process starts."""
    chosen = dict(plans.schedule)
    if schedule:
        schedules = load_method_plans(plans.method)["schedules"]
        if schedule not in schedules:
            raise TrainingError(f"{plans.method} has no schedule {schedule!r}; it has {', '.join(schedules)}")
        chosen = dict(schedules[schedule], name=schedule)
        if keeps_best_proxy_by_default(chosen, plans.task):  # as the planner would have planned it
            chosen["keep_checkpoint"] = "best_proxy"
    apply_schedule_overrides(chosen, overrides)  # a bad key is reported here, not in a worker
    return chosen


def fold_output_folder(results_folder: Path, dataset: str, plans: Plans, fold: int) -> Path:
    return Path(results_folder) / dataset / f"{plans.method}__{plans.plans_name}" / f"fold_{fold}"


def check_output_folder(output: Path, request: TrainRequest) -> None:
    existing = [n for n in (CHECKPOINT_LATEST, CHECKPOINT_FINAL) if (output / n).exists()]
    if request.continue_training:
        if not (output / CHECKPOINT_LATEST).is_file():
            raise TrainingError(f"{output / CHECKPOINT_LATEST}: no checkpoint to continue from; start without --continue")
    elif existing and not request.overwrite:
        raise TrainingError(f"{output} already holds {', '.join(existing)}; use --continue to resume it or "
                            f"--overwrite to start again")
    elif existing:
        # every checkpoint of the run overwritten: latest, final, best and a method's own (ASC-Net's restarts)
        for path in output.glob("checkpoint_*.pt"):
            path.unlink()
        for name in (LOG_FILE, MODEL_FILE):
            (output / name).unlink(missing_ok=True)


def save_plans_copy(plans_path: Path, method_folder: Path) -> None:
    """The model folder keeps the plans, dataset.json and fingerprint it was trained from."""
    method_folder.mkdir(parents=True, exist_ok=True)
    for source, name in ((plans_path, "plans.json"), (plans_path.parent / "dataset.json", "dataset.json"),
                         (plans_path.parent / "dataset_fingerprint.json", "dataset_fingerprint.json")):
        if source.is_file():
            with atomic_output(method_folder / name) as tmp:
                shutil.copyfile(source, tmp)


def train_fold(request: TrainRequest, fold: int, device: str, rank: int = 0, world_size: int = 1) -> TrainedFold | None:
    """Train (or resume) one fold, then on rank 0 export, calibrate, score and save its model."""
    plans = request.plans
    output = fold_output_folder(request.results_folder, request.dataset, plans, fold)
    if rank == 0:
        check_output_folder(output, request)
    plans = plans.replace(schedule=resolve_schedule(plans, request.schedule, request.overrides))
    cls = trainer_class(plans.method, request.trainer)
    trainer = cls(plans, fold, request.plans_path.parent, output, device=device,
                  schedule_overrides=request.overrides, seed=request.seed, rank=rank, world_size=world_size)
    if request.checkpoint_every:
        trainer.checkpoint_every = request.checkpoint_every
    trainer.initialize()
    if request.continue_training:
        trainer.resume()
    elif trainer.schedule.get("budget_minutes"):
        trainer.fit_to_budget(float(trainer.schedule["budget_minutes"]))
    if rank == 0:
        save_plans_copy(request.plans_path, output.parent)
    if request.validation_only and not trainer.finished:
        raise TrainingError(f"{output}: fold {fold} has not finished training ({trainer.position['step']} "
                            f"iterations); --val needs a finished fold")
    if trainer.finished:
        if rank == 0:
            print(f"fold {fold} already finished its schedule ({trainer.position['step']} iterations); "
                  f"exporting validation maps again")
    else:
        trainer.run_training()
    if rank != 0:
        return None
    trainer.use_kept_checkpoint()
    folder = trainer.export_validation()
    print(f"fold {fold}: trained in {trainer.elapsed():.0f} s ({trainer.data_loading_seconds():.1f} s of it making "
          f"batches); outputs in {output}; validation maps in {folder}")
    return calibrate_and_save(trainer, request.plans_path.parent, output)


def calibrate_and_save(trainer, preprocessed_folder: Path, output: Path) -> TrainedFold:
    """threshold.json from the fold's validation maps, the fold's validation scores, and model.pt."""
    plans = trainer.plans
    dataset = DatasetFacts.from_dataset_json(load_json(preprocessed_folder / "dataset.json"))
    cases = load_validation_maps(output, preprocessed_folder / plans.preprocessing.data_folder, dataset.modality)
    threshold = calibrate_fold(output, plans, cases, trainer.histogram_range)
    how = threshold.how + (f" (instead of {plans.threshold.strategy}: {threshold.details['fallback_reason']})"
                           if "fallback_reason" in threshold.details else "")
    print(f"fold {trainer.fold}: threshold {threshold.value:.4g} ({how}), anomalous {threshold.anomalous_side} it")
    if threshold.image is not None:
        print(f"fold {trainer.fold}: image score {threshold.image['image_score_reason']}")
    summary = score_fold(cases, threshold, plans.postprocessing, output / VALIDATION_FOLDER / SUMMARY_FILE)
    pixel, image = summary["pixel"], summary["image"]
    if pixel and pixel["num_cases_with_anomaly"]:
        unprocessed = pixel["dice_without_postprocessing"]
        print(f"fold {trainer.fold} validation ({pixel['num_cases_with_anomaly']} cases with anomalies, "
              f"{summary['space']}): Dice {pixel['dice']['mean']:.3f} ± {pixel['dice']['std']:.3f}"
              + (f" (without post-processing {unprocessed['mean']:.3f})" if unprocessed else "")
              + (f", AUROC {pixel['auroc']['mean']:.3f}, AP {pixel['average_precision']['mean']:.3f}"
                 if pixel["auroc"] else ""))
    if image:
        print(f"fold {trainer.fold} validation images ({image['num_images']}): AUROC {image['auroc']:.3f}, "
              f"F1 {image['f1']:.3f}")
    AnomalyModel.from_trainer(trainer, dataset, threshold).save(output / MODEL_FILE)
    return TrainedFold(trainer.fold, output, trainer.elapsed(), threshold.value, threshold.strategy, summary)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, request: TrainRequest) -> None:
    tolerate_ascii_consoles()   # a spawned process starts with fresh streams
    backend = "nccl" if request.device == "cuda" else "gloo"
    torch.distributed.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world_size)
    try:
        _train_folds(request, rank, world_size)
    finally:
        torch.distributed.destroy_process_group()


def _train_folds(request: TrainRequest, rank: int, world_size: int) -> list[TrainedFold]:
    device = request.device
    if device == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
        device = f"cuda:{rank % torch.cuda.device_count()}"
    if world_size > 1 and device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    done = [train_fold(request, fold, device, rank, world_size) for fold in request.folds]
    return [d for d in done if d is not None]


def run_training(request: TrainRequest) -> list[TrainedFold]:
    """Train the request's folds in this process, under torchrun's process group, or in
    ``num_gpus`` DDP processes started here (their results are read back from the fold folders)."""
    resolve_schedule(request.plans, request.schedule, request.overrides)  # bad overrides: before any process
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:  # under torchrun
        torch.distributed.init_process_group("nccl" if request.device == "cuda" else "gloo")
        try:
            return _train_folds(request, torch.distributed.get_rank(), world_size)
        finally:
            torch.distributed.destroy_process_group()
    if request.num_gpus > 1:
        if request.device == "cuda" and torch.cuda.device_count() < request.num_gpus:
            raise TrainingError(f"--num-gpus {request.num_gpus}: only {torch.cuda.device_count()} GPU(s) visible")
        torch.multiprocessing.spawn(_ddp_worker, args=(request.num_gpus, _free_port(), request),
                                    nprocs=request.num_gpus)
        return [trained_fold_from_folder(fold_output_folder(request.results_folder, request.dataset, request.plans, f))
                for f in request.folds]
    return _train_folds(request, 0, 1)


def trained_fold_from_folder(folder: Path) -> TrainedFold:
    """A finished fold's figures, read from what it wrote."""
    from autouad.calibration.thresholds import THRESHOLD_FILE
    threshold = load_json(folder / THRESHOLD_FILE)
    log = load_json(folder / LOG_FILE)
    seconds = max((e.get("seconds", 0.0) for e in log.get("entries", [])), default=0.0)
    summary_path = folder / VALIDATION_FOLDER / SUMMARY_FILE
    return TrainedFold(int(folder.name.split("_")[-1]), folder, seconds, threshold["value"], threshold["strategy"],
                       load_json(summary_path) if summary_path.is_file() else {})
