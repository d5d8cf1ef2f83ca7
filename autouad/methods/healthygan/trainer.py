"""HealthyGAN's training (paper 003, section 2.2 and appendix A) and its anomaly map (section 2.3).

Pools: set A, the mixed (unlabeled) set, is every slice of the fold's training cases that is not a
reference slice; set B, the healthy set, is the fold's reference slices (normal cases, or slices
without anomaly under the ``slices_without_anomaly`` protocol).

The schedule has two phases:

1. ``feature_network`` (``feature_network_iterations``): the small CNN whose features the model
   selection compares (frechet.py) learns to tell A (label 1) from B (label 0), binary
   cross-entropy, Adam (``model_selection.feature_lr``). It is frozen afterwards.
2. ``training`` (``iterations``): one iteration = ``critic_steps_per_generator_step`` (2)
   discriminator updates, then one generator update (fig. 2):

   * discriminator (eqs. 3, 8), on a fresh batch of A and of B each time:
     E_A[D(G(x))] - E_B[D(x)] + lambda_gp * E[(||grad D(x_hat)||_2 - 1)^2], x_hat at random points
     between the real B images and the translated A images, G(x) from eq. 1 without gradient;
   * generator (eqs. 4-7, 9), on the A and B batches of the last discriminator update (as the
     authors' code, where a generator update follows the discriminator update of its loop pass):
     -E_A[D(G(x))] - E_B[D(G(x))] + lambda_rec ||A - A'||_1 + lambda_id ||B_int(B) - B||_1
     + lambda_f L_f, the discriminator frozen. The focus loss covers the masks of both batches
     (the authors' code averages the two).

   Both optimizers run at lr 1e-4, decayed linearly to 0 over the last ``lr_decay_iterations``
   (appendix A: the last 100k of 400k; the authors' code, inherited from StarGAN, lowers it by
   lr / 100000 every 1000 iterations, which ends at 99 % of the start value; we decay as the paper
   says).

Model selection (appendix A: "we have picked the best model using FID"): every ``selection_every``
iterations and at the last one, the Fréchet distance (frechet.py) between the features of the
translated unlabeled validation slices and of the real normal validation slices, each a fixed
sample of at most ``selection_samples`` slices of the fold's validation cases (where the validation
cases have no unlabeled slices, all of their slices are translated; where they have no normal
slices, the normal training slices are the real side; both are logged). Every value is logged as a
``frechet_distance`` event; the generator with the smallest becomes the final generator at the end
of training. The best weights, their distance and step are in ``extra_state`` so that ``--continue``
resumes exactly; the feature network is one of the trainer's networks, so the base saves and
restores it (and DDP keeps its replicas equal, so that every rank selects the same generator).

Intensities: preprocessing stores slices in [0, 1] (X-rays: the fixed range 0..255; MRI: min-max).
The networks work in [-1, 1] (tanh generator), so images are mapped with 2x - 1 on the way in, and
the anomaly map |x - G(x)| is computed back in the stored [0, 1] units (half the difference in
[-1, 1], as the authors' code divides it by 2), averaged over channels.

Choices where the paper is silent, each documented:

* Adam betas (0.5, 0.999) for the generator and discriminator: the authors' code.
* The discriminator step draws its own A and B batches (from streams "unlabeled" and "normal");
  random interpolation weights come from torch's global generator, which the base reseeds every
  iteration, so that ``--continue`` repeats a run exactly.
* Networks and batches use the channels-last memory format (faster with oneDNN on the CPU).
* One "iteration" is one generator update with its two discriminator updates (the paper's fig. 2);
  the authors' code counts discriminator updates, so its 400k would be 200k of ours.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from autouad.methods.caae.losses import critic_loss, generator_adversarial_loss, gradient_penalty, interpolate
from autouad.methods.caae.trainer import frozen_weights
from autouad.methods.healthygan.frechet import FEATURE_MAPS, FeatureNetwork, frechet_distance_of_features
from autouad.methods.healthygan.losses import (focus_loss, identity_loss, reconstructed_image, reconstruction_loss,
                                               translated_image)
from autouad.methods.healthygan.network import (DISCRIMINATOR_FEATURES, DISCRIMINATOR_LAYERS, GENERATOR_FEATURES,
                                                RESIDUAL_BLOCKS, HealthyGenerator, PatchDiscriminator)
from autouad.training.base_trainer import AutoUADTrainer, Phase
from autouad.training.fold_data import SlicePool, TrainingError

ADAM_BETAS = (0.5, 0.999)


def to_generator_range(images: torch.Tensor) -> torch.Tensor:
    """Stored [0, 1] intensities -> the tanh generator's [-1, 1]."""
    return images * 2.0 - 1.0


def decayed_learning_rate(base: float, iteration: int, iterations: int, decay_iterations: int) -> float:
    """``base`` until the last ``decay_iterations`` of ``iterations``, then linearly down: iteration
    i (from 0) of the decay gets base * (iterations - i) / decay_iterations, which would reach 0 at
    the first iteration after the schedule."""
    decay = min(int(decay_iterations), int(iterations))
    if decay <= 0:
        return float(base)
    return float(base) * min(1.0, (int(iterations) - int(iteration)) / decay)


class HealthyGANTrainer(AutoUADTrainer):
    method = "healthygan"
    channels_last = True  # within the noise on a 2-core CPU, identical maps: docs/results.md, "Speed options"
    # bf16 autocast where the CPU has bf16 instructions: 2.2x faster steps on a Zen 4 EPYC, so a
    # budget trains about twice the iterations, validation quality measured both ways (docs/results.md,
    # "bf16 training on a CPU with bf16 instructions"); fp32 elsewhere
    training_precision = "auto"
    map_name = "|x - G(x)|"
    inference_networks = ("generator",)
    budget_keys = ("iterations", "lr_decay_iterations", "feature_network_iterations", "selection_every")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "checkpoint_every" in self.schedule:  # HealthyGAN's checkpoints are large (a 45M-weight critic)
            self.checkpoint_every = int(self.schedule["checkpoint_every"])
        self.best_generator: dict[str, torch.Tensor] | None = None
        self.best_frechet_distance: float | None = None
        self.best_step: int | None = None
        self.selection_sets: dict[str, tuple[SlicePool, np.ndarray]] = {}

    # ---- settings --------------------------------------------------------------------------------
    def lam(self, name: str) -> float:
        return float(self.settings["lambdas"][name])

    @property
    def critic_steps(self) -> int:
        return int(self.settings["critic_steps_per_generator_step"])

    def schedule_value(self, key: str) -> int:
        if key not in self.schedule:
            raise TrainingError(f"the {self.schedule.get('name')} schedule of {self.method} has no {key!r}; "
                                f"plan again with the current plans/healthygan.json")
        return int(self.schedule[key])

    def network_setting(self, key: str, default: int) -> int:
        return int(self.settings.get("network", {}).get(key, default))

    # ---- data ------------------------------------------------------------------------------------
    def build_pools(self) -> None:
        if self.critic_steps < 1:
            raise TrainingError(f"{self.method}: critic_steps_per_generator_step must be at least 1, "
                                f"not {self.critic_steps}")
        cases = self.data.train_cases
        normal = self.data.reference_pool()
        unlabeled = self.data.pool("unlabeled", cases, lambda c: ~c.is_reference)
        if len(normal) == 0 or len(unlabeled) == 0:
            raise TrainingError(f"fold {self.fold}: HealthyGAN needs normal (set B) and unlabeled (set A) training "
                                f"slices, found {len(normal)} normal and {len(unlabeled)} unlabeled")
        self.loader(unlabeled, "unlabeled")
        self.loader(normal, "normal")
        self.loader(unlabeled, "features_unlabeled")
        self.loader(normal, "features_normal")
        self.selection_sets, notes = self.selection_pools(normal)
        self.pool_sizes = {"unlabeled (A)": len(unlabeled), "normal (B)": len(normal),
                           **{f"selection_{k}": len(v[1]) for k, v in self.selection_sets.items()}, **notes}

    def selection_pools(self, normal_training: SlicePool) -> tuple[dict, dict]:
        """The fixed validation samples of the model selection: slices to translate and real normal slices."""
        cases = self.data.validation_cases
        translate = self.data.pool("validation_unlabeled", cases, lambda c: ~c.is_reference)
        real = self.data.reference_pool(cases)
        notes = {}
        if len(translate) == 0:
            translate = self.data.pool("validation_all", cases)
            notes["selection_translated"] = "the validation cases have no unlabeled slices: all are translated"
        if len(real) == 0:
            real = normal_training
            notes["selection_real"] = "the validation cases have no normal slices: the normal training slices"
        rng = np.random.default_rng([self.seed, self.fold, 3])
        n = self.schedule_value("selection_samples")
        sets = {name: (pool, np.sort(rng.choice(len(pool), min(n, len(pool)), replace=False)))
                for name, pool in (("translated", translate), ("real", real))}
        if min(len(indices) for _, indices in sets.values()) < 2:
            notes["selection"] = "off: fewer than two validation slices to compare; the last generator is kept"
            sets = {}
        return sets, notes

    def next_images(self, loader: str) -> torch.Tensor:
        """A batch of the stream, in the generator's range [-1, 1]."""
        images = self.to_device(next(self.loaders[loader])["data"])
        return to_generator_range(images)

    # ---- networks --------------------------------------------------------------------------------
    def build_networks(self) -> dict:
        channels = len(self.plans.input_channels)
        slice_size = self.plans.slice_size
        feature_maps = tuple(self.settings.get("model_selection", {}).get("feature_maps", FEATURE_MAPS))
        return {
            "generator": HealthyGenerator(channels, self.network_setting("generator_features", GENERATOR_FEATURES),
                                          self.network_setting("residual_blocks", RESIDUAL_BLOCKS)),
            "discriminator": PatchDiscriminator(channels, slice_size,
                                                self.network_setting("discriminator_features", DISCRIMINATOR_FEATURES),
                                                self.network_setting("discriminator_layers", DISCRIMINATOR_LAYERS)),
            "feature_network": FeatureNetwork(channels, tuple(int(m) for m in feature_maps))}

    def build_optimizers(self) -> dict:
        optimizer = self.settings["optimizer"]
        lr, betas = float(optimizer["lr"]), tuple(optimizer.get("betas", ADAM_BETAS))
        feature_lr = float(self.settings.get("model_selection", {}).get("feature_lr", 1e-3))
        return {"generator": torch.optim.Adam(self.networks["generator"].parameters(), lr=lr, betas=betas),
                "discriminator": torch.optim.Adam(self.networks["discriminator"].parameters(), lr=lr, betas=betas),
                "feature_network": torch.optim.Adam(self.networks["feature_network"].parameters(), lr=feature_lr)}

    def build_phases(self) -> list[Phase]:
        if self.schedule_value("selection_every") < 1:
            raise TrainingError(f"{self.method}: selection_every must be at least 1, not "
                                f"{self.schedule_value('selection_every')}")
        return [Phase("feature_network", "features", self.schedule_value("feature_network_iterations")),
                Phase("training", "training", self.schedule_value("iterations"))]

    # ---- phase 1: the feature network of the model selection -------------------------------------
    def feature_network_step(self) -> dict[str, torch.Tensor]:
        unlabeled, normal = self.next_images("features_unlabeled"), self.next_images("features_normal")
        labels = torch.cat([torch.ones(len(unlabeled)), torch.zeros(len(normal))]).to(unlabeled.device)
        optimizer = self.optimizers["feature_network"]
        optimizer.zero_grad(set_to_none=True)
        logits = self.train_net("feature_network")(torch.cat([unlabeled, normal]))
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        optimizer.step()
        accuracy = ((logits.detach() > 0).float() == labels).float().mean()
        return {"feature_network_loss": loss.detach(), "feature_network_accuracy": accuracy}

    # ---- phase 2: HealthyGAN ---------------------------------------------------------------------
    def set_learning_rates(self, iteration: int) -> float:
        lr = decayed_learning_rate(float(self.settings["optimizer"]["lr"]), iteration,
                                   self.schedule_value("iterations"), self.schedule_value("lr_decay_iterations"))
        for name in ("generator", "discriminator"):
            for group in self.optimizers[name].param_groups:
                group["lr"] = lr
        return lr

    def translate(self, generator, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """G(x) (eq. 1) with its B_int and mask, for images in [-1, 1]."""
        intermediate, mask = generator(images)
        return translated_image(images, intermediate, mask), intermediate, mask

    def discriminator_step(self) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        unlabeled, normal = self.next_images("unlabeled"), self.next_images("normal")
        with torch.no_grad():
            translated = self.translate(self.networks["generator"], unlabeled)[0]
        optimizer = self.optimizers["discriminator"]
        optimizer.zero_grad(set_to_none=True)
        # Fake and real in one pass (no layer mixes the images of a batch).
        scores = self.train_net("discriminator")(torch.cat([translated, normal]))
        wasserstein_term = critic_loss(scores[:len(translated)], scores[len(translated):])
        # Through the plain module: DDP supports backward() but not torch.autograd.grad; the penalty's
        # weight gradients still join the same backward pass (see CAAETrainer.critic_step).
        weights = torch.rand(len(normal), 1, 1, 1, device=normal.device, dtype=normal.dtype)
        penalty = gradient_penalty(self.networks["discriminator"], interpolate(normal, translated, weights))
        loss = wasserstein_term + self.lam("gp") * penalty
        loss.backward()
        optimizer.step()
        logs = {"loss_discriminator": loss.detach(), "wasserstein_estimate": -wasserstein_term.detach(),
                "gradient_penalty": penalty.detach()}
        return logs, (unlabeled, normal)

    def generator_step(self, unlabeled: torch.Tensor, normal: torch.Tensor) -> dict[str, torch.Tensor]:
        optimizer = self.optimizers["generator"]
        optimizer.zero_grad(set_to_none=True)
        n = len(unlabeled)
        with frozen_weights(self.networks["discriminator"]):
            # A and B in one generator pass (instance normalisation is per image: the same as two passes).
            images = torch.cat([unlabeled, normal])
            translated, intermediate, mask = self.translate(self.train_net("generator"), images)
            scores = self.networks["discriminator"](translated)
            terms = {"adversarial": generator_adversarial_loss(scores[:n]) + generator_adversarial_loss(scores[n:]),
                     "reconstruction": reconstruction_loss(
                         unlabeled, reconstructed_image(unlabeled, intermediate[:n], mask[:n])),
                     "identity": identity_loss(normal, intermediate[n:]),
                     "focus": focus_loss(mask, self.lam("fs"), self.lam("fz"))}
            loss = (terms["adversarial"] + self.lam("rec") * terms["reconstruction"]
                    + self.lam("id") * terms["identity"] + self.lam("f") * terms["focus"])
            loss.backward()
        optimizer.step()
        return {"loss_generator": loss.detach(), **{k: v.detach() for k, v in terms.items()},
                "mask_mean_unlabeled": mask[:n].detach().mean(), "mask_mean_normal": mask[n:].detach().mean()}

    def train_iteration(self, phase: Phase, iteration: int) -> dict[str, float]:
        if phase.kind == "features":
            logs = self.feature_network_step()
        else:
            logs = {"lr": torch.tensor(self.set_learning_rates(iteration))}
            steps = [self.discriminator_step() for _ in range(self.critic_steps)]
            logs.update({k: torch.stack([s[0][k] for s in steps]).mean() for k in steps[0][0]})
            logs.update(self.generator_step(*steps[-1][1]))
            if (iteration + 1) % self.schedule_value("selection_every") == 0 or iteration + 1 == phase.iterations:
                self.select_generator(self.position["step"] + 1)
        # One transfer for all values (each .item() would wait for the GPU).
        values = torch.stack([v.float().to(self.device) for v in logs.values()]).cpu().numpy()
        return {k: float(v) for k, v in zip(logs, values)}

    # ---- model selection -------------------------------------------------------------------------
    @torch.no_grad()
    def selection_features(self, name: str, translate: bool) -> np.ndarray:
        """Feature-network features (N, F) of a fixed selection sample, translated by G(x) or as is."""
        pool, indices = self.selection_sets[name]
        generator, features = self.networks["generator"], self.networks["feature_network"]
        bs, out = max(1, 2 * self.batch_size), []
        for start in range(0, len(indices), bs):
            images = to_generator_range(self.to_device(pool.read(indices[start:start + bs])))
            if translate:
                images = self.translate(generator, images)[0]
            out.append(features.features(images).double().cpu().numpy())
        return np.concatenate(out)

    def frechet_distance(self, translate: bool = True) -> float:
        """FD between (translated) selection slices and the real normal ones."""
        return frechet_distance_of_features(self.selection_features("translated", translate),
                                            self.selection_features("real", False))

    def budget_overheads(self) -> tuple[float, float]:
        """The base's, plus the model selections: one Fréchet distance every ``selection_every``
        iterations and at the last (their number does not change when a budget scales both), and the
        untranslated distance after the feature network's phase."""
        fixed, per_iteration = super().budget_overheads()
        if self.selection_sets:
            start = time.perf_counter()
            self.frechet_distance()
            every = self.schedule_value("selection_every")
            selections = sum(-(-p.iterations // every) for p in self.phases if p.kind == "training") + 1
            fixed += selections * (time.perf_counter() - start)
        return fixed, per_iteration

    def select_generator(self, step: int) -> None:
        if not self.selection_sets:
            return
        distance = self.frechet_distance()
        improved = self.best_frechet_distance is None or distance < self.best_frechet_distance
        if improved:
            self.best_frechet_distance, self.best_step = distance, step
            self.best_generator = {k: v.detach().clone() for k, v in self.networks["generator"].state_dict().items()}
        self.log.event(step, "frechet_distance", value=round(distance, 6), best=improved)

    def on_phase_end(self, phase_index: int, phase: Phase) -> None:
        step = self.position["step"]
        if phase.kind == "features" and self.selection_sets:
            # The distance of the untranslated slices: a generator helps where it gets below this.
            self.log.event(step, "frechet_distance_untranslated", value=round(self.frechet_distance(False), 6))
        elif phase.kind == "training":
            if self.best_generator is None:
                self.log.event(step, "model_selection", generator="last", reason="no selection sample")
                return
            self.networks["generator"].load_state_dict(self.best_generator)
            self.log.event(step, "model_selection", generator="best", step_of_best=self.best_step,
                           frechet_distance=round(self.best_frechet_distance, 6))

    def extra_state(self) -> dict:
        return {"best_generator": self.best_generator, "best_frechet_distance": self.best_frechet_distance,
                "best_step": self.best_step}

    def load_extra_state(self, state: dict) -> None:
        best = state.get("best_generator")
        self.best_generator = None if best is None else {k: v.to(self.device) for k, v in best.items()}
        self.best_frechet_distance = state.get("best_frechet_distance")
        self.best_step = state.get("best_step")

    # ---- inference -------------------------------------------------------------------------------
    def predict_anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """|x - G(x)| in the stored [0, 1] units, the channel mean: (B, C, H, W) -> (B, H, W)."""
        x = to_generator_range(images)
        translated = self.translate(self.networks["generator"], x)[0]
        return ((x - translated).abs() / 2.0).mean(1).contiguous()

    def header(self) -> dict:
        return {**super().header(), "critic_steps_per_generator_step": self.critic_steps,
                "lambdas": dict(self.settings["lambdas"]), "best_frechet_distance": self.best_frechet_distance,
                "best_step": self.best_step}
