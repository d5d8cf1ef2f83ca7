"""Training of the constrained AAE (paper 002) and of its two baselines, the AAE and the VAE.

All three learn the normal slices of the fold's training cases (``FoldData.reference_pool``):
normal cases, or slices without anomaly under the ``slices_without_anomaly`` protocol. The anomaly
map of a slice is the residual |X - X'| (section 5.2), averaged over channels when there are several.

The schedule is one phase of ``iterations`` iterations. An iteration of the (constrained) AAE:

1. ``critic_steps_per_generator_step`` critic updates (20: the paper uses WGAN-GP, eq. 5, but gives
   no step count; the plans take 20 from the authors' public code), each on a fresh batch of normal
   slices:
   z = Enc(X) without gradient, z_prior ~ N(0, I), and
   E[D(z)] - E[D(z_prior)] + lambda_gp * E[(||grad D(z_hat)||_2 - 1)^2] at random points z_hat
   between paired prior and encoded codes (Gulrajani et al. 2017, lambda_gp = 10);
2. one auto-encoder update (encoder and decoder, critic frozen):
   ||X - X'||^2 + lambda * ||z - z'||^2 - E[D(z)], with X' = Dec(z) and z' = Enc(X') (section 3.3).
   Gradients flow through both z and z' (the paper adds the constraint to the loss as it is).
   lambda = ``lambda_latent``: 1.0 for caae, 0 for the aae baseline, whose trainer skips the
   second encoder pass.

The VAE baseline (section 3.1) replaces the critic with the KL divergence: the encoder gives mu and
log sigma^2, the decoder reconstructs from z = mu + sigma * eps, the loss is
||X - X'||^2 + KL(N(mu, sigma^2) || N(0, I)); at inference it decodes mu.

Logged per iteration: ``loss_critic``, ``wasserstein_estimate`` (E[D(z_prior)] - E[D(z)]) and
``gradient_penalty``, each the mean over the iteration's critic steps; ``loss_autoencoder`` and its
terms ``reconstruction``, ``latent_consistency`` (when lambda > 0) and ``adversarial`` (-E[D(z)]) or
``kl`` (VAE).

Choices where the paper is silent, each documented:

* Adam with the plan's learning rate and betas (0.5, 0.9), the setting of the WGAN-GP authors'
  public code (e.g. their gan_mnist.py; their Algorithm 1 uses beta1 = 0), for every network of all
  three methods.
* Batch normalisation: the encoder runs in training mode (batch statistics) everywhere in training,
  so that the critic sees codes as the auto-encoder update produces them, but only the encoding of
  the real batch in the auto-encoder update moves the running statistics; the critic steps' encodings
  and the encoding of the reconstructions X' leave them as they were. At inference (evaluation mode)
  the encoder therefore normalises with statistics of real normal slices only.
* The networks of ``network.py`` with 32, 64, 128, 256 maps and 128 latent dimensions; the plans'
  ``network`` block may set ``features`` and ``latent_dim`` to change them.
* Prior samples and interpolation weights come from torch's global generator, which the base
  reseeds every iteration, so that ``--continue`` repeats a run exactly.
* Networks and batches use the channels-last memory format: the same arithmetic, faster on the CPU
  (oneDNN; docs/experiments.md) and suited to cuDNN.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from autouad.methods.caae.losses import (critic_loss, generator_adversarial_loss, gradient_penalty, interpolate,
                                         kl_divergence_loss, latent_consistency_loss, reconstruction_loss)
from autouad.methods.caae.network import (DEFAULT_FEATURES, DEFAULT_LATENT, LatentCritic, ResNetDecoder,
                                          ResNetEncoder, frozen_running_statistics)
from autouad.training.base_trainer import AutoUADTrainer, Phase
from autouad.training.fold_data import TrainingError

# Adam's betas for every network (WGAN-GP authors' code); the learning rate comes from the plans.
ADAM_BETAS = (0.5, 0.9)


@contextmanager
def frozen_weights(module: torch.nn.Module | None):
    """No gradients for ``module``'s weights inside the block (``None``: nothing to freeze)."""
    if module is None:
        yield
        return
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class CAAETrainer(AutoUADTrainer):
    method = "caae"
    channels_last = True  # faster training and inference on a CPU: docs/results.md, "Speed options"
    # bf16 autocast where the CPU has bf16 instructions (fp32 elsewhere): 1.9-2.1x faster steps on a
    # Zen 4 EPYC; the constrained AAE, the AAE and the VAE were each measured both ways there
    # (docs/results.md, "bf16 training on a CPU with bf16 instructions")
    training_precision = "auto"
    map_name = "|x - x'|"
    inference_networks = ("encoder", "decoder")
    budget_keys = ("iterations",)
    # Whether the latent code is matched to the prior by a WGAN-GP critic (False: the VAE's KL term).
    adversarial = True

    # ---- settings --------------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return int(self.settings.get("network", {}).get("latent_dim", DEFAULT_LATENT))

    @property
    def features(self) -> tuple[int, ...]:
        """Feature maps per resolution of the encoder (the decoder mirrors them)."""
        return tuple(int(f) for f in self.settings.get("network", {}).get("features", DEFAULT_FEATURES))

    @property
    def lambda_latent(self) -> float:
        return float(self.settings["lambda_latent"])

    @property
    def lambda_gp(self) -> float:
        return float(self.settings["lambda_gp"])

    @property
    def critic_steps(self) -> int:
        return int(self.settings["critic_steps_per_generator_step"])

    def check_settings(self) -> None:
        if self.adversarial and self.critic_steps < 1:
            raise TrainingError(f"{self.method}: critic_steps_per_generator_step must be at least 1, "
                                f"not {self.critic_steps}")
        if not self.adversarial and self.critic_steps:
            raise TrainingError(f"{self.method} has no critic, but its plans ask for "
                                f"{self.critic_steps} critic steps per iteration")
        if self.lambda_latent < 0:
            raise TrainingError(f"{self.method}: lambda_latent must not be negative, not {self.lambda_latent}")

    # ---- data ------------------------------------------------------------------------------------
    def build_pools(self) -> None:
        self.check_settings()
        reference = self.data.reference_pool()
        if len(reference) == 0:
            raise TrainingError(f"fold {self.fold}: {self.method} learns from normal slices, but the fold's "
                                f"training cases have none")
        self.pool_sizes = {"reference": len(reference)}
        self.loader(reference, "autoencoder")
        if self.adversarial:
            self.loader(reference, "critic")  # a stream of its own: fresh slices for every critic step

    def next_images(self, loader: str) -> torch.Tensor:
        return self.to_device(next(self.loaders[loader])["data"])

    # ---- networks --------------------------------------------------------------------------------
    def encoder_outputs(self) -> int:
        return self.latent_dim

    def build_networks(self) -> dict:
        slice_size = self.plans.slice_size
        channels = len(self.plans.input_channels)
        networks = {"encoder": ResNetEncoder(channels, slice_size, self.encoder_outputs(), self.features),
                    "decoder": ResNetDecoder(channels, slice_size, self.latent_dim, self.features)}
        if self.adversarial:
            networks["critic"] = LatentCritic(self.latent_dim)
        return networks

    def build_optimizers(self) -> dict:
        # One Adam per network: Adam is per parameter, so the encoder's and decoder's optimizers
        # together are one optimizer over both; the base wraps networks with an optimizer in DDP.
        lr = float(self.settings["optimizer"]["lr"])
        return {name: torch.optim.Adam(net.parameters(), lr=lr, betas=ADAM_BETAS)
                for name, net in self.networks.items()}

    def build_phases(self) -> list[Phase]:
        return [Phase("training", "training", int(self.schedule["iterations"]))]

    # ---- the latent code (the VAE changes these three) -------------------------------------------
    def training_code(self, encoded: torch.Tensor) -> torch.Tensor:
        """The code the decoder reconstructs from in training."""
        return encoded

    def deterministic_code(self, encoded: torch.Tensor) -> torch.Tensor:
        """The code at inference, and the z of the latent constraint."""
        return encoded

    def divergence(self, encoded: torch.Tensor, codes: torch.Tensor) -> tuple[str, torch.Tensor]:
        """The term that matches the codes to the prior: the encoder's WGAN loss -E[D(z)]."""
        return "adversarial", generator_adversarial_loss(self.networks["critic"](codes))

    # ---- one iteration ---------------------------------------------------------------------------
    def critic_step(self) -> dict[str, torch.Tensor]:
        images = self.next_images("critic")
        with torch.no_grad(), frozen_running_statistics(self.networks["encoder"]) as encoder:
            encoded = self.training_code(encoder(images))
        prior = torch.randn_like(encoded)
        weights = torch.rand(encoded.shape[0], 1, device=encoded.device, dtype=encoded.dtype)
        optimizer = self.optimizers["critic"]
        optimizer.zero_grad(set_to_none=True)
        scores = self.train_net("critic")(torch.cat([encoded, prior]))
        wasserstein_term = critic_loss(scores[:len(encoded)], scores[len(encoded):])
        # The penalty's inner gradient goes through the plain module: DDP supports backward() but not
        # torch.autograd.grad. Its weight gradients still join the same backward pass, so DDP's
        # all-reduce (which fires once per weight, when its gradient is complete) includes them.
        penalty = gradient_penalty(self.networks["critic"], interpolate(prior, encoded, weights))
        loss = wasserstein_term + self.lambda_gp * penalty
        loss.backward()
        optimizer.step()
        return {"loss_critic": loss.detach(), "wasserstein_estimate": -wasserstein_term.detach(),
                "gradient_penalty": penalty.detach()}

    def autoencoder_step(self) -> dict[str, torch.Tensor]:
        images = self.next_images("autoencoder")
        for name in ("encoder", "decoder"):
            self.optimizers[name].zero_grad(set_to_none=True)
        with frozen_weights(self.networks.get("critic")):
            encoded = self.train_net("encoder")(images)
            codes = self.training_code(encoded)
            reconstructions = self.train_net("decoder")(codes)
            terms = {"reconstruction": reconstruction_loss(images, reconstructions)}
            name, terms[name] = self.divergence(encoded, codes)
            loss = terms["reconstruction"] + terms[name]
            if self.lambda_latent > 0:
                # z' = Enc(X'): a second pass through the plain encoder (one DDP forward per backward;
                # its gradients join the same backward pass), leaving the running statistics to X.
                with frozen_running_statistics(self.networks["encoder"]) as encoder:
                    codes_of_reconstructions = self.deterministic_code(encoder(reconstructions))
                terms["latent_consistency"] = latent_consistency_loss(self.deterministic_code(encoded),
                                                                      codes_of_reconstructions)
                loss = loss + self.lambda_latent * terms["latent_consistency"]
            loss.backward()
        for name in ("encoder", "decoder"):
            self.optimizers[name].step()
        return {"loss_autoencoder": loss.detach(), **{k: v.detach() for k, v in terms.items()}}

    def train_iteration(self, phase: Phase, iteration: int) -> dict[str, float]:
        logs = {}
        if self.adversarial:
            critic_logs = [self.critic_step() for _ in range(self.critic_steps)]
            logs = {k: torch.stack([log[k] for log in critic_logs]).mean() for k in critic_logs[0]}
        logs.update(self.autoencoder_step())
        # One transfer for all values (each .item() would wait for the GPU).
        values = torch.stack([v.float() for v in logs.values()]).cpu().numpy()
        return {k: float(v) for k, v in zip(logs, values)}

    # ---- inference -------------------------------------------------------------------------------
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        encoded = self.networks["encoder"](images)
        return self.networks["decoder"](self.deterministic_code(encoded))

    def predict_anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """|X - X'|, the channel mean for several channels: (B, C, H, W) -> (B, H, W)."""
        return (images - self.reconstruct(images)).abs().mean(1).contiguous()

    def header(self) -> dict:
        return {**super().header(),
                "lambda_latent": self.lambda_latent,
                "critic_steps_per_generator_step": self.critic_steps if self.adversarial else 0}


class AAETrainer(CAAETrainer):
    """The AAE baseline: the constrained AAE with lambda = 0, which its plans set."""
    method = "aae"


class VAETrainer(CAAETrainer):
    """The VAE baseline: the KL divergence in place of the latent critic."""
    method = "vae"
    adversarial = False

    def encoder_outputs(self) -> int:
        return 2 * self.latent_dim  # mu and log sigma^2

    @staticmethod
    def split(encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = encoded.chunk(2, dim=1)
        return mu, logvar

    def training_code(self, encoded: torch.Tensor) -> torch.Tensor:
        """The reparameterised sample z = mu + sigma * eps, eps ~ N(0, I) (Kingma & Welling 2013)."""
        mu, logvar = self.split(encoded)
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def deterministic_code(self, encoded: torch.Tensor) -> torch.Tensor:
        return self.split(encoded)[0]

    def divergence(self, encoded: torch.Tensor, codes: torch.Tensor) -> tuple[str, torch.Tensor]:
        return "kl", kl_divergence_loss(*self.split(encoded))
