"""Image scores: how an anomaly map becomes one number per image (or case).

* ``mean``: the mean of the map inside the region (HealthyGAN's paper: the mean of |x - G(x)|, more
  robust than the max in its appendix).
* ``max_mean_filtered``: the map smoothed by a mean filter, then its maximum inside the region
  (DRAEM's paper: a 21x21 averaging filter on its 256x256 maps, then the max; the filter scales with
  the slice size here), so one small bright opacity can decide the image.
* ``top_k_mean``: the mean of the highest 1 % of the map's values inside the region, between the two.

Each method declares its paper's choice in its registry entry (``image_score``); find_best_configuration
may choose another out of fold, and says so in the inference instructions. Maps are signed so that
higher is more anomalous.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

IMAGE_SCORES = ("mean", "max_mean_filtered", "top_k_mean")
DRAEM_FILTER_AT_256 = 21
TOP_FRACTION = 0.01


def image_score(maps: np.ndarray, region: np.ndarray, how: str = "mean") -> float:
    """(S, H, W) signed maps and their (S, H, W) bool region -> one score."""
    maps = np.asarray(maps, np.float64)
    region = np.asarray(region, bool)
    if how not in IMAGE_SCORES:
        raise ValueError(f"unknown image score {how!r}; known: {', '.join(IMAGE_SCORES)}")
    if not region.any():
        return 0.0
    if how == "mean":
        area = region.sum(axis=(1, 2))
        per_slice = (maps * region).sum(axis=(1, 2)) / np.maximum(area, 1)
        return float(per_slice[area > 0].mean())
    if how == "max_mean_filtered":
        side = max(3, int(round(DRAEM_FILTER_AT_256 * maps.shape[-1] / 256)) | 1)
        smooth = ndimage.uniform_filter(maps, size=(1, side, side), mode="nearest")
        return float(smooth[region].max())
    values = maps[region]
    k = max(1, int(np.ceil(TOP_FRACTION * values.size)))
    return float(np.partition(values, values.size - k)[-k:].mean())
