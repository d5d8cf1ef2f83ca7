"""Non-learned baselines that every unsupervised method must beat, in plain numpy.

* Pixel k-nearest neighbours for image-level detection: each image, shrunk to a small grey square
  (32x32) by averaging pixel areas and standardised to zero mean and unit variance (so that the
  exposure of an X-ray does not count), is scored by its mean Euclidean distance to its k nearest
  normal training images. It needs no training and no labels beyond "these images are normal".
  ``autouad_baseline knn`` writes its scores as a prediction folder that autouad_evaluate reads.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from autouad.dataset.raw_dataset import load_raw_dataset
from autouad.inference.inputs import find_input_cases
from autouad.inference.outputs import PREDICTIONS_FILE, SCORES_FILE, write_scores
from autouad.utils.files import save_json
from autouad.utils.images import file_ending, read_image
from autouad.utils.progress import progress


def shrink(image: np.ndarray, size: int = 32) -> np.ndarray:
    """A 2D grey image as a size x size float32 array of area averages, standardised per image."""
    image = np.asarray(image, np.float64)
    h, w = image.shape
    # area averaging: every output pixel is the mean of the input pixels it covers (by whole rows /
    # columns, each input index weighted by its overlap)
    rows = np.minimum((np.arange(h) * size) // h, size - 1)
    cols = np.minimum((np.arange(w) * size) // w, size - 1)
    sums = np.zeros((size, size))
    np.add.at(sums, (rows[:, None], cols[None, :]), image)
    counts = np.zeros((size, size))
    np.add.at(counts, (rows[:, None], cols[None, :]), 1.0)
    out = sums / np.maximum(counts, 1)
    std = out.std()
    return ((out - out.mean()) / std if std > 0 else out - out.mean()).astype(np.float32)


def knn_scores(normal: np.ndarray, queries: np.ndarray | None, k: int = 1, chunk: int = 1024) -> np.ndarray:
    """(N, D) normal vectors, (M, D) queries -> (M,) mean distance to the k nearest normal vectors;
    squared distances by one matrix product per chunk (|a|^2 + |b|^2 - 2 a.b). ``queries=None``
    scores the normal vectors themselves, each against the *other* normal vectors (leave one out):
    the baseline's scores of normal images it has not memorised, for a label-free threshold."""
    normal = np.asarray(normal, np.float64).reshape(len(normal), -1)
    leave_one_out = queries is None
    queries = normal if leave_one_out else np.asarray(queries, np.float64).reshape(len(queries), -1)
    available = len(normal) - int(leave_one_out)
    if not 1 <= k <= available:
        raise ValueError(f"k must lie in 1..{available}, not {k}")
    normal_sq = (normal ** 2).sum(1)
    out = np.empty(len(queries))
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        d2 = np.maximum((q ** 2).sum(1)[:, None] + normal_sq[None, :] - 2.0 * q @ normal.T, 0.0)
        if leave_one_out:
            rows = np.arange(len(q))
            d2[rows, start + rows] = np.inf
        nearest = np.partition(d2, k - 1, axis=1)[:, :k]
        out[start:start + chunk] = np.sqrt(nearest).mean(1)
    return out


def knn_baseline_predictions(dataset_folder: Path, input_folder: Path, output_folder: Path, k: int = 1,
                             size: int = 32, percentile: float = 95.0) -> dict:
    """Score every image in ``input_folder`` with the pixel kNN baseline against the raw dataset's
    normal training images and write ``scores.csv`` and ``predictions.json`` in the layout of
    autouad_predict (autouad/inference/outputs.py), so that autouad_evaluate scores it the same way.
    The decision threshold is label-free, as the methods' image cut: the ``percentile`` of the
    normal training images' leave-one-out scores."""
    dataset = load_raw_dataset(dataset_folder)
    if dataset.num_channels != 1:
        raise ValueError(f"{dataset_folder}: the pixel kNN baseline reads one grey channel, the dataset has "
                         f"{dataset.num_channels}")
    normal_cases = [c for c in dataset.training_cases() if c.role == "normal"]
    if len(normal_cases) <= k:
        raise ValueError(f"{dataset_folder}: {len(normal_cases)} normal training case(s); kNN with k={k} needs more")
    cases, problems = find_input_cases(input_folder, dataset.meta["channel_names"])
    if not cases:
        raise ValueError(f"{input_folder}: no image to score" + (f" ({next(iter(problems.values()))})"
                                                                  if problems else ""))

    def vectors(paths: list[Path], what: str) -> np.ndarray:
        out = np.empty((len(paths), size * size), np.float32)
        for i, path in enumerate(progress(paths, desc=f"kNN baseline: {what}", unit="image")):
            image = read_image(path)[0]
            if image.ndim == 3 and image.shape[0] == 1:
                image = image[0]
            if image.ndim != 2:
                raise ValueError(f"{path}: the pixel kNN baseline scores 2D images, this one has shape {image.shape}")
            out[i] = shrink(image, size).ravel()
        return out

    start = time.perf_counter()
    normal = vectors([c.images[0] for c in normal_cases], "normal training images")
    queries = vectors([c.images[0] for c in cases], "images to score")
    threshold = float(np.percentile(knn_scores(normal, None, k), percentile))
    scores = knn_scores(normal, queries, k)
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    done = {}
    for case, score in zip(cases, scores):
        done[case.case_id] = {"score": float(score), "decision": int(score >= threshold)}
    write_scores(output_folder / SCORES_FILE, done, threshold)
    record = {"method": "pixel_knn", "baseline": f"pixel kNN: {size}x{size} area-averaged standardised images, "
                                                 f"mean distance to the {k} nearest normal training image(s)",
              "dataset": dataset.name, "input_folder": str(input_folder), "k": k, "size": size,
              "num_normal_reference": len(normal_cases), "image_threshold": threshold,
              "image_threshold_rule": f"{percentile:g}th percentile of the normal training images' "
                                      f"leave-one-out scores (no labels of the scored images)",
              "seconds": round(time.perf_counter() - start, 2), "num_predicted": len(done),
              "num_failed": len(problems), "cases": done, "failed": problems}
    save_json(record, output_folder / PREDICTIONS_FILE)
    return record


def standardised_in_region(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(image - mean) / std of the voxels in ``region``, 0 outside it (float32)."""
    values = image[region].astype(np.float64)
    std = values.std() if values.size else 0.0
    out = np.zeros(image.shape, np.float32)
    if values.size:
        out[region] = ((values - values.mean()) / (std if std > 0 else 1.0)).astype(np.float32)
    return out


def intensity_baseline_predictions(cases: list, reference_cases: list, channel: int, output_folder: Path,
                                   normal_reference: str = "cases", side: str = "above",
                                   percentile: float = 99.0, modality: str = "MRI") -> dict:
    """The intensity-threshold baseline (FLAIR thresholding for brain MRI) as a prediction folder.

    Each volume's ``channel`` is standardised inside its ROI (the ``modality``'s foreground where it
    has none, as the preprocessing defines it); the map is
    that value (negated for dark anomalies, ``side="below"``), so higher is more anomalous. The
    label-free threshold is the ``percentile`` of the map over the normal reference slices of
    ``reference_cases`` (the same slices a method trains on, by the dataset's ``normal_reference``
    protocol); masks are map >= threshold inside the ROI. Writes masks, ``maps/`` and ``rois/`` in
    autouad_predict's layout, in each case's file geometry, so that autouad_evaluate reports Dice,
    AUROC, AP and the best-possible Dice (the baseline at its oracle threshold)."""
    from autouad.dataset.validation import load_case
    from autouad.fingerprint.extractor import slice_is_reference
    from autouad.inference.outputs import MAPS_FOLDER, ROIS_FOLDER, write_image
    from autouad.preprocessing.foreground import foreground_mask

    if side not in ("above", "below"):
        raise ValueError(f"side must be 'above' or 'below', not {side!r}")
    sign = 1.0 if side == "above" else -1.0

    def loaded_map(case):
        loaded = load_case(case)
        if isinstance(loaded, list):
            raise ValueError("; ".join(loaded))
        region = loaded.roi if loaded.roi is not None else foreground_mask(loaded.data, None, modality)[0]
        return loaded, sign * standardised_in_region(loaded.data[channel], region), region

    reference_values = []
    for case in progress(reference_cases, desc="intensity baseline: normal reference", unit="case"):
        loaded, values, region = loaded_map(case)
        has_anomaly = None if loaded.mask is None else loaded.mask.any(axis=(1, 2))
        normal = slice_is_reference(case.role, normal_reference, has_anomaly, values.shape[0])
        reference_values.append(values[normal][region[normal]])
    reference_values = np.concatenate(reference_values) if reference_values else np.zeros(0)
    if reference_values.size == 0:
        raise ValueError("the reference cases have no normal reference slices to set the label-free threshold on")
    threshold = float(np.percentile(reference_values, percentile))

    output_folder = Path(output_folder)
    for sub in ("", MAPS_FOLDER, ROIS_FOLDER):
        (output_folder / sub).mkdir(parents=True, exist_ok=True)
    done = {}
    for case in progress(cases, desc="intensity baseline: cases", unit="case"):
        loaded, values, region = loaded_map(case)
        name = f"{case.case_id}{file_ending(case.images[channel])}"
        back = loaded.orientation.from_canonical
        write_image(back((values >= threshold) & region).astype(np.uint8), output_folder / name, loaded.geometry)
        write_image(back(values), output_folder / MAPS_FOLDER / name, loaded.geometry)
        write_image(back(region).astype(np.uint8), output_folder / ROIS_FOLDER / name, loaded.geometry)
        done[case.case_id] = {"file": name}
    record = {"method": "intensity_threshold", "channel": channel, "side": side, "threshold": threshold,
              "threshold_rule": f"{percentile:g}th percentile of the standardised channel on the normal reference "
                                f"slices of {len(reference_cases)} reference case(s) (no labels of the scored cases)",
              "num_predicted": len(done), "cases": done}
    save_json(record, output_folder / PREDICTIONS_FILE)
    return record
