"""The dataset fingerprint: what the planner needs to know about a raw dataset.

One pass over every case reads and checks its files (autouad.dataset.validation) and measures it;
problems from all cases are gathered into one report before anything is written.
"""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
from acvl_utils.morphology.morphology_helper import label_with_component_sizes
from scipy import ndimage

from autouad.dataset.raw_dataset import RawDataset, load_raw_dataset
from autouad.dataset.validation import (DatasetValidationError, LoadedCase, check_dataset_json,
                                        check_unlisted_files, load_case)
from autouad.postprocessing.morphology import postprocess_cropped
from autouad.preprocessing.foreground import bounding_box, foreground_mask
from autouad.utils.files import load_json, save_json
from autouad.utils.progress import progress

SAMPLES_PER_CASE = 10_000  # foreground voxels per case and channel pooled into the dataset statistics
SHELL_WIDTH = 3  # voxels: the "surrounding tissue" an anomaly is compared with for its polarity


def intensity_statistics(values: np.ndarray) -> dict:
    values = values.astype(np.float64, copy=False)
    if values.size == 0:
        return {"mean": None, "std": None, "median": None, "percentile_00_5": None, "percentile_99_5": None,
                "min": None, "max": None}
    p005, median, p995 = np.percentile(values, [0.5, 50.0, 99.5])
    return {"mean": float(values.mean()), "std": float(values.std()), "median": float(median),
            "percentile_00_5": float(p005), "percentile_99_5": float(p995),
            "min": float(values.min()), "max": float(values.max())}


def slice_is_reference(role: str | None, protocol: str, slice_has_anomaly: np.ndarray | None,
                       n_slices: int) -> np.ndarray:
    """Which slices belong to the normal reference distribution (False for test cases)."""
    if role == "normal":
        return np.ones(n_slices, dtype=bool)
    if role == "unlabeled" and protocol == "slices_without_anomaly" and slice_has_anomaly is not None:
        return ~slice_has_anomaly
    return np.zeros(n_slices, dtype=bool)


def anomaly_polarity(data: np.ndarray, mask: np.ndarray, foreground: np.ndarray) -> list[dict] | None:
    """Per channel: mean inside the anomaly vs. a shell of surrounding foreground tissue, in units of
    the foreground's standard deviation. Positive contrast = brighter than its surroundings."""
    if not mask.any():
        return None
    # the shell is grown within each slice: the methods see slices, and slices can be thick
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    shell = ndimage.binary_dilation(mask, structure, iterations=SHELL_WIDTH) & ~mask & foreground
    if not shell.any():
        return None
    result = []
    for channel in data:
        inside, around = channel[mask], channel[shell]
        scale = float(channel[foreground].std()) or 1.0
        contrast = (float(inside.mean()) - float(around.mean())) / scale
        result.append({"inside_mean": float(inside.mean()), "surround_mean": float(around.mean()),
                       "contrast": contrast, "polarity": "bright" if contrast > 0 else "dark"})
    return result


# physical sizes (mm) of the square opening/closing kernels whose effect on the masks is measured
POSTPROCESSING_SIZES_MM = (3, 5, 7, 9, 11)


def postprocessing_loss(mask: np.ndarray, foreground: np.ndarray, spacing) -> dict[str, dict]:
    """What opening then closing with a square kernel of each physical size does to a case's own
    anomaly mask, slice by slice at its native resolution: {"<mm>": {"lost", "voxels"}}, the mask
    voxels it removes and the mask's voxels. Small lesions vanish under a kernel wider than them
    (an MS lesion of 3-5 mm under the 9x9 kernel of BraTS tumours), so the planner keeps a kernel
    only as large as the masks survive."""
    pixel = float(np.mean(spacing[1:]))
    voxels = int(mask.sum())
    out = {}
    for size in POSTPROCESSING_SIZES_MM:
        kernel = max(1, 2 * int(round((size / pixel - 1) / 2)) + 1)
        kept = postprocess_cropped(mask, foreground, kernel) & mask if kernel > 1 else mask
        out[str(size)] = {"kernel_px": kernel, "lost": int(voxels - kept.sum()), "voxels": voxels}
    return out


def lesion_sizes(mask: np.ndarray, spacing) -> dict:
    """The connected components of a case's anomaly mask (acvl-utils' labelling, full connectivity):
    how many, and each one's diameter as the sphere of its volume would have it, in millimetres."""
    _, sizes = label_with_component_sizes(np.asarray(mask, bool))
    voxel_mm3 = float(np.prod(spacing))
    diameters = [float((6.0 * v * voxel_mm3 / np.pi) ** (1 / 3)) for v in sizes.values()]
    return {"count": len(diameters), "diameters_mm": sorted(round(d, 2) for d in diameters)}


def case_fingerprint(loaded: LoadedCase, modality: str, channel_names: list[str], protocol: str,
                     sample_seed: int) -> tuple[dict, dict]:
    """Returns (the case's fingerprint, foreground intensity samples per channel for pooling)."""
    case, data = loaded.case, loaded.data
    fg, fg_definition = foreground_mask(data, loaded.roi, modality)
    n_slices = data.shape[1]
    slice_has_fg = fg.any(axis=(1, 2))
    fp = {"case": case.case_id, "split": case.split, "role": case.role, "patient": case.patient,
          "label": case.label, "dimension": 2 if loaded.orientation.is_2d else 3,
          "file_shape": list(loaded.geometry.array_shape), "file_spacing": list(loaded.geometry.spacing),
          "shape": list(data.shape[1:]), "spacing": list(loaded.spacing), "n_slices": n_slices,
          "foreground_definition": fg_definition, "foreground_voxels": int(fg.sum()),
          "foreground_slices": int(slice_has_fg.sum()),
          "foreground_bbox_shape": [int(v) for v in _bbox_extent(fg)]}
    rng = np.random.default_rng(sample_seed)
    samples, stats = {}, {}
    for name, channel in zip(channel_names, data):
        values = channel[fg]
        stats[name] = intensity_statistics(values)
        pick = rng.choice(values.size, size=min(SAMPLES_PER_CASE, values.size), replace=False) if values.size else []
        samples[name] = values[pick]
    fp["intensity"] = stats
    if loaded.roi is not None:
        fp["roi_fraction"] = float(loaded.roi.mean())
        fp["roi_slices"] = int(loaded.roi.any(axis=(1, 2)).sum())
    slice_has_anomaly = None
    if loaded.mask is not None:
        mask = loaded.mask
        slice_has_anomaly = mask.any(axis=(1, 2))
        anomaly_in_fg = mask & fg
        fp["anomaly_voxels"] = int(mask.sum())
        fp["anomaly_fraction"] = float(anomaly_in_fg.sum() / max(fg.sum(), 1))
        fp["anomaly_slices"] = int((slice_has_anomaly & slice_has_fg).sum())
        polarity = anomaly_polarity(data, mask, fg)
        fp["polarity"] = None if polarity is None else dict(zip(channel_names, polarity))
        if mask.any():
            fp["postprocessing_loss"] = postprocessing_loss(mask, fg, loaded.spacing)
            fp["lesions"] = lesion_sizes(mask, loaded.spacing)
    reference = slice_is_reference(case.role, protocol, slice_has_anomaly, n_slices) & slice_has_fg
    fp["reference_slices"] = int(reference.sum())
    return fp, samples


def _bbox_extent(mask: np.ndarray) -> list[int]:
    return [b - a for a, b in bounding_box(mask)]


def _inspect_worker(job: tuple) -> tuple[str, list[str], dict | None, dict | None]:
    case, modality, channel_names, protocol, seed = job
    loaded = load_case(case)
    if isinstance(loaded, list):
        return case.case_id, loaded, None, None
    problems = []
    if case.split == "train" and protocol == "slices_without_anomaly" and case.role == "unlabeled" and loaded.mask is None:
        problems.append(f"{case.images[0]}: normal_reference 'slices_without_anomaly' needs a mask for every "
                        f"unlabeled training case, none found")
    fp, samples = case_fingerprint(loaded, modality, channel_names, protocol, seed)
    if case.role == "normal" and fp.get("anomaly_voxels"):
        problems.append(f"{case.mask}: case has role 'normal' but its mask marks {fp['anomaly_voxels']} anomaly voxels")
    return case.case_id, problems, fp, samples


def run_parallel(function, jobs: list, num_processes: int, desc: str):
    """Map ``function`` over ``jobs`` in spawned worker processes with a progress bar, in order."""
    if num_processes <= 1 or len(jobs) <= 1:
        return [function(j) for j in progress(jobs, desc=desc, unit="case")]
    ctx = multiprocessing.get_context("spawn")
    chunksize = max(1, min(32, len(jobs) // (num_processes * 8)))
    with ctx.Pool(num_processes) as pool:
        return list(progress(pool.imap(function, jobs, chunksize=chunksize), total=len(jobs), desc=desc, unit="case"))


class DatasetFingerprintExtractor:
    """Validates a raw dataset and measures it. Subclass and override ``summarize`` (or
    ``case_fingerprint`` via the module function) to record more."""

    def __init__(self, raw_dataset_folder: str | Path, num_processes: int = 2):
        self.folder = Path(raw_dataset_folder)
        self.num_processes = num_processes

    def load(self) -> RawDataset:
        if not (self.folder / "dataset.json").is_file():
            raise DatasetValidationError(self.folder.name, [f"{self.folder / 'dataset.json'}: missing"])
        try:
            meta = load_json(self.folder / "dataset.json")
        except ValueError as e:
            raise DatasetValidationError(self.folder.name, [f"{self.folder / 'dataset.json'}: not valid JSON ({e})"])
        problems = check_dataset_json(meta, self.folder)
        if problems:
            raise DatasetValidationError(self.folder.name, problems)
        ds = load_raw_dataset(self.folder)
        problems = check_unlisted_files(ds)
        if problems:
            raise DatasetValidationError(self.folder.name, problems)
        return ds

    def run(self) -> dict:
        """Validate everything and return the fingerprint; raises DatasetValidationError with the
        full report when anything is wrong."""
        ds = self.load()
        meta = ds.meta
        channel_names = [meta["channel_names"][k] for k in sorted(meta["channel_names"], key=int)]
        jobs = [(case, meta["modality"], channel_names, ds.normal_reference, i) for i, case in enumerate(ds.cases)]
        results = run_parallel(_inspect_worker, jobs, self.num_processes, "checking and fingerprinting")
        problems = [p for _, case_problems, _, _ in results for p in case_problems]
        dims = {fp["dimension"] for _, _, fp, _ in results if fp}
        if len(dims) > 1:
            problems.append(f"{ds.folder}: mixes 2D and 3D images")
        missing_roi = [c.case_id for c in ds.training_cases() if c.roi is None]
        if missing_roi and len(missing_roi) < len(ds.training_cases()):
            problems.append(f"{ds.folder / 'roisTr'}: ROI masks missing for {len(missing_roi)} case(s), "
                            f"e.g. {missing_roi[0]}; give every case one or none")
        if problems:
            raise DatasetValidationError(ds.name, problems)
        cases = [fp for _, _, fp, _ in results]
        samples = {name: np.concatenate([s[name] for _, _, fp, s in results if fp["split"] == "train"])
                   for name in channel_names}
        return {"dataset": ds.name, "modality": meta["modality"], "channel_names": channel_names,
                "file_ending": meta["file_ending"], "roi_name": meta.get("roi_name"),
                "normal_reference": ds.normal_reference,
                "summary": self.summarize(cases, samples, channel_names), "cases": cases}

    def summarize(self, cases: list[dict], samples: dict, channel_names: list[str]) -> dict:
        train = [c for c in cases if c["split"] == "train"]
        spacings = np.array([c["spacing"] for c in train])
        shapes = np.array([c["shape"] for c in train])
        masked = [c for c in train if "anomaly_voxels" in c]
        summary = {
            "num_training_cases": len(train),
            "num_test_cases": len(cases) - len(train),
            "num_patients": len({c["patient"] for c in train}),
            "num_normal_cases": sum(c["role"] == "normal" for c in train),
            "num_unlabeled_cases": sum(c["role"] == "unlabeled" for c in train),
            "dimension": train[0]["dimension"],
            "median_spacing": np.median(spacings, axis=0).tolist(),
            "min_spacing": spacings.min(axis=0).tolist(),
            "max_spacing": spacings.max(axis=0).tolist(),
            "median_shape": np.median(shapes, axis=0).tolist(),
            "min_shape": shapes.min(axis=0).tolist(),
            "max_shape": shapes.max(axis=0).tolist(),
            "max_foreground_bbox_shape": np.max([c["foreground_bbox_shape"] for c in train], axis=0).tolist(),
            "num_slices": int(sum(c["n_slices"] for c in train)),
            "num_foreground_slices": int(sum(c["foreground_slices"] for c in train)),
            "num_normal_slices": int(sum(c["foreground_slices"] for c in train if c["role"] == "normal")),
            "num_unlabeled_slices": int(sum(c["foreground_slices"] for c in train if c["role"] == "unlabeled")),
            "num_reference_slices": int(sum(c["reference_slices"] for c in train)),
            "foreground_intensity": {name: intensity_statistics(samples[name]) for name in channel_names},
            "num_cases_with_masks": len(masked),
            "num_cases_with_image_labels": sum(c["label"] is not None for c in cases),
            "num_cases_with_roi": sum("roi_fraction" in c for c in train),
        }
        if masked:
            summary["num_anomaly_slices"] = int(sum(c["anomaly_slices"] for c in masked))
            # the mean over cases that have anomalies: all-zero masks of normal cases would dilute it
            with_anomaly = [c for c in masked if c["anomaly_voxels"] > 0] or masked
            summary["anomaly_fraction_mean"] = float(np.mean([c["anomaly_fraction"] for c in with_anomaly]))
            summary["anomaly_fraction_pooled"] = float(
                sum(c["anomaly_fraction"] * c["foreground_voxels"] for c in masked)
                / max(sum(c["foreground_voxels"] for c in masked), 1))
            polarity = {}
            for name in channel_names:
                contrasts = [c["polarity"][name]["contrast"] for c in masked if c.get("polarity")]
                if contrasts:
                    median = float(np.median(contrasts))
                    polarity[name] = {"median_contrast": median, "polarity": "bright" if median > 0 else "dark",
                                      "cases_bright": sum(v > 0 for v in contrasts), "cases": len(contrasts)}
            summary["anomaly_polarity"] = polarity
            diameters = [d for c in masked for d in (c.get("lesions") or {}).get("diameters_mm", [])]
            if diameters:
                summary["lesions"] = {"count": len(diameters), "median_diameter_mm": float(np.median(diameters)),
                                      "quartiles_mm": [float(np.percentile(diameters, 25)),
                                                       float(np.percentile(diameters, 75))]}
            losses = [c["postprocessing_loss"] for c in masked if c.get("postprocessing_loss")]
            if losses:
                # pooled over the training masks' voxels: the share each kernel size would erase
                summary["postprocessing_loss"] = {
                    size: float(sum(c[size]["lost"] for c in losses) / max(sum(c[size]["voxels"] for c in losses), 1))
                    for size in losses[0]}
        if summary["num_cases_with_roi"]:
            summary["roi_fraction_median"] = float(np.median([c["roi_fraction"] for c in train if "roi_fraction" in c]))
        return summary


def extract_fingerprint(raw_dataset_folder: str | Path, output_file: str | Path, num_processes: int = 2) -> dict:
    fingerprint = DatasetFingerprintExtractor(raw_dataset_folder, num_processes).run()
    save_json(fingerprint, output_file)
    return fingerprint


def load_fingerprint(path: str | Path) -> dict:
    return load_json(path)
