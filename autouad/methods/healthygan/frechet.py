"""Model selection for HealthyGAN: a Fréchet distance on features of a network trained here.

The paper picks its final generator by the Fréchet inception distance (FID, Heusel et al. 2017)
computed with pytorch-fid (appendix A). Inception-v3 and its ImageNet weights are not available to
autouad (no downloads), and ImageNet features were never meant for X-rays or MRI slices anyway. So
the features come from a small CNN that each fold trains, briefly, at the start of its training:
a classifier that tells the fold's normal training slices (set B) from its unlabeled ones (set A).
Whatever it learns to look at is what separates the mixed set from healthy images, which is what
the generator must remove; its penultimate layer (global average pooled maps) gives the features.

The Fréchet distance between Gaussians fitted to two feature sets is

    FD = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)).

Tr((S_1 S_2)^(1/2)) is computed as the sum of the square roots of the eigenvalues of the symmetric
positive semi-definite matrix S_1^(1/2) S_2 S_1^(1/2), which has the eigenvalues of S_1 S_2: this
stays real and exact where a general matrix square root of S_1 S_2 (pytorch-fid's scipy.sqrtm)
returns small imaginary parts for the rank-deficient covariances of small samples.

Feature network (our design; the paper has none): 3x3 stride-2 convolutions with 16, 32, 64 and 64
maps and LeakyReLU(0.2), global average pooling (the 64 features), and a linear layer to one logit.
No normalisation layers, so training and evaluation mode compute the same function and DDP has no
buffers to keep in sync. A 3x3 stride-2 convolution with padding 1 maps n pixels to ceil(n / 2), so
any slice size works.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

FEATURE_MAPS = (16, 32, 64, 64)


class FeatureNetwork(nn.Module):
    """(B, C, H, W) images in [-1, 1] -> ``features`` (B, F) and ``forward`` logits (B,), high for
    the unlabeled (mixed) set."""

    def __init__(self, channels: int, maps: tuple[int, ...] = FEATURE_MAPS):
        super().__init__()
        layers, c_in = [], channels
        for c_out in maps:
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, 1)

    @property
    def num_features(self) -> int:
        return self.classifier.in_features

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images)).squeeze(1)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) of (N, F) features (unbiased, N - 1), in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least two feature vectors (N, F), got shape {features.shape}")
    return features.mean(0), np.atleast_2d(np.cov(features, rowvar=False))


def symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The PSD square root of a symmetric PSD matrix (negative round-off eigenvalues taken as 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between N(mu1, S1) and N(mu2, S2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    root1 = symmetric_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt_product = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum()
    distance = float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product)
    return max(distance, 0.0)  # round-off may leave -1e-12 for identical statistics


def frechet_distance_of_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to two (N, F) feature sets."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))
