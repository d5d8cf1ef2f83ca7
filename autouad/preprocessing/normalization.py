"""Intensity normalisation schemes named in plans.json (``preprocessing.normalization``).

Every scheme works on one channel of one case, inside its foreground (ROI or non-zero region), and
sets the background to 0 so that it never looks like tissue.
"""
from __future__ import annotations

import numpy as np

from autouad.planning.plans import Normalization


def normalize_channel(volume: np.ndarray, foreground: np.ndarray, scheme: Normalization) -> np.ndarray:
    name = scheme.scheme
    values = volume[foreground]
    if name == "minmax":  # ASC-Net: [0, 1] over the volume (robust range, see plans/ascnet.json)
        lo_p, hi_p = scheme.clip_percentiles or (0.0, 100.0)
        lo, hi = np.percentile(values, [lo_p, hi_p]) if values.size else (0.0, 1.0)
        out = (np.clip(volume, lo, hi) - lo) / max(hi - lo, 1e-8)
    elif name == "zscore":  # the constrained AAE: zero mean, unit variance per subject
        mean, std = (float(values.mean()), float(values.std())) if values.size else (0.0, 1.0)
        out = (volume - mean) / max(std, 1e-8)
    elif name == "ct_window":  # the liver paper: HU window to grey values
        lo, hi = scheme.window
        out = (np.clip(volume, lo, hi) - lo) / (hi - lo)
    elif name == "fixed_range":  # 8-bit images
        lo, hi = scheme.range
        out = (np.clip(volume, lo, hi) - lo) / (hi - lo)
    else:
        raise ValueError(f"unknown normalisation scheme {name!r}")
    out = out.astype(np.float32)
    out[~foreground] = 0.0
    return out


def equalize_slice_histograms(volume: np.ndarray, foreground: np.ndarray, bins: int = 256) -> np.ndarray:
    """Per-slice histogram equalisation inside the foreground, on values in [0, 1] (the liver paper
    equalises every slice independently). Vectorised over the slice: a 256-bin cumulative histogram,
    like OpenCV's equalizeHist on 8-bit images."""
    out = np.zeros_like(volume, dtype=np.float32)
    for z in range(volume.shape[0]):
        fg = foreground[z]
        if not fg.any():
            continue
        levels = np.clip((volume[z] * (bins - 1)).round().astype(np.int64), 0, bins - 1)
        hist = np.bincount(levels[fg], minlength=bins)
        cdf = np.cumsum(hist).astype(np.float64)
        cdf_min = cdf[np.flatnonzero(hist)[0]]
        denom = max(cdf[-1] - cdf_min, 1.0)
        lut = np.clip((cdf - cdf_min) / denom, 0.0, 1.0).astype(np.float32)
        out[z][fg] = lut[levels[fg]]
    return out
