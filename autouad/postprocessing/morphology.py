"""The papers' post-processing: a morphological opening, then a closing, slice by slice with a
square kernel (ASC-Net: 9x9 for BraTS, 5x5 for MS-SEG and LiTS), restricted to the region of
interest.

It runs on the network's 2D slices, the grid the papers' kernel sizes refer to. Opening removes
specks smaller than the kernel, closing fills gaps narrower than it; whatever the two add outside
the ROI is removed again, so a mask never leaves the brain or the liver.
"""
from __future__ import annotations

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice, get_bbox_from_mask, pad_bbox
from scipy import ndimage

OPERATIONS = ("opening", "closing")


def postprocess_slices(masks: np.ndarray, roi: np.ndarray | None, kernel_size: int,
                       operations: tuple[str, ...] | list[str] = OPERATIONS) -> np.ndarray:
    """(S, H, W) bool masks -> (S, H, W) bool, each slice opened then closed with a square
    ``kernel_size`` kernel (in this order unless ``operations`` says otherwise), then restricted
    to ``roi`` ((S, H, W) bool, or None for no restriction)."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"expected (slices, height, width) masks, got shape {masks.shape}")
    if kernel_size < 1:
        raise ValueError(f"kernel size must be at least 1, not {kernel_size}")
    # A (1, k, k) structure acts on every slice at once and never across slices.
    structure = np.ones((1, kernel_size, kernel_size), dtype=bool)
    out = masks
    for operation in operations:
        if operation == "opening":
            out = ndimage.binary_opening(out, structure)
        elif operation == "closing":
            # binary_closing treats the array border as background during the erosion, which
            # would erase mask pixels touching the border; padding by the kernel avoids that.
            pad = kernel_size
            padded = np.pad(out, ((0, 0), (pad, pad), (pad, pad)))
            out = ndimage.binary_closing(padded, structure)[:, pad:-pad, pad:-pad]
        else:
            raise ValueError(f"unknown post-processing operation {operation!r}; known: {', '.join(OPERATIONS)}")
    if roi is not None:
        out &= np.asarray(roi, dtype=bool)
    return out


def postprocess_cropped(mask: np.ndarray, region: np.ndarray, kernel: int) -> np.ndarray:
    """postprocess_slices on the slices and the box that hold the mask (plus the kernel's reach):
    the same result as on the whole volume, without opening and closing empty voxels."""
    if not mask.any():
        return mask
    box = get_bbox_from_mask(mask)
    box = [box[0]] + pad_bbox(box[1:], 2 * kernel, mask.shape[1:])   # no padding across slices
    where = bounding_box_to_slice(box)
    out = np.zeros_like(mask)
    out[where] = postprocess_slices(mask[where], region[where], kernel)
    return out
