"""A preprocessed case: what preprocessing wrote for one case, as training, calibration and scoring
read it.

Preprocessing wrote per case ``<case>.npy`` (slices, channels, height, width), optional
``_mask.npy`` / ``_roi.npy`` and a ``<case>.json`` whose ``slices`` block says which slices belong
to the normal reference. The arrays are memory-mapped: a case costs no RAM until it is read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autouad.utils.files import load_json, load_npy


class MissingCaseError(FileNotFoundError):
    pass


def slice_region(data: np.ndarray, roi: np.ndarray | None, meta: dict, modality: str) -> np.ndarray:
    """Where a preprocessed slice holds the image: the ROI when the dataset has one; else the
    non-padded area, and for MRI / CT only its non-zero pixels (preprocessing zeroes everything
    outside the foreground; an X-ray's foreground is the whole image)."""
    if roi is not None:
        return np.asarray(roi, bool)
    s, _, h, w = data.shape
    region = np.zeros((s, h, w), bool)
    (top, _), (left, _) = meta["pad"]
    rows, cols = meta["resampled_inplane_shape"]
    region[:, max(top, 0):max(top, 0) + min(rows, h), max(left, 0):max(left, 0) + min(cols, w)] = True
    if modality != "X-ray":
        region &= (np.asarray(data) != 0).any(axis=1)
    return region


@dataclass
class PreprocessedCase:
    name: str
    meta: dict
    data: np.ndarray            # (S, C, H, W) float32, memory-mapped
    mask: np.ndarray | None     # (S, H, W) uint8 anomaly mask
    roi: np.ndarray | None      # (S, H, W) uint8 region of interest
    modality: str = "MRI"
    _region: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_slices(self) -> int:
        return int(self.data.shape[0])

    @property
    def is_reference(self) -> np.ndarray:
        """(S,) bool: the slices of the normal reference."""
        return np.asarray(self.meta["slices"]["is_reference"], dtype=bool)

    @property
    def patient(self) -> str:
        return self.meta.get("patient") or self.name

    @property
    def pixel_mm(self) -> float:
        """The in-plane size of one preprocessed pixel (millimetres, or the file's pixel units)."""
        spacing = float(np.mean(self.meta["canonical_spacing"][1:]))
        zoom = np.mean(np.divide(self.meta["cropped_inplane_shape"], self.meta["resampled_inplane_shape"]))
        return spacing * float(zoom)

    @property
    def is_2d(self) -> bool:
        return bool(self.meta["orientation"]["is_2d"])

    @property
    def label(self) -> int | None:
        """Image-level truth: the case's label, else 0 for a normal case, else unknown."""
        if self.meta.get("label") is not None:
            return int(self.meta["label"])
        return 0 if self.meta.get("role") == "normal" else None

    @property
    def anomaly_mask(self) -> np.ndarray | None:
        return None if self.mask is None else np.asarray(self.mask, bool)

    @property
    def region(self) -> np.ndarray:
        """(S, H, W) bool: where maps count (see slice_region); computed once."""
        if self._region is None:
            self._region = slice_region(self.data, self.roi, self.meta, self.modality)
        return self._region


def load_preprocessed_case(folder: Path, case: str, modality: str = "MRI") -> PreprocessedCase:
    folder = Path(folder)
    meta_file = folder / f"{case}.json"
    if not meta_file.is_file():
        raise MissingCaseError(f"{meta_file}: case {case} was not preprocessed; run autouad_plan_and_preprocess again")
    meta = load_json(meta_file)
    mask_file, roi_file = folder / f"{case}_mask.npy", folder / f"{case}_roi.npy"
    return PreprocessedCase(case, meta, load_npy(folder / f"{case}.npy"),
                            load_npy(mask_file) if mask_file.is_file() else None,
                            load_npy(roi_file) if roi_file.is_file() else None, modality)
