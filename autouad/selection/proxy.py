"""A label-free proxy for find_best_configuration: synthetic anomalies pasted into held-out normal
tissue, where the validation cases have neither masks nor image labels.

Each fold's validation cases keep their normal reference slices (normal cases; lesion-free slices
where the dataset defines its reference that way); into them go a few smooth blobs, brighter (or
darker, by the fingerprint's polarity where masks once measured it) than the tissue around them by
1.5 to 3 of its robust standard deviations, a few millimetres to a couple of centimetres across
and a few slices deep. Every candidate (each fold's trained model, run on the pasted case, and the
intensity baseline) is then scored on finding them, out of fold, exactly as on real masks; 2D
image-level datasets get a blob in half of their normal validation images, and candidates are
ranked by image AUROC.

The blobs are deliberately unlike the random-shape pseudo anomalies the two-phase net and DRAEM
train on (noise thresholded into shapes, a constant shift): a proxy that repeated a method's own
training synthesis would rank that method first for the wrong reason. How well the proxy's ranking
follows the real one is measured on BraTS-6 and Kermany by benchmarks/proxy_correlation.py.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from autouad.dataset.raw_dataset import load_raw_dataset
from autouad.dataset.validation import LoadedCase, load_case
from autouad.fingerprint.extractor import slice_is_reference
from autouad.preprocessing.foreground import foreground_mask
from autouad.preprocessing.preprocessor import restore_to_canonical
from autouad.selection.evidence import INTENSITY, KNN_KIND, Candidate, CaseEvidence, SelectionError, intensity_values
from autouad.selection.image_scores import image_score
from autouad.utils.progress import progress

BLOBS = (1, 3)                 # blobs per case
DIAMETER_MM = (4.0, 20.0)
DEPTH_SLICES = (1, 4)
CONTRAST_SD = (1.5, 3.0)


def blob_weight(allowed: np.ndarray, pixel_mm: float, rng: np.random.Generator,
                depth_slices: tuple[int, int] = DEPTH_SLICES) -> np.ndarray:
    """(Z, Y, X) weights in [0, 1]: one to three smooth blobs centred inside ``allowed`` (which
    must hold a voxel), soft-edged and zero outside it."""
    z_size, y_size, x_size = allowed.shape
    candidates = np.argwhere(allowed)
    weight = np.zeros(allowed.shape, np.float32)
    for _ in range(rng.integers(BLOBS[0], BLOBS[1] + 1)):
        cz, cy, cx = candidates[rng.integers(len(candidates))]
        radius = rng.uniform(*DIAMETER_MM) / 2 / pixel_mm
        depth = rng.integers(depth_slices[0], depth_slices[1] + 1) / 2
        zz, yy, xx = np.ogrid[:z_size, :y_size, :x_size]
        distance = np.sqrt(((zz - cz) / max(depth, 0.5)) ** 2 + ((yy - cy) / radius) ** 2 + ((xx - cx) / radius) ** 2)
        weight = np.maximum(weight, np.clip(1.0 - distance, 0.0, 1.0) ** 0.5)
    weight *= allowed
    return ndimage.gaussian_filter(weight, sigma=(0, 0.7, 0.7)) * allowed


def add_blobs(data: np.ndarray, region: np.ndarray, weight: np.ndarray, signs: list[float],
              contrast: float) -> np.ndarray:
    """``data`` (C, Z, Y, X) plus ``contrast`` robust standard deviations of each channel's tissue
    inside ``region``, times ``weight``, with each channel's sign (a new array)."""
    data = data.copy()
    for c, sign in enumerate(signs):
        values = data[c][region]
        median = float(np.median(values))
        sd = float(np.median(np.abs(values - median))) * 1.4826 or float(values.std()) or 1.0
        data[c] = data[c] + sign * contrast * sd * weight
    return data


def paste_blobs(loaded: LoadedCase, region: np.ndarray, slices: np.ndarray, signs: list[float],
                rng: np.random.Generator) -> tuple[LoadedCase, np.ndarray]:
    """(the case with blobs added on ``slices`` inside ``region``, the blobs' mask)."""
    allowed = region & slices[:, None, None]
    if not allowed.any():
        return dataclasses.replace(loaded, data=loaded.data.copy()), np.zeros(region.shape, bool)
    weight = blob_weight(allowed, float(np.mean(loaded.spacing[1:])), rng)
    contrast = rng.uniform(*CONTRAST_SD)
    return dataclasses.replace(loaded, data=add_blobs(loaded.data, region, weight, signs, contrast)), weight > 0.3


def paste_blobs_into_slices(slices: np.ndarray, regions: np.ndarray, pixel_mm: list[float], sign: float,
                            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(``slices`` (N, C, H, W) with one to three blobs in each slice's region, one slice deep and
    of the same sign in every channel; the blobs' masks (N, H, W)). The training runs' label-free
    probe (keep_checkpoint=best_proxy): preprocessed slices, ``pixel_mm`` each slice's pixel size."""
    pasted, masks = slices.copy(), np.zeros(regions.shape, bool)
    for i, region in enumerate(regions):
        if not region.any():
            continue
        weight = blob_weight(region[None], pixel_mm[i], rng, depth_slices=(1, 1))
        contrast = rng.uniform(*CONTRAST_SD)
        pasted[i] = add_blobs(slices[i][:, None], region[None], weight, [sign] * slices.shape[1], contrast)[:, 0]
        masks[i] = weight[0] > 0.3
    return pasted, masks


def collect_proxy_evidence(raw_folder: Path, splits: list[dict], folds: list[int], candidates: list[Candidate],
                           fingerprint: dict, image_level: bool, seed: int = 0,
                           quiet: bool = False) -> list[CaseEvidence]:
    """Evidence of every candidate on the validation cases' normal slices with pasted blobs (pixel
    level) or on normal validation images with and without a blob (image level)."""
    from autouad.evaluation.baselines import knn_scores, shrink
    from autouad.inference.predictor import AnomalyPredictor
    from autouad.utils.images import read_image

    dataset = load_raw_dataset(raw_folder)
    by_id = {c.case_id: c for c in dataset.training_cases()}
    modality = dataset.meta["modality"]
    names = list(fingerprint["channel_names"])
    polarity = fingerprint["summary"].get("anomaly_polarity") or {}
    signs = [-1.0 if (polarity.get(n) or {}).get("polarity") == "dark" else 1.0 for n in names]
    predictors: dict[tuple[str, int], AnomalyPredictor] = {}
    knn_reference: dict[int, np.ndarray] = {}
    rng = np.random.default_rng(seed)
    out = []
    for fold in folds:
        for name in progress(sorted(splits[fold]["val"]), desc=f"proxy: fold {fold}", unit="case", disable=quiet,
                             file=sys.stdout):
            case = by_id[name]
            loaded = load_case(case)
            if isinstance(loaded, list):
                raise SelectionError("; ".join(loaded))
            region = loaded.roi if loaded.roi is not None else foreground_mask(loaded.data, None, modality)[0]
            has_anomaly = None if loaded.mask is None else loaded.mask.any(axis=(1, 2))
            normal = slice_is_reference(case.role, dataset.normal_reference, has_anomaly, region.shape[0])
            normal &= region.any(axis=(1, 2))
            if not normal.any():
                continue
            label = None
            if image_level:
                label = int(rng.random() < 0.5)
                pasted, mask = paste_blobs(loaded, region, normal, signs, rng) if label else (loaded, None)
            else:
                pasted, mask = paste_blobs(loaded, region, normal, signs, rng)
            proxy_region = region & normal[:, None, None]
            evidence = CaseEvidence(name, fold, proxy_region, None if image_level else mask,
                                    np.zeros(region.shape[0], bool), label, tuple(loaded.spacing))
            for candidate in candidates:
                if candidate.kind == INTENSITY:
                    values = np.zeros(region.shape, np.float32)
                    values[region] = intensity_values(candidate.channel, candidate.sign, candidate.signs,
                                                      pasted.data, region)
                    evidence.maps[candidate.name] = values[proxy_region]
                elif candidate.kind == "method":
                    key = (candidate.model_folder, fold)
                    if key not in predictors:
                        predictors[key] = AnomalyPredictor.from_folder(candidate.model_folder, [fold])
                    predictor = predictors[key]
                    prepared = predictor.prepare_loaded(pasted, name, ["proxy"], None)
                    maps = predictor.predict_maps(prepared.slices)
                    sign = -1.0 if candidate.anomalous_side == "below" else 1.0
                    if image_level:
                        evidence.scores[candidate.name] = image_score(sign * maps, prepared.region,
                                                                      candidate.image_score or "mean")
                    else:
                        canonical = restore_to_canonical(maps, prepared.meta, order=1)
                        evidence.maps[candidate.name] = (sign * canonical[proxy_region]).astype(np.float32)
                elif candidate.kind == KNN_KIND and image_level:
                    if fold not in knn_reference:
                        knn_reference[fold] = np.stack([
                            shrink(np.squeeze(read_image(by_id[n].images[0])[0])).ravel()
                            for n in splits[fold]["train"] if by_id[n].role == "normal"])
                    query = shrink(np.squeeze(pasted.data[0])).ravel()[None]
                    evidence.scores[candidate.name] = float(knn_scores(knn_reference[fold], query, 1)[0])
            out.append(evidence)
    if not out:
        raise SelectionError(f"{raw_folder}: no validation case has normal slices to paste synthetic anomalies into")
    return out
