"""Training of the two-phase pseudo-anomaly net (paper 004, sections 3 and 4.1).

Both networks learn from normal slices only, the fold's normal reference
(``FoldData.reference_pool``: normal cases, or lesion-free slices under the
``slices_without_anomaly`` protocol), turned into pseudo-anomalous slices by ``synthesis.py`` at
every iteration. Two phases, each with its own batch stream over the normal slices:

1. ``restoration`` (``phase1_epochs``, 200 in the paper): the restoration U-Net learns to give back
   the original slice from its pseudo-anomalous version, L1 loss (eq. 2).
2. ``segmentation`` (``phase2_epochs``, 1 in the paper, "to avoid bias introduced by pseudo
   anomalies"): with the restoration net frozen (no gradients, evaluation mode), the segmentation
   net learns the synthetic masks from [restored, input], focal loss with alpha 1 and gamma 2 (eq. 3).

An epoch is ceil(normal slices / batch) iterations, at most ``max_iterations_per_epoch`` where the
schedule sets it (the CPU schedules); phase 2 starts its stream afresh, so at the paper's schedule it
is exactly one pass over the normal slices. Adam with the plans' learning rate (1e-4) and torch's
default betas (the authors' code), one optimizer per network, batch 8.

Anomaly map (inference): sigmoid of the segmentation net's logit on [restoration(x), x], the
probability of anomaly in [0, 1]; the fold's threshold comes from the plans' calibration strategy.

Choices where the paper is silent, each documented:

* The segmentation net is DRAEM's discriminative sub-network (base width 64): the paper builds on
  "the DRAEM-similar architecture", its Fig. 1 shows the two nets of DRAEM, its ablation (Table 2)
  changes only the restoration net, and the authors' code uses it. One output logit with a sigmoid
  instead of DRAEM's two-channel softmax (the same model; see ``losses.py``).
* The restoration U-Net follows the authors' code (``network.py``).
* Anomalies are synthesised on the fly from a numpy Generator seeded by (seed, fold, iteration,
  rank), so that ``--continue`` synthesises the same anomalies as an uninterrupted run.
* Networks and batches use the channels-last memory format: the same arithmetic, faster on the CPU
  (oneDNN; docs/experiments.md) and suited to cuDNN.
* Masks are restricted to the slice's ROI (the liver in the paper); datasets without an ROI use
  the non-zero foreground (``synthesis.anomaly_region``). The method is modality-agnostic: brain
  MRI and X-rays train the same way.

Logged per iteration: ``loss_restoration`` (phase 1) or ``loss_segmentation`` (phase 2), and
``anomaly_fraction``, the share of the batch's pixels inside synthetic masks.

``DRAEMTrainer`` (``draem.py``) subclasses this trainer with DRAEM's networks and joint training.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from autouad.methods.twophase.draem_network import DISCRIMINATIVE_BASE_WIDTH, DiscriminativeSubNetwork
from autouad.methods.twophase.losses import focal_loss, l1_loss
from autouad.methods.twophase.network import RestorationUNet
from autouad.methods.twophase.synthesis import SynthesisSettings, synthesise
from autouad.training.base_trainer import AutoUADTrainer, Phase
from autouad.training.fold_data import TrainingError

# Tags the synthesis' random stream apart from the base's torch seeding of the same iteration.
SYNTHESIS_STREAM = 4004
# The U-Net's widths are (w, 2w, 4w, 8w): the authors' wf = 6.
DEFAULT_RESTORATION_WIDTH = 64


class TwoPhaseTrainer(AutoUADTrainer):
    method = "twophase"
    channels_last = True  # within the noise on a 2-core CPU, identical maps: docs/results.md, "Speed options"
    map_name = "anomaly probability"
    inference_networks = ("restoration", "segmentation")
    budget_keys = ("phase1_epochs", "phase1_min_iterations", "phase2_min_iterations")
    histogram_range = (0.0, 1.0)
    # Phase kinds in order, each with the schedule key of its epochs; every kind has its own stream.
    phase_kinds: tuple[tuple[str, str], ...] = (("restoration", "phase1_epochs"), ("segmentation", "phase2_epochs"))

    # ---- settings --------------------------------------------------------------------------------
    @property
    def network_settings(self) -> dict:
        return self.settings.get("network", {})

    @property
    def learning_rate(self) -> float:
        return float(self.settings["optimizer"]["lr"])

    @property
    def synthesis(self) -> SynthesisSettings:
        return SynthesisSettings.from_plans(self.settings.get("synthesis", {}))

    def phase_iterations(self, epochs: int) -> int:
        """``epochs`` passes over the normal slices, each capped at ``max_iterations_per_epoch``."""
        per_epoch = self.iterations_per_epoch(len(self.normal_pool))
        cap = self.schedule.get("max_iterations_per_epoch")
        if cap:
            per_epoch = min(per_epoch, int(cap))
        return int(epochs) * per_epoch

    # ---- data ------------------------------------------------------------------------------------
    def build_pools(self) -> None:
        reference = self.data.reference_pool()
        if len(reference) == 0:
            raise TrainingError(f"fold {self.fold}: {self.method} learns from normal slices, but the fold's "
                                f"training cases have none")
        self.normal_pool = reference
        self.pool_sizes = {"reference": len(reference)}
        for kind, _ in self.phase_kinds:  # every stream, whatever the schedule, so that any checkpoint fits
            self.loader(reference, kind)

    def synthetic_batch(self, stream: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next normal batch of ``stream`` with pseudo anomalies: (originals, synthetic images,
        masks (B, 1, H, W) of 0/1), on the device."""
        batch = next(self.loaders[stream])
        start = time.perf_counter()
        roi = self.normal_pool.read_roi(batch["indices"])
        rng = np.random.default_rng([self.seed, self.fold, self.position["step"], self.rank, SYNTHESIS_STREAM])
        synthetic = synthesise(batch["data"], roi, rng, self.synthesis)
        masks = synthetic.masks[:, None].astype(np.float32)
        self.batch_preparation_seconds += time.perf_counter() - start
        return self.to_device(batch["data"]), self.to_device(synthetic.images), self.to_device(masks)

    # ---- networks --------------------------------------------------------------------------------
    def build_restoration_network(self, channels: int) -> torch.nn.Module:
        width = int(self.network_settings.get("restoration_width", DEFAULT_RESTORATION_WIDTH))
        return RestorationUNet(channels, channels, (width, 2 * width, 4 * width, 8 * width))

    def build_networks(self) -> dict:
        channels = len(self.input_channels)
        width = int(self.network_settings.get("segmentation_width", DISCRIMINATIVE_BASE_WIDTH))
        return {"restoration": self.build_restoration_network(channels),
                "segmentation": DiscriminativeSubNetwork(2 * channels, 1, width)}

    def build_optimizers(self) -> dict:
        return {name: torch.optim.Adam(net.parameters(), lr=self.learning_rate)
                for name, net in self.networks.items()}

    def build_phases(self) -> list[Phase]:
        phases = []
        for kind, key in self.phase_kinds:
            iterations = self.phase_iterations(int(self.schedule[key]))
            if iterations > 0:
                # e.g. phase2_min_iterations: a phase's epochs count at least this many iterations
                minimum = int(self.schedule.get(key.replace("_epochs", "_min_iterations")) or 0)
                phases.append(Phase(kind, kind, max(iterations, minimum)))
        if not phases:
            raise TrainingError(f"the {self.schedule.get('name')} schedule of {self.method} has no iterations")
        return phases

    # ---- one iteration ---------------------------------------------------------------------------
    def restoration_step(self) -> dict[str, torch.Tensor]:
        originals, synthetic, masks = self.synthetic_batch("restoration")
        optimizer = self.optimizers["restoration"]
        optimizer.zero_grad(set_to_none=True)
        loss = l1_loss(self.train_net("restoration")(synthetic), originals)
        loss.backward()
        optimizer.step()
        return {"loss_restoration": loss.detach(), "anomaly_fraction": masks.mean()}

    def frozen_restoration(self, synthetic: torch.Tensor) -> torch.Tensor:
        """The restoration net's output with its weights and any normalisation statistics untouched."""
        restoration = self.networks["restoration"]
        restoration.eval()
        with torch.no_grad():
            return restoration(synthetic)

    def segmentation_step(self) -> dict[str, torch.Tensor]:
        _, synthetic, masks = self.synthetic_batch("segmentation")
        restored = self.frozen_restoration(synthetic)
        optimizer = self.optimizers["segmentation"]
        optimizer.zero_grad(set_to_none=True)
        loss = focal_loss(self.train_net("segmentation")(torch.cat([restored, synthetic], dim=1)), masks)
        loss.backward()
        optimizer.step()
        return {"loss_segmentation": loss.detach(), "anomaly_fraction": masks.mean()}

    def phase_steps(self) -> dict:
        """Phase kind -> the method that does one iteration of it."""
        return {"restoration": self.restoration_step, "segmentation": self.segmentation_step}

    def train_iteration(self, phase: Phase, iteration: int) -> dict[str, float]:
        logs = self.phase_steps()[phase.kind]()
        # One transfer for all values (each .item() would wait for the GPU).
        values = torch.stack([v.float() for v in logs.values()]).cpu().numpy()
        return {k: float(v) for k, v in zip(logs, values)}

    # ---- inference -------------------------------------------------------------------------------
    def predict_anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """Probability of anomaly, sigmoid(segmentation([restoration(x), x])): (B, C, H, W) -> (B, H, W)."""
        restored = self.networks["restoration"](images)
        logits = self.networks["segmentation"](torch.cat([restored, images], dim=1))
        return torch.sigmoid(logits[:, 0]).contiguous()

    def header(self) -> dict:
        sigma, kernel = self.synthesis.scaled_to(self.plans.slice_size)
        return {**super().header(),
                "synthesis": {"blur_sigma_px": round(sigma, 3), "morphology_kernel_px": kernel,
                              "mask_threshold": self.synthesis.mask_threshold,
                              "shift_abs_range_0_255": list(self.synthesis.shift_abs_range)}}
