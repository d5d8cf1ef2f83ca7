"""Image scores: how an anomaly map becomes one number per image (or case).

* ``mean``: the mean of the map inside the region (HealthyGAN's paper: the mean of |x - G(x)|, more
  robust than the max in its appendix).
* ``max_mean_filtered``: the map smoothed by a mean filter, then its maximum inside the region
  (DRAEM's paper: a 21x21 averaging filter on its 256x256 maps, then the max; the filter scales with
  the slice size here), so one small bright opacity can decide the image.
* ``top_k_mean``: the mean of the highest 1 % of the map's values inside the region, between the two.

Each method declares its paper's choice in its registry entry (``image_score``). Where a fold's
validation images carry labels (normal and anomalous images of the training data), calibration
measures every image score on them and ``choose_image_score`` keeps the paper's unless another ranks
them clearly better; prediction makes the same choice once for all its folds, from the mean of their
validation AUROCs, and writes it with its reason into predictions.json (autouad.inference.predictor).
find_best_configuration compares the image scores as candidates of their own. Maps are signed so
that higher is more anomalous.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

IMAGE_SCORES = ("mean", "max_mean_filtered", "top_k_mean")
DRAEM_FILTER_AT_256 = 21
TOP_FRACTION = 0.01
# Another image score replaces the paper's only when the labelled validation images prefer it by more
# than this AUROC, about one standard error of an AUROC on a few hundred images, so that noise does
# not overturn the paper's choice.
SWITCH_MARGIN = 0.02
# Fewer labelled validation images than this per class (normal, anomalous) measure nothing to choose by.
MIN_IMAGES_PER_CLASS = 10


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


def choose_image_score(validation_auroc: dict[str, float], declared: str) -> tuple[str, str]:
    """(image score, why) from each image score's AUROC on labelled validation images: the method's
    declared one (its registry entry, its paper's where the paper scores images), unless another is
    higher by more than SWITCH_MARGIN. Nothing measured (no labelled images) keeps the declared one."""
    measured = {how: float(a) for how, a in validation_auroc.items() if a is not None and np.isfinite(a)}
    if not measured:
        return declared, (f"{declared}, the method's own (too few labelled validation images of each kind, "
                          f"normal and anomalous, to compare image scores on)")
    best = max(measured, key=measured.get)
    listed = ", ".join(f"{how} {a:.3f}" for how, a in sorted(measured.items(), key=lambda kv: -kv[1]))
    if best != declared and measured[best] > measured.get(declared, float("-inf")) + SWITCH_MARGIN:
        return best, (f"{best}, chosen on the labelled validation images over the method's own {declared}, "
                      f"by more than {SWITCH_MARGIN} AUROC ({listed})")
    return declared, (f"{declared}, the method's own: no other image score is better by more than {SWITCH_MARGIN} "
                      f"AUROC on the labelled validation images ({listed})")
