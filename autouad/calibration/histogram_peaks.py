"""Peaks of an intensity histogram, as ASC-Net reads them.

ASC-Net's reconstruction I_ro has a histogram of a few well separated peaks; the authors stopped
training "at three or four peak separation" and thresholded at the rightmost peak (bright
anomalies) or the leftmost one (dark anomalies). A peak counts as separated when the valley to its
higher neighbour drops below half its own height (its prominence is at least half its height), and
when it holds at least ``min_fraction`` of the pixels in its bin, so that noise in empty tails does
not count.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

DEFAULT_BINS = 256


def separated_peaks(counts: np.ndarray, smoothing_bins: float = 1.0, min_fraction: float = 1e-3,
                    min_relative_prominence: float = 0.5) -> np.ndarray:
    """Bin indices of the separated peaks of a histogram, left to right."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return np.zeros(0, dtype=int)
    h = counts / total
    if smoothing_bins > 0:
        h = gaussian_filter1d(h, smoothing_bins, mode="constant")
    # Zero padding lets a peak in the first or last bin count (find_peaks never reports the ends).
    padded = np.concatenate([[0.0], h, [0.0]])
    peaks, props = find_peaks(padded, height=min_fraction, prominence=0.0)
    keep = props["prominences"] >= min_relative_prominence * props["peak_heights"]
    return peaks[keep] - 1


def peak_values(counts: np.ndarray, value_range: tuple[float, float], **kwargs) -> np.ndarray:
    """Centres of the separated peaks' bins, in map units."""
    lo, hi = value_range
    width = (hi - lo) / len(counts)
    return lo + (separated_peaks(counts, **kwargs) + 0.5) * width


def valley_between(counts: np.ndarray, left_bin: int, right_bin: int, smoothing_bins: float = 1.0) -> int:
    """The bin of the lowest (smoothed) count strictly between two peaks: where one cluster ends.
    When the valley is a flat stretch (empty bins), its middle bin."""
    if right_bin - left_bin < 2:
        raise ValueError(f"no bin lies between peaks at bins {left_bin} and {right_bin}")
    h = np.asarray(counts, dtype=np.float64)
    if smoothing_bins > 0:
        h = gaussian_filter1d(h, smoothing_bins, mode="constant")
    between = h[left_bin + 1:right_bin]
    lowest = np.flatnonzero(between <= between.min() + 1e-12)
    return left_bin + 1 + int(lowest[len(lowest) // 2])
