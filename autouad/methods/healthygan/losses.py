"""HealthyGAN's image compositions and losses (paper 003, section 2, equations 1 to 9).

Images here are in the generator's range [-1, 1]. The generator gives an intermediate healthy image
B_int and a mask M in [0, 1] (1: foreground, the part the generator rewrites). For an input x:

* eq. 1, the translated (healthy) image:  G(x) = B' = B_int * M + x * (1 - M)
* eq. 2, the reconstruction of the input: A' = x * M + B_int * (1 - M)
  (the paper writes both for x from the mixed set A; eq. 4 applies eq. 1 to the normal set B too,
  with x in A's place, as the authors' code does)

Losses:

* WGAN-GP (eqs. 3, 4): the discriminator minimises E_A[D(G(x))] - E_B[D(x)] + lambda_gp * GP, with
  GP at random points between real normal images and translated images (Gulrajani et al. 2017);
  the generator minimises -E_A[D(G(x))] - E_B[D(G(x))]. The terms are ``critic_loss``,
  ``generator_adversarial_loss``, ``interpolate`` and ``gradient_penalty`` of the constrained AAE
  (autouad/methods/caae/losses.py), which work on any shape: a PatchGAN's scores are averaged over
  patches and images, and the penalty takes the gradient of the sum of an image's patch scores
  with respect to the image (as the authors' code does).
* identity (eq. 5): ||B_int(x) - x||_1 on normal images;
* reconstruction (eq. 6): ||x - A'||_1 on mixed images;
* focus (eq. 7, from Nizan & Tal 2020): lambda_fs (sum_i M_i / n)^2 + lambda_fz (1/n) sum_i
  1 / (|M_i - 0.5| + eps) over the n pixels of one mask, averaged over the batch's masks.

Choices where the paper is silent, each documented:

* The L1 terms are means over pixels (and channels), not sums: the paper writes ||.||_1, but its
  lambdas (lambda_rec = lambda_id = 1 against an unnormalised adversarial term) were tuned with the
  authors' code, which takes ``torch.mean(torch.abs(...))``.
* eps of the focus loss is 0.01, the authors' code's value. Their code also subtracts the constant
  1 / (0.5 + eps) from the second term (no effect on any gradient); we write eq. 7 as printed.
* The focus loss's first term is taken per mask (n = one image's pixels), then averaged over the
  batch, as eq. 7 defines it for a mask M; the authors' code squares the batch-wide mean instead.
"""
from __future__ import annotations

import torch

FOCUS_EPSILON = 0.01


def translated_image(images: torch.Tensor, intermediate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 1: G(x) = B' = B_int * M + x * (1 - M); the mask (B, 1, H, W) applies to every channel."""
    return intermediate * mask + images * (1.0 - mask)


def reconstructed_image(images: torch.Tensor, intermediate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 2: A' = x * M + B_int * (1 - M), the one-directional stand-in for a cycle back to x."""
    return images * mask + intermediate * (1.0 - mask)


def identity_loss(normal_images: torch.Tensor, intermediate: torch.Tensor) -> torch.Tensor:
    """Eq. 5: mean |B_int(x) - x| over the normal images' pixels."""
    return (intermediate - normal_images).abs().mean()


def reconstruction_loss(mixed_images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Eq. 6: mean |x - A'| over the mixed images' pixels."""
    return (mixed_images - reconstructions).abs().mean()


def focus_loss(mask: torch.Tensor, lambda_size: float = 1.0, lambda_zero_one: float = 1.0,
               epsilon: float = FOCUS_EPSILON) -> torch.Tensor:
    """Eq. 7 per mask, averaged over the batch: lambda_fs * mean(M)^2 keeps the mask small and
    lambda_fz * mean(1 / (|M - 0.5| + eps)) pushes its values to 0 or 1."""
    flat = mask.flatten(1)
    size_term = flat.mean(1) ** 2
    zero_one_term = (1.0 / ((flat - 0.5).abs() + epsilon)).mean(1)
    return (lambda_size * size_term + lambda_zero_one * zero_one_term).mean()
