"""The DRAEM baseline of paper 004 (Zavrtanik, Kristan & Skocaj, ICCV 2021), on the two-phase trainer.

What changes against ``TwoPhaseTrainer``:

* networks: DRAEM's reconstructive sub-network (an auto-encoder without skip connections, base
  width 128) as the restoration net, and its discriminative sub-network (base width 64) as the
  segmentation net (``draem_network.py``);
* phases: one ``joint`` phase (``phase1_epochs``) that trains both networks together from the
  start, as DRAEM does: the segmentation loss also flows back into the reconstruction;
* losses: L2 + SSIM loss (1 - SSIM) on the reconstruction plus the focal loss on the segmentation,
  summed with equal weights (DRAEM's code);
* learning rate: Adam at the plans' rate, multiplied by ``lr_decay`` (0.2) at each of
  ``lr_milestones`` (80 % and 90 % of the joint phase), DRAEM's MultiStepLR; it is a function of the
  iteration, so that a resumed run follows it exactly.

What stays: the random-shape synthesis of paper 004 (the paper's Table 2 baseline used DRAEM's own
Perlin-noise anomalies with textures from the DTD dataset, which autouad does not ship), the normal
slices, the batch streams, the focal loss, the anomaly map (the sigmoid of the segmentation logit).

``phase2_epochs`` is 0 in DRAEM's plans; set above 0 (``--set phase2_epochs=1``), the joint phase is
followed by a segmentation-only phase with the reconstruction frozen, as in the two-phase trainer.

Logged per iteration: ``loss_draem`` (the sum) and its terms ``l2``, ``ssim_loss`` and ``focal``,
``learning_rate`` and ``anomaly_fraction``.
"""
from __future__ import annotations

import torch

from autouad.methods.twophase.draem_network import RECONSTRUCTIVE_BASE_WIDTH, ReconstructiveSubNetwork
from autouad.methods.twophase.losses import focal_loss, l2_loss, ssim_loss
from autouad.methods.twophase.trainer import TwoPhaseTrainer
from autouad.training.base_trainer import Phase

# DRAEM's code: MultiStepLR(milestones=[0.8 * epochs, 0.9 * epochs], gamma=0.2).
DEFAULT_LR_MILESTONES = (0.8, 0.9)
DEFAULT_LR_DECAY = 0.2


class DRAEMTrainer(TwoPhaseTrainer):
    method = "draem"
    phase_kinds = (("joint", "phase1_epochs"), ("segmentation", "phase2_epochs"))

    def build_restoration_network(self, channels: int) -> torch.nn.Module:
        width = int(self.network_settings.get("restoration_width", RECONSTRUCTIVE_BASE_WIDTH))
        return ReconstructiveSubNetwork(channels, channels, width)

    def joint_learning_rate(self, iteration: int, iterations: int) -> float:
        """The plans' rate, decayed at the milestones (fractions of the joint phase)."""
        milestones = self.settings.get("lr_milestones", DEFAULT_LR_MILESTONES)
        decay = float(self.settings.get("lr_decay", DEFAULT_LR_DECAY))
        passed = sum(iteration >= int(float(m) * iterations) for m in milestones)
        return self.learning_rate * decay ** passed

    def set_learning_rate(self, lr: float) -> None:
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr

    def joint_step(self) -> dict[str, torch.Tensor]:
        originals, synthetic, masks = self.synthetic_batch("joint")
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        restored = self.train_net("restoration")(synthetic)
        logits = self.train_net("segmentation")(torch.cat([restored, synthetic], dim=1))
        terms = {"l2": l2_loss(restored, originals), "ssim_loss": ssim_loss(restored, originals),
                 "focal": focal_loss(logits, masks)}
        loss = terms["l2"] + terms["ssim_loss"] + terms["focal"]
        loss.backward()
        for optimizer in self.optimizers.values():
            optimizer.step()
        return {"loss_draem": loss.detach(), **{k: v.detach() for k, v in terms.items()},
                "anomaly_fraction": masks.mean()}

    def phase_steps(self) -> dict:
        return {"joint": self.joint_step, "segmentation": self.segmentation_step}

    def train_iteration(self, phase: Phase, iteration: int) -> dict[str, float]:
        lr = (self.joint_learning_rate(iteration, phase.iterations) if phase.kind == "joint"
              else self.learning_rate)
        self.set_learning_rate(lr)
        return {**super().train_iteration(phase, iteration), "learning_rate": lr}
