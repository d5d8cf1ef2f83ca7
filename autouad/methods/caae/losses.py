"""Losses of the constrained AAE and its baselines (paper 002, sections 3.1 and 3.3).

The paper writes its terms as norms, ||X - X'||^2 and ||z - z'||^2, which are sums; so every term
here is a per-sample sum over pixels (and channels) or latent dimensions, averaged over the batch.
This keeps the balance between the terms that the paper's sums set (and that lambda = 1 was tuned
for): means over 32x32 pixels and 128 latent dimensions would shrink the reconstruction 8 times
more than the latent constraint, and 1024 times against the unnormalised adversarial term.

* reconstruction: ||X - X'||^2, the L2 loss of a Gaussian decoder with unit variance;
* latent consistency: ||z - z'||^2 with z' = Enc(X'), weighted by lambda in the trainer;
* VAE divergence: KL(N(mu, diag(sigma^2)) || N(0, I));
* WGAN-GP on the latent code (eq. 5): the critic minimises E[D(z)] - E[D(z_prior)] + lambda_gp * GP,
  the encoder minimises -E[D(z)].
"""
from __future__ import annotations

import torch


def per_sample_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over every axis but the first (the batch), then the batch mean."""
    return values.flatten(1).sum(1).mean()


def reconstruction_loss(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """||X - X'||^2 per sample, averaged over the batch."""
    return per_sample_sum((images - reconstructions) ** 2)


def latent_consistency_loss(codes: torch.Tensor, codes_of_reconstructions: torch.Tensor) -> torch.Tensor:
    """||z - z'||^2 per sample, averaged over the batch (the paper's constraint, section 3.3)."""
    return per_sample_sum((codes - codes_of_reconstructions) ** 2)


def kl_divergence_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) = 1/2 sum(mu^2 + exp(logvar) - 1 - logvar) per sample,
    averaged over the batch (Kingma & Welling 2013, appendix B)."""
    return per_sample_sum(0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar))


def critic_loss(critic_of_encoded: torch.Tensor, critic_of_prior: torch.Tensor) -> torch.Tensor:
    """E[D(z)] - E[D(z_prior)]: the critic learns to score prior samples above encoded codes; its
    negative is the critic's estimate of the Wasserstein distance."""
    return critic_of_encoded.mean() - critic_of_prior.mean()


def generator_adversarial_loss(critic_of_encoded: torch.Tensor) -> torch.Tensor:
    """-E[D(z)]: the encoder moves its codes to where the critic scores the prior."""
    return -critic_of_encoded.mean()


def interpolate(prior_codes: torch.Tensor, encoded_codes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Points on the straight lines between paired prior and encoded codes; ``weights`` (B, 1) in [0, 1]
    (1 gives the prior code)."""
    return weights * prior_codes + (1.0 - weights) * encoded_codes


def gradient_penalty(critic, points: torch.Tensor) -> torch.Tensor:
    """E[(||grad_z D(z)||_2 - 1)^2] at ``points`` (Gulrajani et al. 2017, eq. 3), differentiable with
    respect to the critic's weights (the gradient is taken with ``create_graph``)."""
    points = points.detach().requires_grad_(True)
    scores = critic(points)
    gradients, = torch.autograd.grad(scores.sum(), points, create_graph=True)
    return ((gradients.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()
