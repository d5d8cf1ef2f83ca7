"""The trainer base that every method subclasses, and that users subclass to change one thing.

A method says what its networks, optimizers and slice pools are, which phases its schedule has
(ASC-Net: discriminator and main-module steps in cycles and stages; the auto-encoders: one phase
of iterations) and what one iteration does. The base does everything else the same way for all:

* the fold's cases from ``splits_final.json`` (patient-wise), the schedule from the plan with
  command-line overrides (``--epochs``, ``--cycles``, ``--iterations`` or any ``key=value``);
* seeding per iteration, so that a resumed run draws the same dropout masks and noise;
* ``checkpoint_latest.pt`` every ``checkpoint_every`` iterations and at every phase end, and
  ``checkpoint_final.pt``, both written atomically; ``--continue`` resumes at the saved iteration
  with the networks, optimizer states, stream positions, stage/cycle and log as they were;
* ``training_log.json`` and ``progress.png``;
* DDP: each rank keeps its share of every global batch; rank 0 writes;
* the validation quality at a few points of the run (the curve in progress.png) and, with the
  schedule setting ``keep_checkpoint=best_validation`` (or ``best_proxy``, label-free), the
  networks at the best of those points in ``checkpoint_best.pt``, which then stand for the fold
  (see ``use_kept_checkpoint``);
* at the end, the fold's validation cases run through the model and their anomaly maps are saved
  in ``validation/`` (preprocessed slice space) for calibration and scoring.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import io
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from autouad.planning.plans import GENERIC_SCHEDULE_KEYS, Plans, anomaly_intensity_sign
from autouad.training.checkpoint import (CHECKPOINT_BEST, CHECKPOINT_FINAL, CHECKPOINT_LATEST, load_checkpoint,
                                         save_checkpoint)
from autouad.training.fold_data import FoldData, PreprocessedCase, TrainingError
from autouad.training.logger import TrainingLog
from autouad.training.sampling import PoolBatchLoader
from autouad.utils.files import save_figure, save_json, save_npy
from autouad.utils.imports import import_subclass
from autouad.utils.machine import cpu_has_native_bf16, flush_denormals
from autouad.utils.progress import progress

LOG_FILE = "training_log.json"
PROGRESS_PLOT = "progress.png"
# progress.png is drawn at most this often, and always with the final checkpoint: a drawing takes
# 0.5-1.5 s on a CPU, more than a smoke run's iterations, and a person looks at it once a minute at most
PROGRESS_PLOT_SECONDS = 60.0
VALIDATION_FOLDER = "validation"


@dataclass(frozen=True)
class Phase:
    """A stretch of iterations that do the same kind of step."""
    name: str
    kind: str
    iterations: int
    stage: int = 0
    cycle: int = 0
    # which of a method's independent restarts of its schedule (ASC-Net's ``restarts``); 0: none
    restart: int = 0


def import_trainer(dotted: str) -> type:
    """The AutoUADTrainer subclass at ``dotted`` ("package.module.Class"); TrainingError otherwise."""
    return import_subclass(dotted, AutoUADTrainer, TrainingError, "trainer")


# GENERIC_SCHEDULE_KEYS (autouad.planning.plans): the settings every method's schedule may have
# "final": the networks as the schedule leaves them (the papers', and nnU-Net's default);
# "best_validation": the networks at the best point of the validation curve after the first
# iterations (nnU-Net's checkpoint_best). It needs validation cases with masks or image labels
# (else the final networks are kept, and the log says so). The curve's few points are measured on
# the fold's validation cases, so a benchmark that scores on those same cases sees a small
# optimistic bias; one that scores on a held-out test set (Kermany's) does not.
# "best_proxy": the same, chosen label-free: at each point the model looks for synthetic blobs
# pasted into a fixed draw of validation slices (images), as find_best_configuration's proxy does
# (autouad.selection.proxy); no mask or image label is read, so it works on any dataset and a
# benchmark may score the same cases without bias from the choice.
KEEP_CHECKPOINT = ("final", "best_validation", "best_proxy")
# the schedule's training_precision (see AutoUADTrainer.training_autocast)
TRAINING_PRECISIONS = ("fp32", "bf16", "auto")


def apply_schedule_overrides(schedule: dict, overrides: dict | None) -> dict:
    out = dict(schedule)
    for key, value in (overrides or {}).items():
        if key not in out and key not in GENERIC_SCHEDULE_KEYS:
            settings = ", ".join(sorted(k for k in out if k not in ("name", "note")))
            raise TrainingError(f"the {out.get('name')} schedule has no setting {key!r}; it has {settings}")
        out[key] = value
    for key, choices in (("keep_checkpoint", KEEP_CHECKPOINT), ("training_precision", TRAINING_PRECISIONS)):
        if key in out and out[key] not in choices:
            raise TrainingError(f"{key} must be one of {', '.join(choices)}, not {out[key]!r}")
    return out


class AutoUADTrainer:
    method: str = ""
    # The networks prediction runs (the rest, e.g. discriminators, only train); None: all of them.
    # A trained model (autouad.model.AnomalyModel) keeps only these.
    inference_networks: tuple[str, ...] | None = None
    # Iterations between two writes of checkpoint_latest.pt (phase ends always write one).
    checkpoint_every: int = 50
    # What the saved validation maps are, and the value range their histograms cover (None: no histogram).
    map_name: str = "anomaly map"
    histogram_range: tuple[float, float] | None = None
    histogram_bins: int = 256
    # Precision of predict_slices: "auto" (bf16 autocast on CUDA, fp32 on the CPU), "fp32" or "bf16".
    inference_precision: str = "auto"
    # Precision of the training iterations when the schedule does not say (its training_precision):
    # "fp32", "bf16" (autocast) or "auto" (bf16 autocast on a CPU with bf16 instructions, fp32
    # elsewhere). A method says "auto" where its own measurements showed the speed-up and no loss
    # of validation quality (docs/results.md, "bf16 training on a CPU with bf16 instructions").
    training_precision: str = "fp32"
    # More validation cases than this are drawn as one pooled histogram in histograms.png.
    max_plotted_histograms: int = 20
    # Schedule keys that count work (iterations, epochs, caps): a wall-clock budget scales them all by
    # one factor, so the ratios between a method's stages stay its paper's (see fit_to_budget).
    budget_keys: tuple[str, ...] = ()
    # budget keys the trainer reads as real numbers (ASC-Net's epochs per step): scaled without rounding,
    # because a small budget would round 1.35 epochs to 1 and train a quarter less than it has time for
    fractional_budget_keys: tuple[str, ...] = ()
    # How often over a run the validation quality is measured (the curve in progress.png), and on
    # how many validation slices (or images): a cheap probe, not the fold's final validation.
    validation_points: int = 5
    validation_slices: int = 32
    # keep_checkpoint=best_proxy: how many validation slices get blobs (pixel level), or how many
    # validation images are scored, half of them with a blob (image level: one number per image, so
    # more of them)
    proxy_slices: int = 32
    proxy_images: int = 96
    # Networks and their input batches in channels-last (NHWC) memory: the maps are the same, the
    # convolutions faster or slower by method; each method sets it from benchmarks/speed_options.py
    # (docs/results.md, "Speed options").
    channels_last: bool = False

    def __init__(self, plans: Plans, fold: int, preprocessed_dataset_folder: Path | None,
                 output_folder: Path | None, device: str | torch.device = "cpu",
                 schedule_overrides: dict | None = None, seed: int = 12345, rank: int = 0, world_size: int = 1):
        flush_denormals()  # training and prediction both build a trainer; see flush_denormals for why
        self.plans = plans
        self.settings = plans.method_settings
        self.fold = fold
        self.device = torch.device(device)
        # None for a trainer that only predicts (see for_inference)
        self.output_folder = None if output_folder is None else Path(output_folder)
        self.schedule_overrides = dict(schedule_overrides or {})
        self.schedule = apply_schedule_overrides(plans.schedule, self.schedule_overrides)
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.batch_size = int(plans.batch_size)
        if self.batch_size < world_size:
            raise TrainingError(f"batch size {self.batch_size} is smaller than the {world_size} DDP processes")
        # None for a trainer that only predicts (see for_inference): it needs no preprocessed data.
        self.data = None if preprocessed_dataset_folder is None else FoldData(Path(preprocessed_dataset_folder),
                                                                              plans, fold)
        self.input_channels = list(plans.input_channels)
        self.position = {"phase": 0, "iteration": 0, "step": 0}
        self.skipped_phases: set[int] = set()
        self.finished = False
        self.log = TrainingLog()
        self.elapsed_before = 0.0
        self.networks: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.loaders: dict[str, PoolBatchLoader] = {}
        self._ddp: dict[str, torch.nn.Module] = {}
        self.phases: list[Phase] = []
        self.pool_sizes: dict = {}  # what build_pools found, for the log
        self.batch_preparation_seconds = 0.0  # a method's own batch making beyond the loaders (see data_loading_seconds)
        # the best point of the validation curve so far, with keep_checkpoint=best_validation:
        # {"step", "metric", "value"}; its networks are in checkpoint_best.pt
        self.best_validation: dict | None = None

    # ---- what a method defines -------------------------------------------------------------------
    def build_pools(self) -> None:
        """Set up ``self.loaders`` (and whatever pools the method needs)."""
        raise NotImplementedError

    def build_networks(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def build_phases(self) -> list[Phase]:
        raise NotImplementedError

    def train_iteration(self, phase: Phase, iteration: int) -> dict[str, float]:
        """One iteration of ``phase``; returns the losses to log."""
        raise NotImplementedError

    def predict_anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) preprocessed slices -> (B, H, W) anomaly maps, higher = more anomalous
        (ASC-Net returns I_ro, whose threshold side the calibration picks)."""
        raise NotImplementedError

    def on_phase_end(self, phase_index: int, phase: Phase) -> None:
        """Called once after each phase (and again after a resume that stopped right there)."""

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # ---- helpers for methods ---------------------------------------------------------------------
    def loader(self, pool, name: str, batch_size: int | None = None, transforms=None) -> PoolBatchLoader:
        loader = PoolBatchLoader(pool, batch_size or self.batch_size, self.seed, name=f"fold{self.fold}/{name}",
                                 rank=self.rank, world_size=self.world_size, transforms=transforms)
        self.loaders[name] = loader
        return loader

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        """A batch on the device, in the networks' memory layout (``channels_last``)."""
        tensor = torch.from_numpy(array).to(self.device, non_blocking=True)
        if self.channels_last and tensor.dim() == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def placed(self, networks: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
        """The built networks on the device, in the memory layout of ``channels_last``."""
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return {name: net.to(self.device, memory_format=layout) for name, net in networks.items()}

    def train_net(self, name: str) -> torch.nn.Module:
        """The network to run a training forward pass through: its DDP wrapper under DDP."""
        return self._ddp.get(name, self.networks[name])

    def iterations_per_epoch(self, pool_size: int) -> int:
        return max(1, int(np.ceil(pool_size / self.batch_size)))

    def reduce_losses(self, losses: dict[str, float]) -> dict[str, float]:
        if self.world_size == 1:
            return losses
        keys = sorted(losses)
        t = torch.tensor([float(losses[k]) for k in keys], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def _collective_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    # ---- lifecycle -------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def initialize(self) -> None:
        torch.manual_seed(self.seed)
        self.build_pools()
        self.networks = self.placed(self.build_networks())
        self.optimizers = self.build_optimizers()
        self.phases = self.build_phases()
        total = sum(p.iterations for p in self.phases)
        self.log.every = max(1, total // 2000)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = {k: DDP(self.networks[k], device_ids=ids) for k in self.optimizers_by_network()}

    def optimizers_by_network(self) -> list[str]:
        """Networks that have an optimizer (the ones DDP must keep in sync)."""
        return [k for k in self.networks if k in self.optimizers]

    @classmethod
    def dotted_name(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    def header(self) -> dict:
        return {"method": self.method, "trainer": self.dotted_name(),
                "dataset": self.plans.dataset, "plans_name": self.plans.plans_name, "fold": self.fold,
                "schedule": self.schedule, "schedule_overrides": self.schedule_overrides,
                "batch_size": self.batch_size, "world_size": self.world_size, "device": str(self.device),
                "training_precision": self.resolved_training_precision,
                "train_cases": self.data.train_names, "validation_cases": self.data.validation_names,
                "phases": [asdict(p) for p in self.phases], "skipped_phases": sorted(self.skipped_phases),
                "pools": self.pool_sizes, "finished": self.finished,
                "data_loading_seconds": round(self.data_loading_seconds(), 3)}

    def data_loading_seconds(self) -> float:
        """Seconds this process spent making batches (since it started or resumed): reading slices
        in the loaders, plus what a method adds to ``batch_preparation_seconds`` (the two-phase
        net's pseudo-anomaly synthesis); the networks wait for it, as it runs in the loop's thread."""
        return sum(loader.seconds for loader in self.loaders.values()) + self.batch_preparation_seconds

    def state_dict(self) -> dict:
        # the plans and the trainer travel inside the checkpoint, so that it loads without the
        # training log or the model folder's plans.json (plain data: weights-only loading stays)
        return {"format": "autouad-checkpoint-1", "method": self.method, "fold": self.fold,
                "trainer": self.dotted_name(), "plans": self.plans.to_dict(),
                "plans_name": self.plans.plans_name, "schedule": self.schedule,
                "schedule_overrides": self.schedule_overrides, "seed": self.seed,
                "phase_names": [p.name for p in self.phases], "position": dict(self.position),
                "skipped_phases": sorted(self.skipped_phases), "finished": self.finished,
                "elapsed_seconds": self.elapsed(),
                "networks": {k: v.state_dict() for k, v in self.networks.items()},
                "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
                "streams": {k: v.stream.state_dict() for k, v in self.loaders.items()},
                "log": self.log.state_dict(), "extra": self.extra_state(),
                "best_validation": self.best_validation}

    def load_state_dict(self, state: dict, source: Path) -> None:
        if state.get("method") != self.method or state.get("fold") != self.fold:
            raise TrainingError(f"{source}: checkpoint of {state.get('method')} fold {state.get('fold')}, "
                                f"not {self.method} fold {self.fold}")
        names = [p.name for p in self.phases]
        done = state["position"]["phase"]
        if names[:done] != state["phase_names"][:done]:
            raise TrainingError(f"{source}: the schedule changed before the saved position "
                                f"(phase {done}); only later phases may change")
        try:
            self._load_parts(state)
        except (KeyError, RuntimeError, ValueError) as e:
            raise TrainingError(f"{source}: does not fit this trainer ({str(e).splitlines()[0][:160]})") from None
        self.position = dict(state["position"])
        self.skipped_phases = set(state["skipped_phases"])
        self.log.load_state_dict(state["log"])
        self.elapsed_before = float(state["elapsed_seconds"])
        self.best_validation = state.get("best_validation")  # absent in checkpoints written before it
        if self.best_validation and self.best_validation["metric"].startswith("proxy") != (self.curve_event == "proxy"):
            self.best_validation = None  # chosen by the other curve (keep_checkpoint changed on --continue)
        self.load_extra_state(state["extra"])
        # A longer schedule given with --continue re-opens a finished run.
        self.finished = bool(state["finished"]) and self.position["phase"] >= len(self.phases)

    def resume(self) -> None:
        path = self.output_folder / CHECKPOINT_LATEST
        state = load_checkpoint(path)
        if "budget_factor" in (state.get("schedule") or {}) and "budget_factor" not in self.schedule:
            # a run fitted to a budget resumes with the schedule it was fitted to, not a new measurement;
            # which networks to keep counts no work, so this command line's choice holds
            kept = {k: self.schedule_overrides[k] for k in ("keep_checkpoint",) if k in self.schedule_overrides}
            self.schedule = {**state["schedule"], **kept}
            self.phases = self.build_phases()
        self.load_state_dict(state, path)
        if self.is_main:
            print(f"resuming {self.method} fold {self.fold} at iteration {self.position['step']} "
                  f"(phase {self.position['phase']}, iteration {self.position['iteration']})")

    # ---- a wall-clock budget ------------------------------------------------------------------------
    def fit_to_budget(self, minutes: float, probe_iterations: int = 2) -> dict:
        """Scale the schedule so that its training phases take about ``minutes`` here.

        Each kind of phase runs ``probe_iterations`` timed iterations (after one warm-up) from the
        starting state, which is then restored exactly (weights, optimizers, data streams, log), so a
        budgeted run trains as a run of the scaled schedule would. The schedule's ``budget_keys`` are
        all multiplied by budget / estimate: the paper's ratios between stages are kept, only their
        length follows the machine. The work a run does besides its iterations is timed too and
        taken out of the budget first (budget_overheads: the checkpoint writes, the validation-curve
        points, a method's own periodic work such as HealthyGAN's model selection); the final
        validation export and calibration come on top of the budget."""
        snapshot = copy.deepcopy(self.state_dict())
        seconds: dict[str, float] = {}
        try:
            fixed_seconds, per_iteration_seconds = self.budget_overheads()
            for phase in self.phases:
                if phase.kind in seconds:
                    continue
                for network in self.networks.values():
                    network.train()
                times = []
                for i in range(probe_iterations + 1):
                    self.seed_iteration(10 ** 9 + i)  # never a step the run itself seeds
                    start = time.perf_counter()
                    with self.training_autocast():
                        self.train_iteration(phase, i)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    times.append(time.perf_counter() - start)
                seconds[phase.kind] = float(np.median(times[1:]))
        finally:
            self.restore(snapshot)
        if self.world_size > 1:
            # every DDP process must scale to the same schedule (or the last all-reduce waits for
            # ever): all take the slowest process's times
            kinds = sorted(seconds)
            times = torch.tensor([seconds[k] for k in kinds], dtype=torch.float64, device=self.device)
            dist.all_reduce(times, op=dist.ReduceOp.MAX)
            seconds = dict(zip(kinds, times.tolist()))
            # the slowest rank's overheads too
            overheads = torch.tensor([fixed_seconds, per_iteration_seconds], dtype=torch.float64, device=self.device)
            dist.all_reduce(overheads, op=dist.ReduceOp.MAX)
            fixed_seconds, per_iteration_seconds = overheads.tolist()

        def seconds_of(phases) -> float:
            return sum(p.iterations * (seconds[p.kind] + per_iteration_seconds) for p in phases)
        estimate = seconds_of(self.phases)
        # where the fixed overheads eat the whole budget, a tenth of it still goes to training
        training_seconds = max(minutes * 60.0 - fixed_seconds, 0.1 * minutes * 60.0)
        factor = training_seconds / max(estimate, 1e-6)
        self.schedule = self.scaled_schedule(factor)
        self.schedule["budget_minutes"] = minutes
        self.phases = self.build_phases()
        fitted = {"budget_minutes": minutes, "factor": float(f"{factor:.4g}"),
                  "seconds_per_iteration": {k: round(v, 4) for k, v in seconds.items()},
                  "estimated_minutes_before": round(estimate / 60, 2),
                  "overhead_seconds": {"fixed": round(fixed_seconds, 2),
                                       "per_iteration": round(per_iteration_seconds, 4)},
                  "iterations": sum(p.iterations for p in self.phases),
                  "estimated_minutes": round((fixed_seconds + seconds_of(self.phases)) / 60, 2)}
        self.log.event(0, "budget", **fitted)
        if self.is_main:
            print(f"{self.method} fold {self.fold}: budget {minutes:g} min; measured "
                  + ", ".join(f"{k} {v:.2f} s/it" for k, v in seconds.items())
                  + f"; other work {fixed_seconds:.0f} s + {per_iteration_seconds:.2f} s/it"
                  + f"; schedule scaled by {factor:.3g} to {fitted['iterations']} iterations "
                    f"(about {fitted['estimated_minutes']:.1f} min)")
        return fitted

    def scaled_schedule(self, factor: float) -> dict:
        """The schedule with every budget key multiplied by ``factor``: a whole number stays whole
        (at least 1), unless the trainer reads the key as a real number (fractional_budget_keys)."""
        scaled = dict(self.schedule)
        for key in self.budget_keys:
            value = scaled.get(key)
            if isinstance(value, bool) or value is None:
                continue
            whole = isinstance(value, int) and key not in self.fractional_budget_keys
            scaled[key] = max(1, int(round(value * factor))) if whole else float(value) * factor
        scaled["budget_factor"] = float(f"{factor:.6g}")
        return scaled

    def budget_overheads(self) -> tuple[float, float]:
        """(seconds a run spends besides its iterations whatever their number, seconds it adds per
        iteration), timed here: the validation-curve points (validation_points + 1 of them) and the
        checkpoint writes (one every checkpoint_every iterations, timed into memory). A method with
        periodic work of its own adds it (super() plus its part); the state is restored afterwards."""
        start = time.perf_counter()
        self.validation_quality()
        if self.keep_mode == "best_proxy":
            self.proxy_quality()
        fixed = (self.validation_points + 1) * (time.perf_counter() - start)
        start = time.perf_counter()
        torch.save(self.state_dict(), io.BytesIO())
        return fixed, (time.perf_counter() - start) / max(1, self.checkpoint_every)

    def _load_parts(self, state: dict) -> None:
        """The networks', optimizers' and batch streams' saved states."""
        for k, net in self.networks.items():
            net.load_state_dict(state["networks"][k])
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        for k, loader in self.loaders.items():
            loader.stream.load_state_dict(state["streams"][k])

    def restore(self, state: dict) -> None:
        """Put back what state_dict() saved, without the checks a resumed checkpoint gets."""
        self._load_parts(state)
        self.position = dict(state["position"])
        self.log.load_state_dict(state["log"])
        self.load_extra_state(state["extra"])

    # ---- validation quality over the run ------------------------------------------------------------
    def validation_quality(self) -> dict | None:
        """A cheap measure of the model now: pixel AUROC on a few validation slices (half of them with
        anomalies) where the validation cases have masks, else image AUROC on a few labelled
        validation images; None when neither exists."""
        from autouad.evaluation.metrics import roc_auc
        cases = self.data.validation_cases if self.data is not None else []
        rng = np.random.default_rng([self.seed, self.fold])
        masked = [(c, s) for c in cases if c.mask is not None for s in range(c.num_slices)]
        if masked:
            anomalous = [(c, s) for c, s in masked if c.mask[s].any()]
            normal = [(c, s) for c, s in masked if not c.mask[s].any()]
            half = self.validation_slices // 2
            picks = [anomalous[i] for i in rng.permutation(len(anomalous))[:half]] + \
                [normal[i] for i in rng.permutation(len(normal))[:self.validation_slices - min(half, len(anomalous))]]
            if not anomalous:
                return None
            maps = self.anomalous_up_maps(np.stack([c.data[s] for c, s in picks]))
            regions = np.stack([c.region[s] for c, s in picks])
            labels = np.stack([c.mask[s] for c, s in picks]).astype(bool)
            return {"metric": "pixel AUROC", "value": roc_auc(maps[regions], labels[regions])}
        labelled = [c for c in cases if c.is_2d and c.label is not None]
        if len({c.label for c in labelled}) < 2:
            return None
        picks = [labelled[i] for i in rng.permutation(len(labelled))[:self.validation_slices]]
        if len({c.label for c in picks}) < 2:
            return None
        scores = self.image_scores(self.anomalous_up_maps(np.concatenate([c.data for c in picks])),
                                   np.stack([c.region[0] for c in picks]))
        return {"metric": "image AUROC", "value": roc_auc(scores, np.array([c.label for c in picks], bool))}

    def anomalous_up_maps(self, slices: np.ndarray) -> np.ndarray:
        """predict_slices' maps, negated where the plans put the anomalies at the map's low end
        (a leftmost histogram peak), so that higher means more anomalous for the curve's AUROCs."""
        sign = -1.0 if self.plans.threshold.peak == "leftmost" else 1.0
        return sign * self.predict_slices(slices)

    def image_scores(self, maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
        """One score per map (N, H, W) inside its region: the method's image score, as prediction uses it."""
        from autouad.methods import get_method
        from autouad.selection.image_scores import image_score
        how = get_method(self.method).image_score
        return np.array([image_score(m[None], r[None], how) for m, r in zip(maps, regions)])

    def proxy_quality(self) -> dict | None:
        """keep_checkpoint=best_proxy's label-free measure of the model now: how well its maps find
        blobs pasted into a fixed draw of the fold's validation slices (pixel AUROC inside the region;
        whatever real lesions the slices hold count as normal, the same at every point) or, for an
        image-level dataset, how well its image score tells validation images with a pasted blob
        from those without (image AUROC). No mask or image label is read. None without validation
        cases."""
        from autouad.evaluation.metrics import roc_auc
        if self.proxy_probe is None:
            return None
        slices, regions, masks, labels = self.proxy_probe
        maps = self.anomalous_up_maps(slices)
        if labels is None:
            return {"metric": "proxy pixel AUROC", "value": roc_auc(maps[regions], masks[regions])}
        return {"metric": "proxy image AUROC", "value": roc_auc(self.image_scores(maps, regions), labels)}

    @functools.cached_property
    def proxy_probe(self) -> tuple | None:
        """(slices, regions, blob masks, image labels or None): drawn once per fold, with a seed of
        its own, so that every point of the curve is measured on the same blobs."""
        from autouad.selection.proxy import paste_blobs_into_slices
        cases = self.data.validation_cases if self.data is not None else []
        rng = np.random.default_rng([self.seed, self.fold, 7])
        image_level = self.plans.task == "image"
        picks = []
        for case in cases:
            area = case.region.reshape(case.num_slices, -1).sum(axis=1)
            # slices at least half as wide as the case's widest: not the rims of the volume
            picks += [(case, s) for s in np.flatnonzero(area >= max(1, 0.5 * area.max()))]
        if not picks:
            return None
        count = self.proxy_images if image_level else self.proxy_slices
        picks = [picks[i] for i in rng.permutation(len(picks))[:count]]
        slices = np.stack([np.asarray(c.data[s], np.float32) for c, s in picks])
        regions = np.stack([c.region[s] for c, s in picks]).astype(bool)
        pixel_mm = [c.pixel_mm for c, _ in picks]
        sign = anomaly_intensity_sign(cases[0].modality, self.plans.threshold.peak)
        labels = None
        if image_level:
            labels = np.arange(len(picks)) % 2 == 1
            if labels.sum() == 0:
                return None
            pasted, masks = paste_blobs_into_slices(slices[labels], regions[labels],
                                                    [p for p, l in zip(pixel_mm, labels) if l], sign, rng)
            slices[labels], blob_masks = pasted, np.zeros(regions.shape, bool)
            blob_masks[labels] = masks
            return slices, regions, blob_masks, labels
        slices, masks = paste_blobs_into_slices(slices, regions, pixel_mm, sign, rng)
        return slices, regions, masks, None

    @property
    def keep_mode(self) -> str:
        return self.schedule.get("keep_checkpoint", "final")

    @property
    def keeps_best(self) -> bool:
        return self.keep_mode != "final"

    @property
    def curve_event(self) -> str:
        """The log event whose values choose the kept networks."""
        return "proxy" if self.keep_mode == "best_proxy" else "validation"

    def log_validation_quality(self) -> None:
        if not self.is_main:
            return
        step = self.position["step"]
        measured = {"validation": self.validation_quality()}
        if self.keep_mode == "best_proxy":
            measured["proxy"] = self.proxy_quality()
        for event, quality in measured.items():
            if quality is not None and np.isfinite(quality["value"]):
                self.log.event(step, event, minutes=round(self.elapsed() / 60, 3),
                               metric=quality["metric"], value=round(float(quality["value"]), 4))
        quality = measured.get(self.curve_event)
        if quality is not None and np.isfinite(quality["value"]):
            # the untrained networks (step 0) are the curve's start, never the fold's model
            if self.keeps_best and step > 0 and (self.best_validation is None
                                                 or quality["value"] > self.best_validation["value"]):
                self.best_validation = {"step": step, "metric": quality["metric"], "value": float(quality["value"])}
                self.save_best()
        for network in self.networks.values():
            network.train()

    def save_best(self) -> None:
        """checkpoint_best.pt: the networks only (no optimizer states: nothing resumes from here),
        with what AnomalyModel.load(..., checkpoint="checkpoint_best.pt") reads."""
        self.output_folder.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        save_checkpoint({**{k: state[k] for k in ("method", "fold", "trainer", "plans", "position",
                                                  "best_validation", "networks")},
                         "format": "autouad-best-1"}, self.output_folder / CHECKPOINT_BEST)

    def use_kept_checkpoint(self) -> dict | None:
        """With keep_checkpoint best_validation or best_proxy, put the networks of checkpoint_best.pt in place
        (for the validation export, the threshold and model.pt) and return its record; None when the
        final networks stand for the fold. checkpoint_final.pt keeps the final networks for resuming."""
        if not self.keeps_best:
            return None
        path = self.output_folder / CHECKPOINT_BEST
        if self.best_validation is None or not path.is_file():
            if any(e.get("event") == self.curve_event and e["step"] > 0 for e in self.log.events):
                why = "the curve was measured before keep_checkpoint changed on --continue"
            elif self.keep_mode == "best_validation":
                why = "no validation point could be measured (no masks or image labels)"
            else:
                why = "no proxy point could be measured (no validation slices)"
            self.note_kept_checkpoint(which="final", reason=why)
            print(f"{self.method} fold {self.fold}: no validation quality to choose by; the final networks are kept")
            return None
        state = load_checkpoint(path)
        # the file is the truth: a run stopped between writing it and its next checkpoint_latest.pt
        # resumes with an older record, and replays to the same point (or a better one) anyway
        self.best_validation = dict(state["best_validation"])
        for name, weights in state["networks"].items():
            self.networks[name].load_state_dict(weights)
        self.on_kept_networks()
        # with those decisions, so that the file and model.pt hold the same networks
        save_checkpoint(dict(state, networks=self.state_dict()["networks"]), path)
        final = [e for e in self.log.events if e.get("event") == self.curve_event and e["step"] == self.position["step"]]
        record = dict(self.best_validation, final_value=final[-1]["value"] if final else None)
        self.note_kept_checkpoint(which=self.keep_mode, kept_step=record["step"], metric=record["metric"],
                                  value=record["value"], final_value=record["final_value"])
        print(f"{self.method} fold {self.fold}: keeping the networks of iteration {record['step']} "
              f"({record['metric']} {record['value']:.3f} on the {self.curve_event} probe"
              + (f"; the final networks: {record['final_value']:.3f})" if record["final_value"] is not None else ")"))
        return record

    def on_kept_networks(self) -> None:
        """Redo what a method decides on its networks at the end of training, now that the kept
        networks replaced the final ones (ASC-Net: its orientation). Rank 0 only."""

    def note_kept_checkpoint(self, **fields) -> None:
        """One "kept checkpoint" event in training_log.json (a re-export replaces it, not adds one)."""
        self.log.events = [e for e in self.log.events if e.get("event") != "kept checkpoint"]
        self.log.event(self.position["step"], "kept checkpoint", **fields)
        self.log.save(self.output_folder / LOG_FILE, self.header())

    def elapsed(self) -> float:
        return self.elapsed_before + (time.time() - self._start if hasattr(self, "_start") else 0.0)

    def save(self, name: str) -> None:
        if not self.is_main:
            return
        self.output_folder.mkdir(parents=True, exist_ok=True)
        self.log.flush(self.position["step"], self.elapsed())
        save_checkpoint(self.state_dict(), self.output_folder / name)
        self.log.save(self.output_folder / LOG_FILE, self.header())
        if name == CHECKPOINT_FINAL or time.time() - getattr(self, "_plotted", 0.0) >= PROGRESS_PLOT_SECONDS:
            self.log.plot(self.output_folder / PROGRESS_PLOT,
                          f"{self.method} {self.plans.dataset} fold {self.fold} ({self.schedule.get('name')})")
            self._plotted = time.time()

    def seed_iteration(self, step: int) -> None:
        seed = np.random.SeedSequence([self.seed, self.fold, step, self.rank]).generate_state(1)[0]
        torch.manual_seed(int(seed))

    def remaining_iterations(self) -> int:
        left = 0
        for i, p in enumerate(self.phases):
            if i in self.skipped_phases or i < self.position["phase"]:
                continue
            left += p.iterations - (self.position["iteration"] if i == self.position["phase"] else 0)
        return left

    def run_training(self) -> None:
        self._start = self._plotted = time.time()
        done = self.position["step"]
        total = done + self.remaining_iterations()
        curve_steps = {int(round(total * (i + 1) / self.validation_points)) for i in range(self.validation_points)}
        if done == 0:
            self.log_validation_quality()  # the untrained model: where the curve starts
        bar = progress(total=total, initial=done, disable=not self.is_main,
                   desc=f"{self.method} fold {self.fold}", unit="it", dynamic_ncols=True, file=sys.stdout)
        while self.position["phase"] < len(self.phases):
            index = self.position["phase"]
            phase = self.phases[index]
            if index not in self.skipped_phases:
                bar.set_postfix_str(phase.name)
                for network in self.networks.values():
                    network.train()
                while self.position["iteration"] < phase.iterations:
                    step = self.position["step"]
                    self.seed_iteration(step)
                    with self.training_autocast():
                        losses = self.train_iteration(phase, self.position["iteration"])
                    losses = self.reduce_losses(losses)
                    self.position["iteration"] += 1
                    self.position["step"] = step + 1
                    self.log.add(step + 1, phase.name, losses, self.elapsed())
                    bar.update(1)
                    if (step + 1) % self.checkpoint_every == 0:
                        self.save(CHECKPOINT_LATEST)
                    if (step + 1) in curve_steps:
                        self.log_validation_quality()
                self.on_phase_end(index, phase)
                bar.total = self.position["step"] + self.remaining_iterations()
            self.position = {"phase": index + 1, "iteration": 0, "step": self.position["step"]}
            self.save(CHECKPOINT_LATEST)
        bar.close()
        self.finished = True
        if self.world_size > 1:
            self.check_replicas_in_sync()
        self.save(CHECKPOINT_LATEST)
        self.save(CHECKPOINT_FINAL)

    def check_replicas_in_sync(self) -> None:
        """DDP must leave every rank with the same weights; a mismatch is a bug, so say so loudly."""
        for name in self.optimizers_by_network():
            flat = torch.cat([p.detach().float().flatten() for p in self.networks[name].parameters()])
            flat = flat.to(self._collective_device())
            gathered = [torch.empty_like(flat) for _ in range(self.world_size)]
            dist.all_gather(gathered, flat)
            if any(not torch.equal(gathered[0], g) for g in gathered[1:]):
                raise RuntimeError(f"DDP replicas of {name} diverged")

    # ---- inference -------------------------------------------------------------------------------
    @classmethod
    def for_inference(cls, plans: Plans, fold: int, networks: dict[str, dict], source: Path | str,
                      device: str | torch.device = "cpu") -> "AutoUADTrainer":
        """A trainer holding only the networks prediction runs (``inference_networks``), with the
        weights of ``networks`` (name -> state dict), in evaluation mode; it needs no preprocessed
        data. ``source`` names the file the weights came from, for error messages."""
        trainer = cls(plans, fold, None, None, device=device)
        built = trainer.placed(trainer.build_networks())
        names = list(cls.inference_networks or built)
        try:
            trainer.networks = {name: built[name] for name in names}
            for name, network in trainer.networks.items():
                network.load_state_dict(networks[name])
        except (KeyError, RuntimeError) as e:
            raise TrainingError(f"{source}: does not fit {cls.__name__} ({str(e).splitlines()[0][:160]})") from None
        for network in trainer.networks.values():
            network.eval()  # already on the device: placed() moved them
        return trainer

    @torch.inference_mode()
    def predict_slices(self, slices: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """(S, C_all, H, W) preprocessed slices with every channel of the plan -> (S, H, W) float32
        anomaly maps, in batches, with the networks in evaluation mode, at ``inference_precision``."""
        for network in self.networks.values():
            network.eval()
        bs = batch_size or max(1, 2 * self.batch_size)
        out = []
        for start in range(0, len(slices), bs):
            images = np.ascontiguousarray(slices[start:start + bs][:, self.input_channels], dtype=np.float32)
            with self.inference_autocast():
                out.append(self.predict_anomaly_map(self.to_device(images)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0,) + slices.shape[2:], np.float32)

    @property
    def resolved_training_precision(self) -> str:
        """fp32 or bf16: the schedule's training_precision, else the method's, with "auto" resolved
        for this device (bf16 on a CPU with bf16 instructions; fp32 on a GPU, where it is unmeasured,
        and on other CPUs, which emulate bf16 many times slower)."""
        precision = self.schedule.get("training_precision") or self.training_precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cpu" and cpu_has_native_bf16() else "fp32"
        return precision

    def training_autocast(self):
        """The context a training iteration runs in: nothing for fp32, bf16 autocast otherwise (the
        weights, optimiser states and checkpoints stay float32; only the operations autocast lists
        run in bf16, so a run resumes and predicts as an fp32 one does)."""
        if self.resolved_training_precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def inference_autocast(self):
        """fp32 as trained, or bf16 autocast (tensor cores on a GPU; the maps differ from fp32 by
        bf16 rounding). ``auto`` is bf16 on CUDA and fp32 on the CPU, so that CPU
        predictions equal the validation maps the fold saved."""
        precision = self.inference_precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision == "fp32":
            return contextlib.nullcontext()
        if precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        raise ValueError(f"inference precision must be auto, fp32 or bf16, not {precision!r}")

    def cases_anomaly_maps(self, cases: list[PreprocessedCase]) -> list[np.ndarray]:
        """The maps of several cases from shared forward passes (a 2D dataset's validation images
        are a thousand one-slice cases: one forward pass each would leave the model mostly idle)."""
        maps = self.predict_slices(np.concatenate([case.data for case in cases]))
        return np.split(maps, np.cumsum([case.num_slices for case in cases])[:-1])

    def case_histogram(self, case: PreprocessedCase, maps: np.ndarray) -> dict:
        lo, hi = self.histogram_range
        values = maps[case.roi.astype(bool)] if case.roi is not None else maps.ravel()
        counts, edges = np.histogram(values, bins=self.histogram_bins, range=(lo, hi))
        return {"map": self.map_name, "range": [lo, hi], "bins": self.histogram_bins,
                "pixels": "inside the ROI" if case.roi is not None else "all pixels", "counts": counts}

    def validation_groups(self, chunk_slices: int = 256) -> list[list[PreprocessedCase]]:
        """The validation cases in consecutive groups of about ``chunk_slices`` slices (a volume
        larger than that is a group of its own), so memory stays bounded and batches stay full."""
        groups, current, size = [], [], 0
        for case in self.data.validation_cases:
            if current and size + case.num_slices > chunk_slices:
                groups.append(current)
                current, size = [], 0
            current.append(case)
            size += case.num_slices
        return groups + ([current] if current else [])

    def export_validation(self) -> Path:
        """Anomaly maps of the fold's validation cases: ``validation/<case>.npy`` (slices, H, W) in the
        preprocessed slice space, plus histograms where the map has a fixed range."""
        folder = self.output_folder / VALIDATION_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        histograms = {}
        with progress(total=len(self.data.validation_cases), desc="validation maps", unit="case",
                  disable=not self.is_main, file=sys.stdout) as bar:
            for group in self.validation_groups(max(256, 2 * self.batch_size)):
                for case, maps in zip(group, self.cases_anomaly_maps(group)):
                    save_npy(maps.astype(np.float32), folder / f"{case.name}.npy")
                    if self.histogram_range is not None:
                        histograms[case.name] = self.case_histogram(case, maps)
                        save_json(histograms[case.name], folder / f"{case.name}_histogram.json")
                bar.update(len(group))
        save_json({"map": self.map_name, "space": "preprocessed slices (see the case's preprocessing json)",
                   "plans_name": self.plans.plans_name, "fold": self.fold,
                   "cases": self.data.validation_names}, folder / "maps.json")
        if histograms:
            self.plot_histograms(histograms, folder / "histograms.png")
        return folder

    def plot_histograms(self, histograms: dict, path: Path) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        if len(histograms) > self.max_plotted_histograms:
            # a thousand X-ray lines say nothing: their pooled histogram does
            first = next(iter(histograms.values()))
            pooled = np.sum([np.asarray(h["counts"], np.int64) for h in histograms.values()], axis=0)
            histograms = {f"all {len(histograms)} cases, pooled": dict(first, counts=pooled)}
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for name, h in histograms.items():
            edges = np.linspace(h["range"][0], h["range"][1], h["bins"] + 1)
            counts = np.asarray(h["counts"], float)
            ax.semilogy(0.5 * (edges[1:] + edges[:-1]), np.maximum(counts / max(counts.sum(), 1), 1e-7),
                        lw=1, label=name)
        ax.set_xlabel(self.map_name)
        ax.set_ylabel("fraction of pixels")
        ax.set_title(f"{self.method} fold {self.fold}: validation {self.map_name} histograms", fontsize=9)
        ax.legend(fontsize=6)
        fig.tight_layout()
        try:
            save_figure(fig, path, dpi=90)
        finally:
            plt.close(fig)
