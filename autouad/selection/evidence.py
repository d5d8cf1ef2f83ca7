"""What find_best_configuration compares: every candidate's anomaly map (or image score) on every
validation case of the trained folds, next to what is known about the case.

Everything is brought into one space so that candidates of different plans (another slice size,
spacing or crop) can be compared and averaged: the raw case's canonical array (axial slices
first, the file's own voxels; autouad.preprocessing.orientation). A trained method's validation
maps (saved by its fold in its own preprocessed space) are restored into it; the intensity
baseline is computed there directly. Only the values inside the region (the ROI, else the
foreground) are kept per case and candidate, higher = more anomalous: a map whose fold says its
anomalous side is ``below`` (ASC-Net's I_ro with dark anomalies) is negated.

Image-level datasets (2D images with labels and no masks) keep one score per image and candidate
instead: each method's map reduced by each image score (autouad.selection.image_scores), and the
pixel kNN baseline, scored against the normal training images of the same fold.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autouad.dataset.raw_dataset import load_raw_dataset
from autouad.dataset.validation import load_case
from autouad.fingerprint.extractor import slice_is_reference
from autouad.preprocessing.cases import load_preprocessed_case
from autouad.preprocessing.foreground import foreground_mask
from autouad.preprocessing.preprocessor import restore_to_canonical
from autouad.selection.image_scores import IMAGE_SCORES, image_score
from autouad.utils.files import load_json, load_npy
from autouad.utils.progress import progress

INTENSITY = "intensity"
KNN = "pixel_knn"  # the kNN baseline's candidate name
KNN_KIND = "knn"  # its kind (a candidate's name and kind are different things)
ALL_CHANNELS_SUFFIX = ":allchannels"  # a method trained on every channel instead of its paper's one


class SelectionError(Exception):
    """find_best_configuration cannot compare anything; one line saying why."""


@dataclass
class Candidate:
    """A source of anomaly maps (or image scores) that configurations are built from."""
    name: str                          # "ascnet", "intensity:FLAIR", "pixel_knn", "ensemble:ascnet+intensity:FLAIR"
    kind: str                          # "method", "intensity", "knn", "ensemble"
    model_folder: str | None = None    # a method's <method>__<plans> folder
    value_range: tuple[float, float] | None = None   # signed range of a map with a fixed range (I_ro: [0, 1])
    anomalous_side: str = "above"      # the side of the method's own map (the evidence stores it signed)
    channel: int | None = None         # intensity: the channel (None: the mean of the signed channels)
    sign: float = 1.0                  # intensity: +1 bright anomalies, -1 dark ones
    signs: tuple[float, ...] = ()      # intensity mean: each channel's sign
    members: tuple[str, ...] = ()      # ensemble: the candidates it averages
    image_score: str | None = None     # image level: how the map becomes a score
    note: str = ""


@dataclass
class CaseEvidence:
    name: str
    fold: int
    region: np.ndarray                 # canonical bool: where maps count
    reference: np.ndarray | None       # canonical bool anomaly mask (None: no mask)
    reference_slices: np.ndarray       # (Z,) bool: slices of the normal reference (by the dataset's protocol)
    label: int | None
    spacing: tuple[float, float, float]
    maps: dict[str, np.ndarray] = field(default_factory=dict)     # candidate -> float32 values inside region
    scores: dict[str, float] = field(default_factory=dict)        # candidate -> image score

    @property
    def has_anomaly(self) -> bool:
        return self.reference is not None and bool(self.reference.any())

    @property
    def truth(self) -> np.ndarray:
        """The reference inside the region, in the order of the map values."""
        return self.reference[self.region]

    @property
    def normal_values_mask(self) -> np.ndarray:
        """Which of the region's values lie on normal reference slices."""
        return np.broadcast_to(self.reference_slices[:, None, None], self.region.shape)[self.region]


def robust_z(values: np.ndarray) -> np.ndarray:
    """(values - median) / (1.4826 MAD): a z-score that the anomalies themselves barely move."""
    values = np.asarray(values, np.float32)
    if values.size == 0:
        return values
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median))) * 1.4826
    if mad <= 0:
        mad = float(values.std()) or 1.0
    return ((values - median) / mad).astype(np.float32)


# ---- which candidates a dataset has -------------------------------------------------------------------------
def trained_method_folders(results_dataset_folder: Path, folds: list[int]) -> dict[str, Path]:
    """candidate name -> its model folder, for every trained method whose folds all have validation
    maps. A method is named by itself, or ``<method>:allchannels`` when trained on every channel
    (plans ``autouadPlans_<method>_allchannels``); the planner's own plans (``<method>__autouadPlans``)
    win over a method's named plans of the same channels."""
    found: dict[str, Path] = {}
    for folder in sorted(Path(results_dataset_folder).glob("*__*")):
        method, plans_name = folder.name.split("__", 1)
        if not all((folder / f"fold_{k}" / "validation" / "maps.json").is_file()
                   and (folder / f"fold_{k}" / "threshold.json").is_file() for k in folds):
            continue
        key = candidate_name(method, plans_name)
        if key not in found or plans_name == "autouadPlans":
            found[key] = folder
    return found


def candidate_name(method: str, plans_name: str) -> str:
    """What a trained model folder ``<method>__<plans_name>`` is called among the candidates."""
    from autouad.planning.plans_files import ALL_CHANNELS_PLANS_SUFFIX
    return method + (ALL_CHANNELS_SUFFIX if plans_name.endswith(ALL_CHANNELS_PLANS_SUFFIX) else "")


def method_of(candidate_name: str) -> str:
    """The registered method behind a candidate name (``caae``, ``caae:allchannels``, ``caae[max]``)."""
    return candidate_name.split("[")[0].split(":")[0]


def method_candidates(model_folders: dict[str, Path], image_level: bool) -> list[Candidate]:
    from autouad.methods.registry import get_method
    from autouad.planning.plans import load_plans

    candidates = []
    for name, folder in model_folders.items():
        method = method_of(name)
        plans = load_plans(folder / "plans.json")
        trainer = get_method(method).trainer_class()
        # the side the folds were calibrated with (the plans' polarity, one for all folds; fold 0 need
        # not be among the trained ones)
        calibrated = sorted(folder.glob("fold_*/threshold.json"))
        side = load_json(calibrated[0])["anomalous_side"] if calibrated else "above"
        value_range = None
        if trainer.histogram_range is not None:
            lo, hi = trainer.histogram_range
            value_range = (lo, hi) if side == "above" else (-hi, -lo)
        if image_level:
            paper = get_method(method).image_score
            for score in IMAGE_SCORES:
                candidates.append(Candidate(f"{name}[{score}]", "method", str(folder), value_range, side,
                                            image_score=score,
                                            note=f"{plans.plans_name}; image score {score}"
                                                 + (" (its paper's)" if score == paper else "")))
        else:
            candidates.append(Candidate(name, "method", str(folder), value_range, side, note=plans.plans_name))
    return candidates


def intensity_candidates(fingerprint: dict) -> list[Candidate]:
    """Per channel the robust z-score of the case's own intensities, signed by the polarity the
    fingerprint measured in the masks (bright when unknown), and for several channels their mean."""
    names = list(fingerprint["channel_names"])
    polarity = (fingerprint["summary"].get("anomaly_polarity") or {})
    out = []
    for index, name in enumerate(names):
        dark = (polarity.get(name) or {}).get("polarity") == "dark"
        out.append(Candidate(f"{INTENSITY}:{name}", INTENSITY, channel=index, sign=-1.0 if dark else 1.0,
                             note=f"robust z of {name} in the case's own region, {'dark' if dark else 'bright'} "
                                  f"anomalies" + ("" if name in polarity else " (no masks: polarity assumed)")))
    if len(names) > 1:
        out.append(Candidate(f"{INTENSITY}:mean", INTENSITY, channel=None, signs=tuple(c.sign for c in out),
                             note="the mean of the channels' signed robust z-scores"))
    return out


# ---- the evidence -------------------------------------------------------------------------------------------------
def intensity_values(channel: int | None, sign: float, signs, data: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The intensity baseline's map inside the region: one channel's signed robust z-score, or
    (``channel`` None) the mean over the channels with their ``signs``."""
    if channel is not None:
        return sign * robust_z(data[channel][region])
    return np.mean([s * robust_z(values[region]) for s, values in zip(signs, data)], axis=0).astype(np.float32)


def collect_pixel_evidence(raw_folder: Path, preprocessed_folder: Path, splits: list[dict], folds: list[int],
                           candidates: list[Candidate], quiet: bool = False) -> list[CaseEvidence]:
    """The validation cases of ``folds``, each with every candidate's map inside its region."""
    dataset = load_raw_dataset(raw_folder)
    by_id = {c.case_id: c for c in dataset.training_cases()}
    modality = dataset.meta["modality"]
    metas = {}
    cases = [(fold, name) for fold in folds for name in sorted(splits[fold]["val"])]
    out = []
    for fold, name in progress(cases, desc="find_best_configuration: evidence", unit="case", disable=quiet,
                           file=sys.stdout):
        loaded = load_case(by_id[name])
        if isinstance(loaded, list):
            raise SelectionError("; ".join(loaded))
        region = loaded.roi if loaded.roi is not None else foreground_mask(loaded.data, None, modality)[0]
        has_anomaly = None if loaded.mask is None else loaded.mask.any(axis=(1, 2))
        evidence = CaseEvidence(name, fold, region, loaded.mask, slice_is_reference(
            by_id[name].role, dataset.normal_reference, has_anomaly, region.shape[0]), by_id[name].label,
            tuple(loaded.spacing))
        for candidate in candidates:
            if candidate.kind == INTENSITY:
                evidence.maps[candidate.name] = intensity_values(candidate.channel, candidate.sign, candidate.signs,
                                                                 loaded.data, region)
            elif candidate.kind == "method":
                folder = Path(candidate.model_folder)
                if folder not in metas:  # one plans.json read per candidate, not per case
                    metas[folder] = _data_folder(folder, preprocessed_folder)
                meta = load_json(metas[folder] / f"{name}.json")
                maps = np.asarray(load_npy(folder / f"fold_{fold}" / "validation" / f"{name}.npy"), np.float32)
                canonical = restore_to_canonical(maps, meta, order=1)
                sign = -1.0 if candidate.anomalous_side == "below" else 1.0
                evidence.maps[candidate.name] = (sign * canonical[region]).astype(np.float32)
        out.append(evidence)
    return out


def _data_folder(model_folder: Path, preprocessed_folder: Path) -> Path:
    from autouad.planning.plans import load_plans
    return preprocessed_folder / load_plans(model_folder / "plans.json").preprocessing.data_folder


def collect_image_evidence(raw_folder: Path, preprocessed_folder: Path, splits: list[dict], folds: list[int],
                           candidates: list[Candidate], quiet: bool = False) -> list[CaseEvidence]:
    """The validation images of ``folds``, each with every candidate's image score."""
    from autouad.evaluation.baselines import knn_scores, shrink
    from autouad.utils.images import read_image

    dataset = load_raw_dataset(raw_folder)
    modality = dataset.meta["modality"]
    by_id = {c.case_id: c for c in dataset.training_cases()}
    out = []
    vectors: dict[str, np.ndarray] = {}

    def vector(case_id: str) -> np.ndarray:
        if case_id not in vectors:
            image = read_image(by_id[case_id].images[0])[0]
            vectors[case_id] = shrink(image.reshape(image.shape[-2:]) if image.ndim == 3 else image).ravel()
        return vectors[case_id]

    for fold in folds:
        names = sorted(splits[fold]["val"])
        fold_cases = [CaseEvidence(n, fold, np.zeros((1, 1, 1), bool), None, np.zeros(1, bool),
                                   _label(by_id[n]), (1.0, 1.0, 1.0)) for n in names]
        for candidate in candidates:
            if candidate.kind == "method":
                folder = Path(candidate.model_folder)
                data_folder = _data_folder(folder, preprocessed_folder)
                for case in fold_cases:
                    maps = np.asarray(load_npy(folder / f"fold_{fold}" / "validation" / f"{case.name}.npy"))
                    pre = load_preprocessed_case(data_folder, case.name, modality)
                    signed = maps if candidate.anomalous_side == "above" else -maps
                    case.scores[candidate.name] = image_score(signed, pre.region, candidate.image_score)
            elif candidate.kind == KNN_KIND:
                normal = [n for n in splits[fold]["train"] if by_id[n].role == "normal"]
                reference = np.stack([vector(n) for n in progress(normal, desc=f"kNN fold {fold}: normal images",
                                                              disable=quiet, file=sys.stdout)])
                queries = np.stack([vector(c.name) for c in fold_cases])
                for case, score in zip(fold_cases, knn_scores(reference, queries, 1)):
                    case.scores[candidate.name] = float(score)
        out += fold_cases
    return out


def _label(case) -> int | None:
    if case.label is not None:
        return int(case.label)
    return 0 if case.role == "normal" else None
