"""Preprocessing: raw case -> axial 2D slices on disk, memory-mappable, with the metadata that maps
every preprocessed pixel back to its voxel in the raw file.

Per case, in this order: read and reorient to canonical axes (exact: permutations and flips only),
crop to the ROI or foreground box, normalise inside the foreground (plans' scheme), resample each
slice in-plane to the target spacing (or resize 2D images), pad or crop to the planned slice size,
equalise slice histograms when planned, and keep the slices that contain foreground.

Written to ``$AUTOUAD_preprocessed/DatasetXXX/<plans>_2d/``:
    <case>.npy       float32 (S, C, H, W) all channels
    <case>_mask.npy  uint8 (S, H, W) anomaly mask (when the case has one)
    <case>_roi.npy   uint8 (S, H, W) region of interest (when the dataset has one)
    <case>.json      geometry and per-slice facts; written last, so its presence means "done"
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from autouad.dataset.raw_dataset import CaseFiles, RawDataset
from autouad.dataset.validation import DatasetValidationError, LoadedCase, load_case
from autouad.fingerprint.extractor import run_parallel, slice_is_reference
from autouad.planning.plans import Plans, Preprocessing
from autouad.planning.plans import _to_dict as plans_to_dict
from autouad.preprocessing.foreground import bounding_box, foreground_mask
from autouad.preprocessing.normalization import equalize_slice_histograms, normalize_channel
from autouad.preprocessing.orientation import Orientation
from autouad.utils.files import load_json, save_json, save_npy


def resize_slices(stack: np.ndarray, out_hw: tuple[int, int], order: int) -> np.ndarray:
    """Resample (S, H, W) to (S, h, w) treating pixels as areas (grid_mode): output pixel centre o
    samples input coordinate (o + 0.5) * H / h - 0.5."""
    s, h, w = stack.shape
    if (h, w) == tuple(out_hw):
        return stack.copy()
    zoom = (out_hw[0] / h, out_hw[1] / w)
    out = np.empty((s,) + tuple(out_hw), dtype=np.float32)
    for z in range(s):
        out[z] = ndimage.zoom(stack[z].astype(np.float32), zoom, order=order, mode="nearest", grid_mode=True)
    return out


def pad_or_crop(stack: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, list[list[int]]]:
    """Centre (S, h, w) in (S, *size); returns the array and per axis [before, after] padding
    (negative where the slice was larger and got cropped)."""
    out = np.zeros(stack.shape[:-2] + tuple(size), dtype=stack.dtype)
    pads, src, dst = [], [], []
    for have, want in zip(stack.shape[-2:], size):
        before = (want - have) // 2
        pads.append([before, want - have - before])
        src.append(slice(max(0, -before), max(0, -before) + min(have, want)))
        dst.append(slice(max(0, before), max(0, before) + min(have, want)))
    out[(Ellipsis, dst[0], dst[1])] = stack[(Ellipsis, src[0], src[1])]
    return out, pads


def undo_pad_or_crop(stack: np.ndarray, pads: list[list[int]], original_hw: tuple[int, int]) -> np.ndarray:
    out = np.zeros(stack.shape[:-2] + tuple(original_hw), dtype=stack.dtype)
    src, dst = [], []
    for have, (before, _), orig in zip(stack.shape[-2:], pads, original_hw):
        src.append(slice(max(0, before), max(0, before) + min(have, orig)))
        dst.append(slice(max(0, -before), max(0, -before) + min(have, orig)))
    out[(Ellipsis, dst[0], dst[1])] = stack[(Ellipsis, src[0], src[1])]
    return out


def preprocessing_hash(preprocessing: Preprocessing, modality: str, protocol: str, case: CaseFiles) -> str:
    """Changes when the plan's preprocessing or any of the case's raw files change."""
    stats = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in case.all_files]
    blob = json.dumps({"p": plans_to_dict(preprocessing), "m": modality, "r": protocol, "f": stats, "role": case.role,
                       "v": 1}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()


class CasePreprocessor:
    """Preprocesses one case by the plans; subclass to change one step (e.g. ``normalize``)."""

    def __init__(self, preprocessing: Preprocessing, modality: str, normal_reference: str):
        self.p = preprocessing
        self.modality = modality
        self.normal_reference = normal_reference

    def crop_box(self, foreground: np.ndarray) -> list[list[int]]:
        if self.p.crop == "none":
            return [[0, s] for s in foreground.shape]
        return bounding_box(foreground)

    def normalize(self, data: np.ndarray, foreground: np.ndarray) -> np.ndarray:
        return np.stack([normalize_channel(ch, foreground, self.p.normalization) for ch in data])

    def output_inplane_shape(self, shape_hw: tuple[int, int], spacing_hw: tuple[float, float]) -> tuple[int, int]:
        if self.p.mode == "resize":
            return tuple(self.p.slice_size)
        target = self.p.target_spacing
        return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape_hw, spacing_hw, target))

    def run(self, case: CaseFiles, loaded: LoadedCase | None = None
            ) -> tuple[dict, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(meta, data (S, C, H, W), mask, roi) of a case; ``loaded`` saves reading it again."""
        if loaded is None:
            loaded = load_case(case)
        if isinstance(loaded, list):
            raise DatasetValidationError(case.case_id, loaded)
        fg, _ = foreground_mask(loaded.data, loaded.roi, self.modality)
        box = self.crop_box(fg)
        sl = tuple(slice(a, b) for a, b in box)
        data, fg_c = loaded.data[(slice(None),) + sl], fg[sl]
        mask_c = None if loaded.mask is None else loaded.mask[sl]
        roi_c = None if loaded.roi is None else loaded.roi[sl]
        data = self.normalize(data, fg_c)
        out_hw = self.output_inplane_shape(data.shape[-2:], loaded.spacing[1:])
        order_img, order_mask = self.p.image_order, self.p.mask_order
        resampled = []
        for ch in data:
            r = resize_slices(ch, out_hw, order_img)
            resampled.append(np.clip(r, ch.min(), ch.max()))
        fg_r = resize_slices(fg_c.astype(np.float32), out_hw, order_mask) > 0.5
        data_r = np.stack(resampled) * fg_r[None]
        size = tuple(self.p.slice_size)
        data_p, pads = pad_or_crop(data_r, size)
        fg_p, _ = pad_or_crop(fg_r, size)
        if self.p.normalization.histogram_equalization:
            data_p = np.stack([equalize_slice_histograms(ch, fg_p) for ch in data_p])
        mask_p = roi_p = None
        if mask_c is not None:
            mask_p = pad_or_crop(resize_slices(mask_c.astype(np.float32), out_hw, order_mask) > 0.5, size)[0]
        if roi_c is not None:
            roi_p = pad_or_crop(resize_slices(roi_c.astype(np.float32), out_hw, order_mask) > 0.5, size)[0]
        # keep the slices that contain foreground; their facts are measured at the file's resolution
        keep = np.flatnonzero(fg_c.any(axis=(1, 2)))
        slice_has_anomaly = mask_c.any(axis=(1, 2)) if mask_c is not None else None
        reference = slice_is_reference(case.role, self.normal_reference, slice_has_anomaly, fg_c.shape[0])
        slices = {
            "canonical_index": (keep + box[0][0]).tolist(),
            "is_reference": reference[keep].tolist() if case.split == "train" else [False] * len(keep),
            "has_anomaly": None if mask_c is None else slice_has_anomaly[keep].tolist(),
            "anomaly_fraction": None if mask_c is None else
            [float((mask_c[z] & fg_c[z]).sum() / max(fg_c[z].sum(), 1)) for z in keep],
            "roi_fraction": None if roi_p is None else roi_p[keep].mean(axis=(1, 2)).round(6).tolist(),
        }
        meta = {"case": case.case_id, "split": case.split, "role": case.role, "patient": case.patient,
                "label": case.label, "channels": self.p.channels, "num_slices": int(len(keep)),
                "file_geometry": loaded.geometry.to_dict(), "file_shape": list(loaded.geometry.array_shape),
                "orientation": loaded.orientation.to_dict(), "canonical_shape": list(fg.shape),
                "canonical_spacing": list(loaded.spacing), "crop_box": box,
                "cropped_inplane_shape": list(data.shape[-2:]), "resampled_inplane_shape": list(out_hw),
                "pad": pads, "slice_size": list(size),
                "has_mask": mask_p is not None, "has_roi": roi_p is not None, "slices": slices}
        return (meta, np.ascontiguousarray(data_p.transpose(1, 0, 2, 3)[keep], dtype=np.float32),
                None if mask_p is None else mask_p[keep].astype(np.uint8),
                None if roi_p is None else roi_p[keep].astype(np.uint8))


# -- mapping between preprocessed slices and the raw file -------------------------------------------
def preprocessed_to_file_index(meta: dict, slice_index: int, row: int, col: int) -> tuple[int, ...]:
    """The raw file's voxel (numpy index) whose centre is nearest to a preprocessed pixel's centre."""
    z = meta["slices"]["canonical_index"][slice_index]
    canonical = [z]
    for v, (before, _), have, orig, start in zip((row, col), meta["pad"], meta["resampled_inplane_shape"],
                                                 meta["cropped_inplane_shape"], (meta["crop_box"][1][0],
                                                                                 meta["crop_box"][2][0])):
        r = v - before  # index in the resampled (unpadded) slice
        if not 0 <= r < have:
            raise IndexError(f"pixel ({row}, {col}) lies in the padding of slice {slice_index}")
        c = (r + 0.5) * orig / have - 0.5
        canonical.append(start + int(min(max(np.floor(c + 0.5), 0), orig - 1)))  # scipy rounds ties up
    orientation = Orientation.from_dict(meta["orientation"])
    return orientation.index_to_file(tuple(canonical), tuple(meta["file_shape"]))


def restore_to_canonical(slices: np.ndarray, meta: dict, order: int = 1, fill: float = 0.0) -> np.ndarray:
    """(S, H, W) values on the preprocessed slices -> the raw case's canonical array (axial slices
    first; slices that were not kept and voxels outside the crop get ``fill``)."""
    unpadded = undo_pad_or_crop(slices.astype(np.float32), meta["pad"], tuple(meta["resampled_inplane_shape"]))
    back = resize_slices(unpadded, tuple(meta["cropped_inplane_shape"]), order)
    canonical = np.full(meta["canonical_shape"], fill, dtype=np.float32)
    (y0, y1), (x0, x1) = meta["crop_box"][1], meta["crop_box"][2]
    canonical[np.asarray(meta["slices"]["canonical_index"], dtype=np.int64), y0:y1, x0:x1] = back
    return canonical


def restore_to_file_array(slices: np.ndarray, meta: dict, order: int = 1, fill: float = 0.0) -> np.ndarray:
    """(S, H, W) values on the preprocessed slices -> an array with the raw file's shape and axis order
    (slices that were not kept and voxels outside the crop get ``fill``)."""
    canonical = restore_to_canonical(slices, meta, order, fill)
    return np.ascontiguousarray(Orientation.from_dict(meta["orientation"]).from_canonical(canonical))


# -- the whole dataset ------------------------------------------------------------------------------
def _preprocess_worker(job) -> tuple[str, str, list[str]]:
    case, preprocessing, modality, protocol, out_dir = job
    out_dir = Path(out_dir)
    digest = preprocessing_hash(preprocessing, modality, protocol, case)
    meta_file = out_dir / f"{case.case_id}.json"
    if meta_file.is_file():
        try:
            if load_json(meta_file).get("preprocessing_hash") == digest and (out_dir / f"{case.case_id}.npy").is_file():
                return case.case_id, "skipped", []
        except ValueError:
            pass
    try:
        meta, data, mask, roi = CasePreprocessor(preprocessing, modality, protocol).run(case)
    except DatasetValidationError as e:
        return case.case_id, "failed", e.problems
    meta["preprocessing_hash"] = digest
    if meta_file.exists():
        meta_file.unlink()  # an old marker must not vouch for half-written new arrays
    save_npy(data, out_dir / f"{case.case_id}.npy")
    for kind, array in (("mask", mask), ("roi", roi)):
        path = out_dir / f"{case.case_id}_{kind}.npy"
        if array is not None:
            save_npy(array, path)
        elif path.exists():
            path.unlink()
    save_json(meta, meta_file)
    return case.case_id, "done", []


def preprocess_dataset(ds: RawDataset, plans: Plans, output_folder: str | Path, num_processes: int = 2) -> dict:
    out_dir = Path(output_folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(case, plans.preprocessing, ds.meta["modality"], ds.normal_reference, str(out_dir)) for case in ds.cases]
    results = run_parallel(_preprocess_worker, jobs, num_processes, "preprocessing")
    problems = [p for _, _, ps in results for p in ps]
    if problems:
        raise DatasetValidationError(ds.name, problems)
    index = {"plans_name": plans.plans_name, "cases": {}}
    for case in ds.cases:
        meta = load_json(out_dir / f"{case.case_id}.json")
        s = meta["slices"]
        index["cases"][case.case_id] = {
            "split": case.split, "role": case.role, "patient": case.patient, "label": case.label,
            "num_slices": meta["num_slices"], "num_reference_slices": int(sum(s["is_reference"])),
            "num_anomaly_slices": None if s["has_anomaly"] is None else int(sum(s["has_anomaly"]))}
    save_json(index, out_dir / "dataset_index.json")
    return {"done": sum(r[1] == "done" for r in results), "skipped": sum(r[1] == "skipped" for r in results),
            "num_slices": sum(c["num_slices"] for c in index["cases"].values())}
