"""Checks of a raw dataset before anything is written from it.

Every problem becomes one line ``<file>: <problem>``; the caller collects all of them into one
report, so that a user fixes everything in one go instead of one error per run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autouad.dataset.raw_dataset import (CASE_KEYS_TEST, CASE_KEYS_TRAINING, MODALITIES,
                                         NORMAL_REFERENCE_PROTOCOLS, OPTIONAL_KEYS, REQUIRED_KEYS, ROLES,
                                         SPLIT_FOLDERS, CaseFiles, RawDataset)
from autouad.preprocessing.orientation import Orientation, orientation_of
from autouad.utils.images import SUPPORTED_ENDINGS, Geometry, ImageReadError, image_array, read_image, verify_file


class DatasetValidationError(Exception):
    """Raised with every problem found; str() is the whole report."""

    def __init__(self, dataset: str, problems: list[str]):
        self.dataset = dataset
        self.problems = problems
        lines = [f"{dataset}: {len(problems)} problem(s) found; nothing was written:"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


def check_dataset_json(meta: dict, folder: Path) -> list[str]:
    where = folder / "dataset.json"
    problems = []
    for key in REQUIRED_KEYS:
        if key not in meta:
            problems.append(f"{where}: required key '{key}' is missing")
    for key in meta:
        if key not in REQUIRED_KEYS + OPTIONAL_KEYS:
            problems.append(f"{where}: unknown key '{key}' (known: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})")
    if meta.get("modality") not in MODALITIES and "modality" in meta:
        problems.append(f"{where}: modality {meta['modality']!r} is not one of {', '.join(MODALITIES)}")
    channels = meta.get("channel_names")
    if channels is not None:
        if not isinstance(channels, dict) or not channels:
            problems.append(f"{where}: channel_names must be a non-empty mapping like {{\"0\": \"FLAIR\"}}")
        elif sorted(channels, key=lambda k: int(k) if str(k).isdigit() else -1) != [str(i) for i in range(len(channels))]:
            problems.append(f"{where}: channel_names keys must be \"0\"..\"{len(channels) - 1}\", got {list(channels)}")
    if "file_ending" in meta and meta["file_ending"] not in SUPPORTED_ENDINGS:
        problems.append(f"{where}: file_ending {meta['file_ending']!r} is not one of {', '.join(SUPPORTED_ENDINGS)}")
    protocol = meta.get("normal_reference", "cases")
    if protocol not in NORMAL_REFERENCE_PROTOCOLS:
        problems.append(f"{where}: normal_reference {protocol!r} is not one of {', '.join(NORMAL_REFERENCE_PROTOCOLS)}")
    training = meta.get("training")
    if training is not None and (not isinstance(training, dict) or not training):
        problems.append(f"{where}: 'training' must map at least one case id to {{\"role\": ...}}")
        training = {}
    for split, entries, allowed in (("training", training or {}, CASE_KEYS_TRAINING),
                                    ("test", meta.get("test") or {}, CASE_KEYS_TEST)):
        for case_id, info in entries.items():
            if not isinstance(info, dict):
                problems.append(f"{where}: {split} case {case_id}: entry must be an object")
                continue
            for key in info:
                if key not in allowed:
                    problems.append(f"{where}: {split} case {case_id}: unknown key '{key}'")
            if split == "training" and info.get("role") not in ROLES:
                problems.append(f"{where}: training case {case_id}: role {info.get('role')!r} is not one of "
                                f"{', '.join(ROLES)}")
            if "label" in info and info["label"] not in (0, 1):
                problems.append(f"{where}: {split} case {case_id}: label must be 0 (normal) or 1 (abnormal)")
    overlap = set(training or {}) & set(meta.get("test") or {})
    if overlap:
        problems.append(f"{where}: cases both in training and test: {sorted(overlap)[:5]}")
    return problems


def check_unlisted_files(ds: RawDataset) -> list[str]:
    """Image files that dataset.json does not name are usually a typo in a case id."""
    listed = {p.name for c in ds.cases for p in c.all_files}
    problems = []
    for split, folders in SPLIT_FOLDERS.items():
        for sub in folders:
            d = ds.folder / sub
            if d.is_dir():
                for p in sorted(d.iterdir()):
                    if p.is_file() and not p.name.startswith(".") and p.name not in listed:
                        problems.append(f"{p}: not named by dataset.json (case id or channel suffix wrong?)")
    return problems


@dataclass
class LoadedCase:
    """One case in canonical orientation: data (C, Z, Y, X) float32; mask / roi (Z, Y, X) bool."""
    case: CaseFiles
    data: np.ndarray
    mask: np.ndarray | None
    roi: np.ndarray | None
    geometry: Geometry  # of the first channel's file
    orientation: Orientation
    spacing: tuple[float, float, float]  # canonical (slice, row, column)


def _checked_array(array: np.ndarray, where: str, problems: list[str]) -> bool:
    """Whether an image's voxels are usable: not empty, all finite (problems appended, naming it)."""
    if array.size == 0 or min(array.shape) == 0:
        problems.append(f"{where}: image is empty (shape {array.shape})")
        return False
    if not np.isfinite(array).all():
        n_nan, n_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        problems.append(f"{where}: contains {n_nan} NaN and {n_inf} Inf values")
        return False
    return True


def _read_checked(path: Path, problems: list[str]):
    """(array, geometry) of a readable, complete, non-empty, finite file; else None with the
    problem appended."""
    damaged = verify_file(path)
    if damaged:
        problems += damaged
        return None
    try:
        array, geometry = read_image(path)
    except ImageReadError as e:
        problems.append(str(e))
        return None
    return (array, geometry) if _checked_array(array, str(path), problems) else None


def load_case(case: CaseFiles) -> LoadedCase | list[str]:
    """Read and check every file of a case; returns the loaded case, or its list of problems."""
    problems: list[str] = []
    channels = []
    for path in case.images:
        if not path.is_file():
            problems.append(f"{path}: missing channel file")
            continue
        read = _read_checked(path, problems)
        if read is not None:
            channels.append((str(path), *read))
    extras = {}
    for kind, path in (("mask", case.mask), ("roi", case.roi)):
        read = None if path is None else _read_checked(path, problems)
        if read is not None:
            extras[kind] = (str(path), *read)
    return assemble_case(case, channels, extras, problems)


def case_from_images(case: CaseFiles, images: list, roi=None) -> LoadedCase | list[str]:
    """A case from SimpleITK images in memory (one per channel; ``roi`` optional), checked like
    files are; ``case`` names it (its file paths are not read). Problems name the case's channel."""
    problems: list[str] = []
    channels = []
    for index, image in enumerate(images):
        where = f"{case.case_id} channel {index}"
        try:
            array, geometry = image_array(image, where)
        except ImageReadError as e:
            problems.append(str(e))
            continue
        if _checked_array(array, where, problems):
            channels.append((where, array, geometry))
    extras = {}
    if roi is not None:
        where = f"{case.case_id} ROI"
        try:
            array, geometry = image_array(roi, where)
            if _checked_array(array, where, problems):
                extras["roi"] = (where, array, geometry)
        except ImageReadError as e:
            problems.append(str(e))
    return assemble_case(case, channels, extras, problems)


def assemble_case(case: CaseFiles, channels: list[tuple[str, np.ndarray, Geometry]],
                  extras: dict[str, tuple[str, np.ndarray, Geometry]], problems: list[str]) -> LoadedCase | list[str]:
    """The checks across a case's images (constant channels, binary masks, one geometry) and its
    canonical orientation; ``channels`` and ``extras`` hold (what to call it, array, geometry)."""
    geometries = []
    for where, array, geometry in channels:
        if len(geometry.size) not in (2, 3):   # before any check of the voxels, which mean nothing then
            problems.append(f"{where}: {len(geometry.size)}D images are not supported (2D images and 3D volumes)")
            continue
        if float(array.max()) == float(array.min()):
            problems.append(f"{where}: image is constant (every voxel {float(array.min()):g})")
        geometries.append((where, geometry))
    masks = {}
    for kind, (where, array, geometry) in extras.items():
        values = np.unique(array)
        if not np.all(np.isin(values, (0, 1))):
            problems.append(f"{where}: a {kind} must hold only 0 and 1, found values {values[:6].tolist()}")
        if kind == "roi" and not (array > 0).any():
            problems.append(f"{where}: region-of-interest mask is empty")
        masks[kind] = array > 0
        geometries.append((where, geometry))
    if geometries:
        ref_where, ref = geometries[0]
        for where, geometry in geometries[1:]:
            diff = ref.mismatch(geometry)
            if diff:
                problems.append(f"{where}: geometry differs from {Path(ref_where).name}: {diff}")
    if not channels and not problems:
        problems.append(f"{case.case_id}: no image")
    if problems:
        return problems
    arrays = [array for _, array, _ in channels]
    if len(geometries[0][1].size) not in (2, 3):
        return [f"{geometries[0][0]}: {len(geometries[0][1].size)}D images are not supported"]
    geometry = geometries[0][1]
    orientation = orientation_of(geometry)
    data = orientation.to_canonical(np.stack(arrays))
    mask = orientation.to_canonical(masks["mask"]) if "mask" in masks else None
    roi = orientation.to_canonical(masks["roi"]) if "roi" in masks else None
    return LoadedCase(case, np.ascontiguousarray(data, dtype=np.float32),
                      None if mask is None else np.ascontiguousarray(mask),
                      None if roi is None else np.ascontiguousarray(roi),
                      geometry, orientation, orientation.canonical_spacing(geometry))
