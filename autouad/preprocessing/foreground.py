"""What counts as foreground: the region that intensity statistics, cropping and slice selection use."""
from __future__ import annotations

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import get_bbox_from_mask

# Air in CT is about -1000 HU, soft tissue about 0..100 HU; -500 separates the body from the air.
CT_BODY_THRESHOLD_HU = -500.0


def foreground_mask(data: np.ndarray, roi: np.ndarray | None, modality: str) -> tuple[np.ndarray, str]:
    """data (C, Z, Y, X) -> (bool mask (Z, Y, X), how it was defined).

    ROI when the dataset has one (brain, liver: the papers work inside it); else MRI: non-zero in
    any channel (skull-stripped scans are zero outside the brain); CT: the body (HU > -500);
    X-ray: the whole image (there is no background to speak of)."""
    if roi is not None:
        return roi.astype(bool), "roi"
    if modality == "CT":
        return data[0] > CT_BODY_THRESHOLD_HU, "body (HU > -500)"
    if modality == "X-ray":
        return np.ones(data.shape[1:], dtype=bool), "whole image"
    return (data != 0).any(axis=0), "non-zero"


def bounding_box(mask: np.ndarray) -> list[list[int]]:
    """[[start, stop), ...] per axis of the True voxels of a (slices, rows, columns) mask; the whole
    array when the mask is empty (acvl-utils' half-open boxes, as nnU-Net's)."""
    return [[int(a), int(b)] for a, b in get_bbox_from_mask(np.asarray(mask, bool))]
