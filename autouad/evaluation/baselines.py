"""Non-learned baselines that every unsupervised method must beat, in plain numpy.

* Pixel k-nearest neighbours for image-level detection: each image, shrunk to a small grey square
  (32x32) by averaging pixel areas and standardised to zero mean and unit variance (so that the
  exposure of an X-ray does not count), is scored by its mean Euclidean distance to its k nearest
  normal training images. It needs no training and no labels beyond "these images are normal".
"""
from __future__ import annotations

import numpy as np


def shrink(image: np.ndarray, size: int = 32) -> np.ndarray:
    """A 2D grey image as a size x size float32 array of area averages, standardised per image."""
    image = np.asarray(image, np.float64)
    h, w = image.shape
    # area averaging: every output pixel is the mean of the input pixels it covers (by whole rows /
    # columns, each input index weighted by its overlap)
    rows = np.minimum((np.arange(h) * size) // h, size - 1)
    cols = np.minimum((np.arange(w) * size) // w, size - 1)
    sums = np.zeros((size, size))
    np.add.at(sums, (rows[:, None], cols[None, :]), image)
    counts = np.zeros((size, size))
    np.add.at(counts, (rows[:, None], cols[None, :]), 1.0)
    out = sums / np.maximum(counts, 1)
    std = out.std()
    return ((out - out.mean()) / std if std > 0 else out - out.mean()).astype(np.float32)


def knn_scores(normal: np.ndarray, queries: np.ndarray, k: int = 1, chunk: int = 1024) -> np.ndarray:
    """(N, D) normal vectors, (M, D) queries -> (M,) mean distance to the k nearest normal vectors;
    squared distances by one matrix product per chunk (|a|^2 + |b|^2 - 2 a.b)."""
    normal = np.asarray(normal, np.float64).reshape(len(normal), -1)
    queries = np.asarray(queries, np.float64).reshape(len(queries), -1)
    if not 1 <= k <= len(normal):
        raise ValueError(f"k must lie in 1..{len(normal)}, not {k}")
    normal_sq = (normal ** 2).sum(1)
    out = np.empty(len(queries))
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        d2 = np.maximum((q ** 2).sum(1)[:, None] + normal_sq[None, :] - 2.0 * q @ normal.T, 0.0)
        nearest = np.partition(d2, k - 1, axis=1)[:, :k]
        out[start:start + chunk] = np.sqrt(nearest).mean(1)
    return out
