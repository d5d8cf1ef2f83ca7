"""ASC-Net's training (paper 000 section 3, paper 001 section 4): two stages of D / M cycles.

Pools, as the paper's BraTS protocol: within the fold's training cases, a share of the patients
(``validation_fraction``, the paper's "10 %" split) gives all its slices to the input set I_in; of
the rest, the reference slices (normal cases, or slices without anomaly under the
``slices_without_anomaly`` protocol) form R_d and the remaining slices join I_in. The smaller of
R_d and I_in is grown with random duplicates until both are equally large (the authors' code).

One cycle = a discriminator step then a main-module step, each of ``epochs_per_step`` epochs
(capped at ``max_iterations_per_step`` iterations on the CPU schedules). ``max_main_iterations_per_step``
lowers the epochs of both steps alike on a large dataset, so that D and M keep the same number of
epochs (D's pools are two and four times M's, so its steps have two and four times the iterations)
and a CPU fold keeps its time budget: an M iteration costs about four D iterations (it back-propagates
through M and, twice, through D; timings in docs/experiments.md).

* D step: R_d labelled +1 and I_fc(I_in) labelled -1, shuffled together; in stage 2 the true set
  becomes R_d ∪ I_fc(R_d) and the fence cuts of I_in are drawn twice as often to keep the balance.
  The fence cuts are made with M in inference mode (dropout off, batch statistics frozen), as a
  Keras ``predict`` does.
* M step: I_in through M; D frozen "while preserving the connection between I_fc and D" (paper
  000): its weights and its batch-norm running statistics stay as the D step left them, but it runs
  as the authors' Keras 2.2 model ran inside the combined model's ``fit``: in the training phase,
  so its batch normalisation normalises with the statistics of the batch of fence cuts and its
  dropout is on (Keras 2.2 freezes a layer's weights and running averages with ``trainable =
  False`` but keeps the learning phase; frozen batch norm in inference mode came with TensorFlow
  2). Loss Loss_Cf + Loss_Cw + Loss_R with equal weights. Loss_Cf reaches the fence-cut decoder
  and the encoder through D; the wild-cut decoder feels D only through Loss_Cw (the Dice with
  I_fc) and Loss_R, as in the paper's loss graph.

  Why not D in evaluation mode (what autouad did before, issue 26): the MAE against +-1 through a
  tanh keeps pushing D's pre-activation outward until the tanh saturates; a D step of the `fast`
  schedule ends at Loss_D 0.005 (outputs +-0.995), and with its running statistics D then scores
  every fence cut -1.000: Loss_Cf sits at 2.0 and its gradient, scaled by 1 - tanh^2, vanishes
  (BraTS-6 fold 0, `fast` on a GPU: from stage 1's second cycle on, a gradient norm of 5e-4 and
  then exactly 0 in the fence-cut decoder, against 0.27 from Loss_Cw). With the statistics of the
  fence-cut batch the frozen D passes 0.1-4 into that decoder, and in stage 2 M fools even the
  evaluation-mode D (77-88 % of fence cuts on the reference side). That this helps the maps is
  not established: at `fast` on BraTS-6 fold 0 the pixel AUROC of I_ro was lower with it in both
  seeds measured (0.868 against 0.895, 0.390 against 0.668), and seeds alone move it by 0.2-0.5
  (docs/notes_ascnet.md).

Logged besides the losses: ``d_accuracy``, the share of a D batch that D puts on the right side of
0 (reference slices > 0, fence cuts of I_in < 0) in the forward pass it trains on, and
``d_fooled``, the share of fence cuts that D, as the M step runs it, puts on the reference side.

Stopping rule: the authors stopped a stage by eye when the histogram of I_ro split into three or
four separated peaks. After each cycle we count the separated peaks of the I_ro histogram on the
validation slices (no labels involved); at ``min_peaks`` the stage's remaining cycles are skipped
and the event is logged.

Orientation (autouad's, label-free; the papers leave it open): which end of I_ro's histogram holds
the anomalies is not fixed by training. Paper 001 (Fig. 8) shows FLAIR cases whose tumour fell into
the leftmost peak, "a cluster flip", and leaves its analysis to future work; for dark liver lesions
the authors threshold "the rightmost peak of the inverted image", choosing the inversion by hand per
dataset from the lesions' known intensity. Here a fold that came out flipped is found at the end of
training from the two sets the method already has, on up to ``orientation_slices`` slices of each,
inside the ROI (``orientation_figures``):

* Where I_in's input leaves R_d's range on the plans' anomalous side (the fingerprint's polarity,
  as the threshold's peak: bright FLAIR lesions, dark liver lesions) in at least 2 % of its pixels,
  twice R_d's own 1 %, those pixels show the lesions as the authors' hand choice knew them: the
  map is 1 - I_ro when I_ro ranks them below the rest of I_in (AUROC < 0.5), as the paper inverts
  for dark lesions.
  On BraTS-6 (2026-12-06, float32, both folds) raw I_ro ranked them at 0.048 and 0.015 (13 % and
  4 % of I_in's pixels). This replaced the tails check below as the first test after a bf16 run
  whose I_ro ranked the tumour at 0.225 without any value leaving R_d's range of I_ro.
* Otherwise (no such input outliers) the map's tails decide: the anomalous end is where I_in's
  values of I_ro exceed R_d's (beyond R_d's 1st or 99th percentile of I_ro). Where the other end
  than the expected one holds at least twice the excess, and 1 % of the voxels more, the map is
  1 - I_ro.

The map is M's ``inverted`` buffer, saved with its weights. On BraTS-6 at the `fast` budget both
folds' I_ro ranked the tumour below chance before any orientation (pooled AUROC 0.18;
docs/results.md). The figures are logged as an ``orientation`` event. No mask or label is read.

Polarity gate (autouad's, label-free; ``polarity_gate``): where the orientation was decided by
the input's own outliers, M also keeps R_d's median of the input (on the map's channel) and of the
oriented map. A pixel whose input lies on the non-anomalous side of that input median (darker than
the reference tissue's median, for bright FLAIR lesions) gets at most the map's median (at least,
for dark lesions): where the lesions leave R_d's input range on the plans' side, a pixel on the
other side of the tissue's median cannot be one, which is the knowledge the paper's threshold
already uses when it takes the rightmost peak for bright lesions and inverts the image for dark
ones. Where the input has no such outliers (the Kermany X-rays: 0.4 % of I_in's pixels), the
lesions need not lie beyond the median (pneumonia's opacity lies in the lung fields, the darkest
part of a chest X-ray), and the gate stays off.
Why: before its clusters separate, as at a CPU budget, ASC-Net's map also rates the darkest
pixels high, thin rims at the brain's border (FLAIR about 0.03-0.10 against a brain median
of 0.42-0.47), and a label-free cut at the 99th percentile of the normal slices then lands in that
rim above the whole tumour (BraTS-6, 2026-12-07: two of four folds flagged nothing, at pixel AUROC
0.86 and 0.92; docs/results.md). The gate changes no pixel whose input is brighter than the
median, so it cannot lift a pixel or reorder the bright ones; it is set after the orientation and
applies to prediction and calibration, not to the orientation's or the proxy's evidence (raw I_ro).

Restarts (autouad's, label-free; the schedule's ``restarts``, default 1; not in the papers): a
fold's map at a CPU budget is good or weak by its initialisation (BraTS-6 `fast`, 19 folds of runs
A-L: validation pixel AUROC 0.56-0.98 across runs of the same two folds and schedule), and the orientation's
evidence tells which without a mask: how far I_in's input outliers sit from chance under raw I_ro,
|AUROC - 0.5| (Spearman 0.91 against the pixel AUROC over those folds; docs/results.md). With
``restarts`` = n the schedule's stages run n times from fresh weights (restart r seeds torch with
``seed + 7919 (r - 1)``; the data streams run on), a budget giving each an n-th of it, the
stopping rule acting within a restart; at each restart's end its separation is measured on
``orientation_slices`` slices of R_d and of I_in, and the restart with the largest stands for the
fold (a restart that is the best so far when it ends leaves its networks in
checkpoint_restart<r>.pt, so an interrupted run resumes) and is then oriented as above. A restart
chooses among whole runs, so it cannot be combined with ``keep_checkpoint`` other than ``final``
(which would choose again among the points of every restart). The choice needs input outliers; where I_in has too few (the Kermany X-rays),
the fold trains one run whatever ``restarts`` says, and logs why. The paper trains one run and
stops it by eye; this is a selection among runs of the paper's schedule, as HealthyGAN's FID
selection is among its iterations.
"""
from __future__ import annotations

import contextlib
import functools
import time

import numpy as np
import torch

from autouad.calibration.histogram_peaks import DEFAULT_BINS, peak_values
from autouad.evaluation.metrics import roc_auc
from autouad.methods.ascnet.losses import discriminator_loss, fence_cut_loss, reconstruction_loss, wild_cut_loss
from autouad.methods.ascnet.network import ASCDiscriminator, ASCNetMain
from autouad.training.base_trainer import AutoUADTrainer, Phase
from autouad.training.checkpoint import load_checkpoint, save_checkpoint
from autouad.training.fold_data import SlicePool, TrainingError

# Kinds of items in a discriminator batch.
REFERENCE, INPUT_FENCE_CUT, REFERENCE_FENCE_CUT = 0, 1, 2
# The orientation's tails: beyond R_d's 1st and 99th percentiles (module docstring, "Orientation").
ORIENTATION_TAIL = 0.01
# restarts > 1: the networks of restart r, written when it ends as the best so far (module
# docstring, "Restarts"); one file per restart, so that a restart replayed after an interruption can
# never overwrite the networks that the records name as the best
CHECKPOINT_RESTART = "checkpoint_restart{}.pt"
# restart r initialises its networks with torch seed ``seed + RESTART_SEED_STRIDE * (r - 1)``
RESTART_SEED_STRIDE = 7919


class ASCNetTrainer(AutoUADTrainer):
    method = "ascnet"
    channels_last = True  # faster training and inference on a CPU: docs/results.md, "Speed options"
    map_name = "I_ro"
    inference_networks = ("M",)
    budget_keys = ("epochs_per_step", "max_iterations_per_step", "max_main_iterations_per_step")
    # build_phases turns epochs into iterations itself: 1.35 epochs is 1.35 passes over the pool
    fractional_budget_keys = ("epochs_per_step",)
    histogram_range = (0.0, 1.0)
    # the polarity gate (module docstring); False keeps the oriented I_ro as it is
    polarity_gate = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # restarts > 1: each finished restart's figures, by restart number (a string: JSON keys)
        self.restart_records: dict[str, dict] = {}

    # ---- data ------------------------------------------------------------------------------------
    def held_out_patients(self) -> set[str]:
        """The paper's 10 % split of the training patients, whose slices all go to I_in."""
        patients = sorted({c.patient for c in self.data.train_cases})
        count = int(round(self.plans.validation_fraction * len(patients)))
        rng = np.random.default_rng([self.seed, self.fold])
        return set(rng.choice(patients, count, replace=False).tolist()) if count else set()

    def build_pools(self) -> None:
        held_out = self.held_out_patients()
        cases = self.data.train_cases

        def is_reference(case):
            return case.is_reference & (case.patient not in held_out)

        reference = self.data.pool("reference", cases, is_reference)
        inputs = self.data.pool("input", cases, lambda c: ~is_reference(c))
        if len(reference) == 0 or len(inputs) == 0:
            raise TrainingError(f"fold {self.fold}: ASC-Net needs reference and input slices, found "
                                f"{len(reference)} reference and {len(inputs)} input slices")
        size = max(len(reference), len(inputs))
        self.reference = reference.balanced(size, self.seed + 1)
        self.inputs = inputs.balanced(size, self.seed + 2)
        self.pool_sizes = {"reference": len(reference), "input": len(inputs), "balanced": size,
                           "held_out_patients": sorted(held_out)}
        n = size
        # Stage 1: R_d (+1) and I_fc(I_in) (-1). Stage 2: R_d and I_fc(R_d) (+1), I_fc(I_in) twice (-1).
        self.discriminator_kinds = {
            1: np.repeat([REFERENCE, INPUT_FENCE_CUT], n),
            2: np.repeat([REFERENCE, REFERENCE_FENCE_CUT, INPUT_FENCE_CUT, INPUT_FENCE_CUT], n)}
        for stage, kinds in self.discriminator_kinds.items():
            refs = np.concatenate([self.reference.refs if k != INPUT_FENCE_CUT else self.inputs.refs
                                   for k in kinds[::n]])
            self.loader(SlicePool(f"discriminator_stage{stage}", cases, refs, self.data.channels),
                        f"discriminator_stage{stage}")
        self.loader(self.inputs, "main")

    # ---- networks --------------------------------------------------------------------------------
    def network_kwargs(self) -> dict:
        net = self.settings["network"]
        return {"in_channels": len(self.input_channels), "features": tuple(net["encoder_features"]),
                "transition": net["transition_features"], "dropout": net["dropout"]}

    def build_networks(self) -> dict:
        slice_size = self.plans.slice_size
        return {"M": ASCNetMain(**self.network_kwargs()),
                "D": ASCDiscriminator(slice_size, **self.network_kwargs())}

    def build_optimizers(self) -> dict:
        lr = self.schedule.get("lr") or self.settings["optimizer"]["lr"]
        return {k: torch.optim.Adam(self.networks[k].parameters(), lr=lr) for k in ("M", "D")}

    def build_phases(self) -> list[Phase]:
        epochs = float(self.schedule.get("epochs_per_step", 1))
        main_cap = self.schedule.get("max_main_iterations_per_step")
        if main_cap:
            epochs = min(epochs, int(main_cap) / self.iterations_per_epoch(len(self.inputs)))
        cap = self.schedule.get("max_iterations_per_step")

        def iterations(pool_size: int) -> int:
            n = max(1, round(epochs * self.iterations_per_epoch(pool_size)))
            return min(n, int(cap)) if cap else n

        restarts = self.restart_count
        phases = []
        for restart in range(1, restarts + 1):
            # one restart keeps the paper's phase names (and resumes checkpoints written before restarts)
            prefix = f"restart{restart}/" if restarts > 1 else ""
            for stage in (1, 2):
                d_iterations = iterations(len(self.discriminator_kinds[stage]))
                for cycle in range(1, int(self.schedule[f"stage{stage}_cycles"]) + 1):
                    name = f"{prefix}stage{stage}/cycle{cycle}"
                    phases.append(Phase(f"{name}/discriminator", "discriminator", d_iterations, stage, cycle, restart))
                    phases.append(Phase(f"{name}/main", "main", iterations(len(self.inputs)), stage, cycle, restart))
        return phases

    # ---- restarts (module docstring, "Restarts") ----------------------------------------------------
    @property
    def restart_count(self) -> int:
        """The schedule's ``restarts``, or 1 where the input has no outliers of its own to choose a
        restart by (the choice would be blind, and each restart trains a fraction of the budget)."""
        asked = int(self.schedule.get("restarts") or 1)
        if asked == 1 or not self.input_outliers_for_restarts:
            return 1
        if self.world_size > 1:
            raise TrainingError("ASC-Net's restarts run in one process; train with restarts=1 under DDP")
        if self.keeps_best:
            raise TrainingError(f"ASC-Net: restarts={asked} chooses among whole runs; keep_checkpoint="
                                f"{self.keep_mode} would choose again among every restart's curve points; "
                                f"use keep_checkpoint=final with restarts")
        return asked

    @functools.cached_property
    def input_outliers_for_restarts(self) -> bool:
        """Whether I_in leaves R_d's input range on the plans' side in enough pixels for the
        orientation's separation (the restarts' choice) to exist: the input alone decides it, so it
        is known before training. Logged once as a ``restarts`` event."""
        reference, inputs = (self.sampled_input_values(pool, self.orientation_slices)
                             for pool in (self.reference, self.inputs))
        share = float(np.mean(input_outliers(reference, inputs, self.anomalies_above)))
        usable = enough_input_outliers(share)
        self.log.event(0, "restarts", asked=int(self.schedule.get("restarts") or 1), input_outliers=round(share, 4),
                       used=bool(usable))
        if not usable and self.is_main:
            print(f"ascnet fold {self.fold}: restarts={self.schedule.get('restarts')} asked, but only "
                  f"{share:.1%} of I_in's pixels leave R_d's input range: nothing to choose a restart by; one run")
        return usable

    def restart_ends_after(self, phase_index: int) -> bool:
        """Whether ``phase_index`` is the last phase its restart runs (later ones skipped or of another)."""
        restart = self.phases[phase_index].restart
        return all(i in self.skipped_phases for i in range(phase_index + 1, len(self.phases))
                   if self.phases[i].restart == restart)

    def end_restart(self, phase: Phase) -> dict:
        """At a restart's end (restarts > 1): measure its separation of I_in's input outliers under raw
        I_ro, keep its networks in checkpoint_restart<r>.pt when it is the best so far, and, unless
        it is the last restart, start the next one from fresh weights. Returns the figures (the last
        restart's orientation reuses them)."""
        figures = self.raw_orientation_figures(self.orientation_slices)
        auroc = figures["input_outliers_auroc"]
        separation = abs(auroc - 0.5) if auroc is not None else -1.0
        record = {"restart": phase.restart, "step": self.position["step"], "separation": round(separation, 4),
                  "input_outliers_auroc": auroc, "minutes": round(self.elapsed() / 60, 3)}
        self.restart_records[str(phase.restart)] = record
        best = self.best_restart
        self.log.event(record["step"], "restart", major=True, best=best == phase.restart,
                       **{k: v for k, v in record.items() if k != "step"})
        print(f"  restart {phase.restart} of {self.restart_count} ends: I_in's input outliers separated by "
              f"{separation:.3f} under raw I_ro (best so far: restart {best})")
        if best == phase.restart:
            self.output_folder.mkdir(parents=True, exist_ok=True)
            save_checkpoint({"format": "autouad-restart-1", "method": self.method, "fold": self.fold,
                             "position": dict(self.position), "record": record, "networks": {k: v.state_dict() for k, v in self.networks.items()}},
                            self.output_folder / CHECKPOINT_RESTART.format(phase.restart))
        if phase.restart < self.restart_count:
            self.log_validation_quality()  # the restart's last curve point (the probe reads masks; nothing chooses by it here)
            self.fresh_networks(phase.restart + 1)
        return figures

    @property
    def best_restart(self) -> int | None:
        """The restart whose input outliers separate most so far (the earlier one on a tie)."""
        if not self.restart_records:
            return None
        return int(max(self.restart_records.values(), key=lambda r: (r["separation"], -r["restart"]))["restart"])

    def fresh_networks(self, restart: int) -> None:
        """M, D and their optimizers from a new initialisation, for ``restart`` (its own seed)."""
        torch.manual_seed(self.seed + RESTART_SEED_STRIDE * (restart - 1))
        self.networks = self.placed(self.build_networks())
        self.optimizers = self.build_optimizers()

    def take_best_restart(self) -> bool:
        """At the end of the last restart: the networks of the best restart stand for the fold.
        Returns whether they are another restart's than the networks in place."""
        best = self.best_restart
        if best is None or best == self.phases[-1].restart:
            return False
        path = self.output_folder / CHECKPOINT_RESTART.format(best)
        state = load_checkpoint(path)
        if state.get("record") != self.restart_records[str(best)]:
            raise TrainingError(f"{path}: holds {state.get('record')}, not restart {best}'s networks as "
                                f"training_log.json records them {self.restart_records[str(best)]}")
        for name, weights in state["networks"].items():
            self.networks[name].load_state_dict(weights)
        print(f"  keeping restart {best}'s networks (separation {self.restart_records[str(best)]['separation']:.3f})")
        return True

    def budget_overheads(self) -> tuple[float, float]:
        """The base's, plus each restart's end but the last (the last one's measure is the
        orientation's, which comes on top of the budget as the validation export does): its
        separation on ``orientation_slices`` slices of R_d and of I_in and its curve point."""
        fixed, per_iteration = super().budget_overheads()
        if self.restart_count > 1:
            start = time.perf_counter()
            self.raw_orientation_figures(self.orientation_slices)
            self.validation_quality()
            fixed += (self.restart_count - 1) * (time.perf_counter() - start)
        return fixed, per_iteration

    def extra_state(self) -> dict:
        return {"restart_records": self.restart_records}

    def load_extra_state(self, state: dict) -> None:
        self.restart_records = dict(state.get("restart_records", {}))

    def resume(self) -> None:
        """As the base's; where the checkpoint stands at the first iteration of a restart, that
        restart starts from its own fresh weights. After an interruption between restarts this
        rebuilds what the checkpoint holds (same seed); a finished run re-opened with more
        ``restarts`` (--continue --set restarts=n) would otherwise train its new restart on top of the
        kept, oriented networks."""
        super().resume()
        index, phases = self.position["phase"], self.phases
        if (index < len(phases) and self.position["iteration"] == 0 and phases[index].restart > 1
                and phases[index - 1].restart != phases[index].restart):
            self.fresh_networks(phases[index].restart)

    # ---- one iteration ---------------------------------------------------------------------------
    def discriminator_batch(self, stage: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """The next D batch: images (reference slices or fence cuts), targets (+1 / -1), kinds."""
        batch = next(self.loaders[f"discriminator_stage{stage}"])
        kinds = self.discriminator_kinds[stage][batch["indices"]]
        images = self.to_device(batch["data"])
        needs_cut = torch.from_numpy(kinds != REFERENCE).to(self.device)
        if bool(needs_cut.any()):
            main = self.networks["M"]
            main.eval()
            with torch.no_grad():
                # .to: under bf16 autocast (training_precision) M's output is bf16, the batch float32
                images[needs_cut] = main(images[needs_cut])[0].to(images.dtype)
            main.train()
        targets = torch.from_numpy(np.where(kinds == INPUT_FENCE_CUT, -1.0, 1.0).astype(np.float32)).to(self.device)
        return images, targets, kinds

    def discriminator_step(self, stage: int) -> dict[str, float]:
        images, targets, _ = self.discriminator_batch(stage)
        discriminator = self.train_net("D")
        discriminator.train()
        self.optimizers["D"].zero_grad(set_to_none=True)
        scores = discriminator(images)
        loss = discriminator_loss(scores, targets)
        loss.backward()
        self.optimizers["D"].step()
        accuracy = (torch.sign(scores.detach()) == targets).float().mean()
        return {"loss_D": loss.item(), "d_accuracy": accuracy.item()}

    @contextlib.contextmanager
    def frozen_discriminator(self):
        """D as the M step runs it (see the module docstring): no gradients for its weights and no
        change to its running statistics, but in training mode, so that its batch normalisation
        uses the statistics of the batch it judges and its dropout is on."""
        discriminator = self.networks["D"]
        norms = [m for m in discriminator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        discriminator.train()
        discriminator.requires_grad_(False)
        for m in norms:
            m.track_running_stats = False  # batch statistics, running ones neither read nor updated
        try:
            yield discriminator
        finally:
            for m in norms:
                m.track_running_stats = True
            discriminator.requires_grad_(True)

    def main_losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The M step's losses on a batch of I_in (and D's scores of the fence cuts), with their graph."""
        i_fc, i_wc, i_ro = self.train_net("M")(images)
        with self.frozen_discriminator() as discriminator:
            d_fc = discriminator(i_fc)
        l_cf = fence_cut_loss(d_fc)
        l_cw = wild_cut_loss(i_fc, i_wc)
        l_r = reconstruction_loss(images, i_ro)
        return {"loss_M": l_cf + l_cw + l_r, "loss_Cf": l_cf, "loss_Cw": l_cw, "loss_R": l_r, "d_fence_cut": d_fc}

    def main_step(self) -> dict[str, float]:
        images = self.to_device(next(self.loaders["main"])["data"])
        self.optimizers["M"].zero_grad(set_to_none=True)
        losses = self.main_losses(images)
        losses["loss_M"].backward()
        self.optimizers["M"].step()
        d_fc = losses.pop("d_fence_cut").detach()
        return {**{k: v.item() for k, v in losses.items()}, "d_fooled": (d_fc > 0).float().mean().item()}

    def train_iteration(self, phase: Phase, iteration: int) -> dict[str, float]:
        if phase.kind == "discriminator":
            return self.discriminator_step(phase.stage)
        return self.main_step()

    # ---- stopping rule ---------------------------------------------------------------------------
    def validation_histogram(self, max_slices: int) -> np.ndarray:
        """Histogram of I_ro over the validation slices (inside the ROI where there is one)."""
        values = self.sampled_map_values(self.data.validation_pool(), max_slices)
        return np.histogram(values, DEFAULT_BINS, self.histogram_range)[0]

    def sampled_map_values(self, pool: SlicePool, max_slices: int) -> np.ndarray:
        """The map's values on up to ``max_slices`` slices spread over ``pool``, inside the ROI."""
        return self.sampled_map_and_input_values(pool, max_slices)[0]

    def sampled_map_and_input_values(self, pool: SlicePool, max_slices: int) -> tuple[np.ndarray, np.ndarray]:
        """(the map's values, the input's values on the map's channel) at the same pixels: up to
        ``max_slices`` slices spread over ``pool``, inside the ROI."""
        maps, inputs = [], []
        for images, inside in self.sampled_slices(pool, max_slices):
            maps.append(self.predict_anomaly_map_eval(self.to_device(images)).float().cpu().numpy()[inside])
            inputs.append(images[:, self.plans.threshold.channel or 0][inside])
        return np.concatenate(maps), np.concatenate(inputs)

    def sampled_input_values(self, pool: SlicePool, max_slices: int) -> np.ndarray:
        """The input's values on the map's channel at the pixels ``sampled_map_and_input_values`` reads."""
        channel = self.plans.threshold.channel or 0
        return np.concatenate([images[:, channel][inside] for images, inside in self.sampled_slices(pool, max_slices)])

    def sampled_slices(self, pool: SlicePool, max_slices: int):
        """Batches (slices, ROI mask of their map-sized pixels) of up to ``max_slices`` slices spread over ``pool``."""
        picks = np.unique(np.linspace(0, len(pool) - 1, min(max_slices, len(pool))).round().astype(int))
        for start in range(0, len(picks), 2 * self.batch_size):
            idx = picks[start:start + 2 * self.batch_size]
            images = pool.read(idx)
            roi = pool.read_roi(idx)
            yield images, (roi if roi is not None else np.ones((len(idx),) + images.shape[2:], bool))

    @torch.inference_mode()
    def predict_anomaly_map_eval(self, images: torch.Tensor) -> torch.Tensor:
        main = self.networks["M"]
        main.eval()
        try:
            return self.predict_anomaly_map(images)
        finally:
            main.train()

    def on_phase_end(self, phase_index: int, phase: Phase) -> None:
        if phase.kind != "main" or not self.is_main:
            self._share_skips()
            if self.training_ends_after(phase_index):
                self._share_orientation()
            return
        rule = self.settings.get("stopping_rule", {})
        counts = self.validation_histogram(int(rule.get("max_slices", 128)))
        peaks = peak_values(counts, self.histogram_range)
        min_peaks = int(rule.get("min_peaks", 3))
        later = [i for i, p in enumerate(self.phases)
                 if p.restart == phase.restart and p.stage == phase.stage and p.cycle > phase.cycle]
        stop = len(peaks) >= min_peaks and bool(later)
        self.log.event(self.position["step"], "stopping_rule", phase=phase.name, peaks=[round(float(v), 4) for v in peaks],
                       min_peaks=min_peaks, ends_stage=stop, major=True)
        print(f"  {phase.name}: {len(peaks)} separated I_ro peaks on validation slices at "
              f"{', '.join(f'{v:.3f}' for v in peaks) or '-'}" + (f"; stage {phase.stage} ends here" if stop else ""))
        if stop:
            self.skipped_phases.update(later)
        self._share_skips()
        figures = None
        if self.restart_count > 1 and self.restart_ends_after(phase_index):
            figures = self.end_restart(phase)
        if self.training_ends_after(phase_index):
            if self.restart_count > 1 and self.take_best_restart():
                figures = None  # measured on the last restart's networks, not the kept ones
            self.orient(figures)
            self._share_orientation()

    def on_kept_networks(self) -> None:
        # the kept networks are from before the end of training, when the orientation was decided
        # on the final ones: decide it again for them
        self.orient()

    def training_ends_after(self, phase_index: int) -> bool:
        return all(i in self.skipped_phases for i in range(phase_index + 1, len(self.phases)))

    # ---- orientation (see the module docstring) ---------------------------------------------------
    orientation_slices = 256

    @property
    def anomalies_above(self) -> bool:
        """The plans' anomalous side of the input and of the map (the fingerprint's polarity)."""
        return self.plans.threshold.peak != "leftmost"

    def orient(self, figures: dict | None = None) -> dict:
        """Decide whether this fold's map is I_ro or 1 - I_ro (M's ``inverted``) and set the polarity
        gate's levels; logs and returns the figures (``figures``: raw_orientation_figures of these
        networks at ``orientation_slices``, where the caller has them already)."""
        figures = figures or self.raw_orientation_figures(self.orientation_slices)
        main = self.networks["M"]
        main.inverted.fill_(float(figures["inverted"]))
        map_median = figures["reference_map_median"]
        gate = self.polarity_gate and figures["decided_by"] == "input_outliers"
        main.set_polarity_gate(figures["reference_input_median"] if gate else None,
                               1.0 - map_median if figures["inverted"] else map_median)
        self.log.event(self.position["step"], "orientation", major=True, **figures)
        evidence = (f"{figures['input_outliers']:.1%} of I_in's inputs beyond R_d's on the {figures['expected_side']} "
                    f"side, ranked by I_ro at AUROC {figures['input_outliers_auroc']:.3f}"
                    if figures["decided_by"] == "input_outliers" else
                    f"{figures['inputs_above_reference_p99']:.1%} of I_in's I_ro above R_d's 99th percentile, "
                    f"{figures['inputs_below_reference_p1']:.1%} below its 1st")
        print(f"  orientation: {evidence}; "
              + ("the anomalies fell into the other end: the map is 1 - I_ro" if figures["inverted"] else "the map is I_ro"))
        return figures

    # keep_checkpoint=best_proxy: slices of R_d and of I_in per curve point, a quarter of the
    # orientation's (on BraTS-6 on 2 cores the six points, probe and proxy, took 60 s of 8 minutes)
    proxy_orientation_slices = 64

    def proxy_quality(self) -> dict | None:
        """ASC-Net's label-free measure of a curve point (keep_checkpoint=best_proxy), replacing the
        pasted blobs: the orientation's evidence, how cleanly I_ro separates I_in's own input
        outliers from the rest of I_in, in either orientation (max(AUROC, 1 - AUROC)), because
        the orientation is decided afterwards on the kept networks: I_ro's clusters can swap sides
        while training (docs/results.md, ASC-Net's BraTS-6 curves). None where the input has no
        outliers to separate (the tails rule decides the orientation then)."""
        auroc = self.raw_orientation_figures(self.proxy_orientation_slices)["input_outliers_auroc"]
        if auroc is None:
            return None
        return {"metric": "input outliers separated by I_ro (AUROC, either side)", "value": max(auroc, 1.0 - auroc)}

    def raw_orientation_figures(self, max_slices: int) -> dict:
        """``orientation_figures`` of raw I_ro (neither oriented nor gated) on up to ``max_slices``
        slices of R_d and of I_in, for the orientation and for the proxy; M's ``inverted`` and gate
        are left as they were."""
        main = self.networks["M"]
        kept = [buffer.clone() for buffer in (main.inverted, main.polarity_gate)]
        main.inverted.fill_(0.0)
        main.set_polarity_gate(None)
        try:
            reference, inputs = [self.sampled_map_and_input_values(pool, max_slices)
                                 for pool in (self.reference, self.inputs)]
        finally:
            main.inverted.copy_(kept[0])
            main.polarity_gate.copy_(kept[1])
        return orientation_figures(*reference, *inputs, expected_above=self.anomalies_above)

    def _share_orientation(self) -> None:
        """Rank 0 decides the orientation and the gate; under DDP every rank takes them."""
        if self.world_size == 1:
            return
        import torch.distributed as dist
        main = self.networks["M"]
        decided = torch.cat([main.inverted.detach().reshape(1), main.polarity_gate.detach()]).float()
        decided = decided.to(self._collective_device())
        dist.broadcast(decided, 0)
        main.inverted.fill_(decided[0].item())
        main.polarity_gate.copy_(decided[1:].cpu())

    def _share_skips(self) -> None:
        """Rank 0 decides the stopping rule; under DDP every rank must skip the same phases."""
        if self.world_size == 1:
            return
        import torch.distributed as dist
        flags = torch.zeros(len(self.phases), dtype=torch.int32, device=self._collective_device())
        for i in self.skipped_phases:
            flags[i] = 1
        dist.broadcast(flags, 0)
        self.skipped_phases = {int(i) for i in torch.nonzero(flags).flatten().tolist()}

    # ---- inference -------------------------------------------------------------------------------
    def predict_anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """I_ro, oriented and gated (module docstring); with several input channels the one the
        planner's threshold reads (the most contrasted)."""
        main = self.networks["M"]
        channel = self.plans.threshold.channel or 0
        return main.gated(main.oriented(main(images)[2][:, channel]), images[:, channel], self.anomalies_above)


def input_outliers(reference_inputs: np.ndarray, input_inputs: np.ndarray, expected_above: bool) -> np.ndarray:
    """I_in's pixels beyond R_d's input range (its 99th percentile, or 1st for dark anomalies) on
    the plans' anomalous side: the input's own outliers."""
    cut = np.percentile(reference_inputs, 100 * (1 - ORIENTATION_TAIL) if expected_above else 100 * ORIENTATION_TAIL)
    return input_inputs > cut if expected_above else input_inputs < cut


def enough_input_outliers(share: float) -> bool:
    """Whether outliers on ``share`` of I_in's pixels (twice R_d's own 1 %, and not all of them)
    are evidence enough for the orientation (and a restart's separation)."""
    return 2 * ORIENTATION_TAIL <= share < 1.0


def orientation_figures(reference_maps: np.ndarray, reference_inputs: np.ndarray, input_maps: np.ndarray,
                        input_inputs: np.ndarray, expected_above: bool) -> dict:
    """The orientation's evidence and decision (module docstring, "Orientation") from I_ro's values
    and the input's values at the same pixels of R_d and of I_in. ``expected_above``: the plans'
    anomalous side (the fingerprint's polarity), for the input and for I_ro alike."""
    outliers = input_outliers(reference_inputs, input_inputs, expected_above)
    outlier_share = float(np.mean(outliers))
    # the map's tails: I_in's values of I_ro beyond R_d's range of I_ro, at either end
    low, high = np.percentile(reference_maps, [100 * ORIENTATION_TAIL, 100 * (1 - ORIENTATION_TAIL)])
    above, below = float(np.mean(input_maps > high)), float(np.mean(input_maps < low))
    figures = {"input_outliers": round(outlier_share, 4), "input_outliers_auroc": None,
               # the polarity gate's levels (R_d's medians of the input and of raw I_ro)
               "reference_input_median": round(float(np.median(reference_inputs)), 4),
               "reference_map_median": round(float(np.median(reference_maps)), 4),
               "inputs_above_reference_p99": round(above, 4), "inputs_below_reference_p1": round(below, 4),
               "expected_side": "above" if expected_above else "below"}
    if enough_input_outliers(outlier_share):
        # I_in leaves R_d's input range on the anomalous side (twice R_d's own share): the map
        # should rank those pixels above the rest of I_in; ranked below, the anomalies are in I_ro's other end
        auroc = roc_auc(input_maps, outliers)
        figures["input_outliers_auroc"] = round(auroc, 4)
        return {**figures, "decided_by": "input_outliers", "inverted": bool(auroc < 0.5)}
    expected, other = (above, below) if expected_above else (below, above)
    invert = other >= 2.0 * expected and other - expected >= 0.01
    return {**figures, "decided_by": "map_tails", "inverted": bool(invert)}
