"""Prediction: images in, anomaly maps, masks and image scores out, in the inputs' geometry.

    predictor = AnomalyPredictor.from_folder("results/Dataset001_BraTS/ascnet__autouadPlans")
    result = predictor.predict([flair, t1c], roi=brain)    # SimpleITK images in memory
    result.map, result.mask, result.score

Per case: check the images, preprocess them exactly as the plan preprocessed the training data,
run every fold's model (autouad.model.AnomalyModel) on the slices and average their maps, cut the
mean map at the mean of the folds' calibrated thresholds (each found on its fold's validation
data), post-process as the plan says, and undo cropping, resampling and reorientation, so that
every output has its input's shape, spacing, origin and direction. ``predict_folder`` does the same
for a folder of files, through the same steps, and writes what ``predict`` returns: the files are
equal to the in-memory results voxel for voxel.

Slices of several cases go through the networks together (a folder of 2D X-rays is one batch of
many images, not one forward pass per image), in inference mode, on the CPU or a GPU.

The output folder's layout is in autouad.inference.outputs. Masks of 2D images are PNG and their
maps TIFF (JPEG would alter a mask, PNG cannot hold floats); .mhd inputs give .mha outputs.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from autouad.calibration.thresholds import anomalous, oriented_image_score
from autouad.dataset.raw_dataset import CaseFiles
from autouad.dataset.validation import LoadedCase, case_from_images, load_case
from autouad.inference.inputs import InputCase, find_input_cases
from autouad.inference.outputs import (MAPS_FOLDER, PREDICTIONS_FILE, ROIS_FOLDER, SCORES_FILE,
                                       WITHOUT_POSTPROCESSING_FOLDER, output_endings, write_image, write_scores)
from autouad.model import CHECKPOINT_FINAL, MODEL_FILE, AnomalyModel, ModelError
from autouad.planning.plans import _to_dict as plans_to_dict
from autouad.postprocessing.morphology import postprocess_slices
from autouad.preprocessing.cases import slice_region
from autouad.preprocessing.foreground import foreground_mask
from autouad.preprocessing.preprocessor import CasePreprocessor, restore_to_file_array
from autouad.utils.files import remove_stale_temporaries, save_json
from autouad.utils.images import Geometry
from autouad.utils.progress import progress


class PredictionError(Exception):
    """The model or the command cannot predict; one line saying why."""


@dataclass
class PreparedCase:
    """A case read and preprocessed, waiting for its maps."""
    name: str
    inputs: list[str]             # what it was read from (files, or "in memory")
    ending: str | None            # the input files' ending (None in memory)
    geometry: Geometry
    meta: dict
    slices: np.ndarray            # (S, C, H, W) preprocessed
    region: np.ndarray            # (S, H, W) bool, in slice space
    file_region: np.ndarray       # bool, in the file's array shape


@dataclass
class Prediction:
    """One case's results, every image in the input's geometry."""
    name: str
    map: sitk.Image                                   # float32 anomaly map, 0 outside the region
    mask: sitk.Image                                  # uint8, post-processed where the plan says so
    mask_without_postprocessing: sitk.Image | None    # uint8, when post-processing ran
    region: sitk.Image                                # uint8: where the map counts (ROI / foreground)
    score: float                                      # image-level score, higher = more anomalous
    decision: int | None                              # 1 anomalous, 0 normal, by the image-level cut
    slices: int
    anomalous_voxels: int


def mean_map(fold_maps: list[np.ndarray]) -> np.ndarray:
    """The folds' anomaly maps averaged (in float64, returned as float32)."""
    return np.mean(np.stack(fold_maps), axis=0, dtype=np.float64).astype(np.float32)


@dataclass(frozen=True)
class FoldImageScore:
    """How one fold's map becomes its share of an image's score: the image score ``how`` of the map
    signed by ``side`` (higher is more anomalous on that side), negated where ``direction`` is
    ``lower``, on the fold's normal scale, (score - center) / scale.

    With the median of the fold's normal validation images as ``center`` and its image cut minus that
    median as ``scale``, 0 is a typical normal image and 1 the fold's cut, whatever the fold's map
    range, image score or side; the folds' scaled scores are averaged image by image and the mean of
    their cuts is 1. Folds calibrated before they kept that scale have ``center`` 0 and ``scale`` 1:
    their raw scores are averaged and cut at the mean of their cuts, as before."""
    how: str
    side: str
    direction: str = "higher"
    center: float = 0.0
    scale: float = 1.0
    cut: float | None = None      # the fold's image cut on its raw score; None without an image cut
    scaled: bool = False          # center and scale are the fold's normal scale (else 0 and 1: raw)

    @classmethod
    def of_fold(cls, threshold, how: str, side: str, direction: str = "higher") -> "FoldImageScore":
        """The fold's scale where its calibration kept one, else its raw score."""
        scale = threshold.image_scale(how, side, direction)
        if scale is None:
            return cls(how, side, direction, cut=threshold.image_cut(how))
        center, cut = scale
        # a fold whose normal images all score alike has no spread to scale by: its score is only shifted
        spread = cut - center if cut - center > 1e-12 * max(1.0, abs(center)) else 1.0
        return cls(how, side, direction, center, spread, cut, scaled=True)

    @property
    def scaled_cut(self) -> float | None:
        return None if self.cut is None else (self.cut - self.center) / self.scale

    def __call__(self, maps: np.ndarray, region: np.ndarray) -> float:
        return (oriented_image_score(maps, region, self.how, self.side, self.direction) - self.center) / self.scale


def folds_scaled_image_score(fold_maps: list[np.ndarray], region: np.ndarray,
                             scores: list[FoldImageScore]) -> float:
    """The mean of the folds' scaled image scores, each of its own map (folds_mean_image_score's
    reasoning: the folds' peaks do not coincide)."""
    if not fold_maps or not len(fold_maps[0]):
        return 0.0
    return float(np.mean([score(maps, region) for score, maps in zip(scores, fold_maps)]))


def folds_mean_image_score(fold_maps: list[np.ndarray], region: np.ndarray, how: str, side: str) -> float:
    """The mean of the folds' image scores, each of its own map.

    Each fold's image cut is a percentile of that fold's scores of its own maps. A score that is not
    linear in the map (the top-k mean, the max of the mean-filtered map) is lower on the folds' mean
    map than the mean of the folds' scores, since the folds' peaks do not coincide; the mean of the
    folds' cuts would then flag too few images. The mean of the folds' scores has the cuts' scale
    (for the mean of the map both ways give the same number)."""
    return folds_scaled_image_score(fold_maps, region, [FoldImageScore(how, side)] * len(fold_maps))


def write_prediction(prediction: Prediction, inputs: list[str], ending: str | None, output: Path,
                     save_maps: bool) -> dict:
    """A case's files in the prediction folder's layout (autouad.inference.outputs); returns its
    entry of predictions.json."""
    mask_ending, map_ending = output_endings(ending or ".nii.gz")
    name = prediction.name
    write_image(prediction.mask, output / f"{name}{mask_ending}")
    written = {"mask": f"{name}{mask_ending}"}
    if prediction.mask_without_postprocessing is not None:
        write_image(prediction.mask_without_postprocessing, output / WITHOUT_POSTPROCESSING_FOLDER / f"{name}{mask_ending}")
        written["mask_without_postprocessing"] = f"{WITHOUT_POSTPROCESSING_FOLDER}/{name}{mask_ending}"
    if save_maps:
        write_image(prediction.map, output / MAPS_FOLDER / f"{name}{map_ending}")
        write_image(prediction.region, output / ROIS_FOLDER / f"{name}{mask_ending}")
        written.update(map=f"{MAPS_FOLDER}/{name}{map_ending}", roi=f"{ROIS_FOLDER}/{name}{mask_ending}")
    record = {"inputs": inputs, "outputs": written, "anomalous_voxels": prediction.anomalous_voxels,
              "slices": prediction.slices, "score": prediction.score}
    if prediction.decision is not None:
        record["decision"] = prediction.decision
    return record


def read_roi(path: Path) -> sitk.Image:
    from autouad.utils.images import ImageReadError, read_sitk
    try:
        return read_sitk(path)
    except ImageReadError as e:
        raise PredictionError(str(e)) from None


def load_input_case(case: InputCase, num_channels: int) -> LoadedCase:
    """Read and check a case's files; channels the model does not read and the case lacks are
    zeros (they are preprocessed like the others and never reach the networks)."""
    if case.dicom is not None:
        from autouad.utils.dicom import read_dicom_series
        from autouad.utils.images import ImageReadError
        try:
            image = read_dicom_series(case.dicom)
        except ImageReadError as e:
            raise PredictionError(str(e)) from None
        roi = None if case.roi is None else read_roi(case.roi)
        loaded = case_from_images(CaseFiles(case.case_id, "test", [], None, None, role=None, label=None,
                                            patient=case.case_id), [image], roi)
    else:
        loaded = load_case(case.as_case_files())
    if isinstance(loaded, list):
        raise PredictionError("; ".join(loaded))
    if case.channels and len(case.channels) < num_channels:
        full = np.zeros((num_channels,) + loaded.data.shape[1:], np.float32)
        full[case.channels] = loaded.data
        loaded.data = full
    return loaded


def already_predicted(output_folder: Path) -> dict[str, dict]:
    """The cases an earlier run recorded in the folder's predictions.json whose outputs all exist."""
    from autouad.utils.files import load_json
    record_path = Path(output_folder) / PREDICTIONS_FILE
    if not record_path.is_file():
        return {}
    try:
        cases = load_json(record_path).get("cases") or {}
    except ValueError:
        return {}
    return {name: entry for name, entry in cases.items()
            if all((Path(output_folder) / f).is_file() for f in entry.get("outputs", {}).values())}


def check_folders(input_folder: Path, output_folder: Path, roi_folder: Path | None) -> None:
    """autouad never writes among its inputs: the output may not be, or lie in, an input folder."""
    output = Path(output_folder).resolve()
    for what, folder in (("input", input_folder), ("ROI", roi_folder)):
        if folder is not None and Path(folder).resolve() in (output, *output.parents):
            raise PredictionError(f"{output_folder}: the output must not lie in the {what} folder {folder}; "
                                  f"autouad never writes among the inputs")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PredictionError(f"{output_folder}: cannot make the output folder ({e.strerror})") from None
    if not os.access(output, os.W_OK):
        raise PredictionError(f"{output_folder}: the output folder is not writable")


def trained_folds(model_folder: Path) -> list[int]:
    """The folds with a model (model.pt, or a checkpoint_final.pt of a fold trained before it)."""
    folds = {p.parent.name for name in (MODEL_FILE, CHECKPOINT_FINAL) for p in Path(model_folder).glob(f"fold_*/{name}")}
    return sorted(int(name.split("_")[1]) for name in folds)


def folds_validation_auroc(models: list) -> dict[str, float] | None:
    """{image score: the mean over ``models``' folds of its AUROC on their labelled validation images}
    (cross-validation: each fold's images are out of its model's training); None where a fold did not
    compare the image scores (no image-level cut, too few labelled images, the plans fix the score, or
    calibrated before image scores were compared)."""
    from autouad.selection.image_scores import IMAGE_SCORES
    measured = []
    for model in models:
        image = model.threshold.image
        if image is None or image.get("image_score_fixed"):
            return None
        by_score = image.get("by_image_score") or {}
        if any((by_score.get(how) or {}).get("validation_auroc") is None for how in IMAGE_SCORES):
            return None
        measured.append(by_score)
    return {how: float(np.mean([m[how]["validation_auroc"] for m in measured])) for how in IMAGE_SCORES}


def folds_image_score(models: list) -> tuple[str, str]:
    """(image score, why) for the fold-averaged maps of ``models``: where every fold compared the
    image scores on its labelled validation images, the choice of choose_image_score from their mean
    AUROCs (folds_validation_auroc), else what the first fold's image cut was calibrated with (the
    method's declared score, or the plans' fixed one), else the method's declared score (no
    image-level cut)."""
    from autouad.methods.registry import get_method
    from autouad.selection.image_scores import choose_image_score
    declared = get_method(models[0].method).image_score
    images = [m.threshold.image for m in models]
    if any(image is None for image in images):
        return declared, f"{declared}, the method's own (the folds have no image-level cut)"
    mean = folds_validation_auroc(models)
    if mean is not None:
        how, why = choose_image_score(mean, images[0].get("declared_image_score", declared))
        return how, why + f"; the mean over folds {sorted(m.fold for m in models)}"
    # (an image cut calibrated before image scores were compared used the mean)
    how = images[0].get("image_score", "mean")
    return how, images[0].get("image_score_reason") or f"{how}, what fold {models[0].fold}'s image cut was calibrated with"


def fold_image_scores(models: list) -> tuple[list[FoldImageScore], str, str]:
    """(each fold's FoldImageScore, the image score in words, why) for ``models``' folds.

    A method whose map side is fixed scores every fold with one image score (folds_image_score) on
    the map's side. A method whose side is not (``anomalous_side="polarity"``, ASC-Net) scores each
    fold with the score, side and direction its own labelled validation images chose
    (autouad.calibration.thresholds.choose_image_orientation), where every fold made that choice:
    its folds' intensity clusters can come out in either order, so the folds may disagree."""
    from autouad.methods.registry import get_method
    images = [m.threshold.image for m in models]
    own = (get_method(models[0].method).anomalous_side == "polarity"
           and all(image is not None and "side" in image for image in images))
    if not own:
        how, why = folds_image_score(models)
        scores = [FoldImageScore.of_fold(m.threshold, how, m.threshold.anomalous_side) for m in models]
        if any(s.scaled for s in scores) and not all(s.scaled for s in scores):
            # some folds were calibrated before folds kept a normal scale: raw scores for all
            scores = [FoldImageScore(how, s.side, cut=m.threshold.image_cut(how)) for m, s in zip(models, scores)]
            why += " (raw scores: some folds were calibrated before folds kept a normal scale)"
        return scores, how, why
    # (a fold that chose its orientation kept its scale: calibration writes both at once)
    scores = [FoldImageScore.of_fold(m.threshold, m.threshold.image["image_score"], m.threshold.image_side,
                                     m.threshold.image_direction) for m in models]
    if len({(s.how, s.side, s.direction) for s in scores}) == 1 and scores[0].direction == "higher":
        how = scores[0].how
    else:
        how = "per fold: " + ", ".join(f"fold {m.fold} {s.how} ({s.side}, {s.direction})"
                                       for m, s in zip(models, scores))
    why = "each fold's own choice on its labelled validation images, the map's side not being fixed: " + "; ".join(
        f"fold {m.fold}: {m.threshold.image['image_score_reason']}; orientation: {m.threshold.image['side_reason']}"
        for m in models)
    return scores, how, why


def choose_device(requested: str | None) -> str:
    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise PredictionError("--device cuda: no CUDA GPU is visible to torch")
    return requested


class AnomalyPredictor:
    """The trained folds of one configuration, predicting as one model (their maps averaged)."""

    def __init__(self, models: list[AnomalyModel], postprocess: bool = True, batch_size: int | None = None,
                 precision: str = "auto", source: Path | None = None):
        if not models:
            raise PredictionError("no trained fold to predict with")
        self.models = models
        self.source = source
        first = models[0]
        for model in models[1:]:
            if (model.method, model.plans.plans_name) != (first.method, first.plans.plans_name):
                raise PredictionError(f"{model.source}: fold {model.fold} is {model.method}/{model.plans.plans_name}, "
                                      f"fold {first.fold} {first.method}/{first.plans.plans_name}")
        uncalibrated = [m for m in models if m.threshold is None]
        if uncalibrated:
            m = uncalibrated[0]
            raise PredictionError(f"{m.source}: fold {m.fold} is not calibrated; run autouad_train "
                                  f"{m.plans.dataset} {m.fold} -m {m.method} --val")
        sides = {m.threshold.anomalous_side for m in models}
        if len(sides) > 1:
            raise PredictionError(f"{source}: the folds disagree on the anomalous side ({sorted(sides)})")
        self.side = sides.pop()
        # One cut for the fold-averaged map: the mean of the folds' cuts (identical for one fold).
        self.threshold = float(np.mean([m.threshold.value for m in models]))
        # Images: each fold's score on its own normal scale, averaged, cut at the mean of the folds'
        # scaled cuts (1 where every fold kept its scale; FoldImageScore).
        self.fold_image_scores, self.image_score, self.image_score_reason = fold_image_scores(models)
        cuts = [score.scaled_cut for score in self.fold_image_scores]
        self.image_threshold = float(np.mean(cuts)) if all(v is not None for v in cuts) else None
        for model in models:
            model.set_precision(precision)
        self.precision = precision
        if first.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every batch has the plan's slice size: pick the fastest kernels once
        pp = self.plans.postprocessing
        self.postprocessing = pp if pp.enabled and postprocess else None
        self.preprocessor = CasePreprocessor(self.plans.preprocessing, self.modality, self.dataset.normal_reference)
        self.batch_size = batch_size or max(1, 2 * int(self.plans.batch_size))

    @classmethod
    def from_folder(cls, model_folder: str | Path, folds: list[int] | None = None, device: str | None = None,
                    checkpoint: str = CHECKPOINT_FINAL, postprocess: bool = True, batch_size: int | None = None,
                    precision: str = "auto") -> "AnomalyPredictor":
        """Every trained fold of a configuration folder (``$AUTOUAD_results/<dataset>/<method>__<plans>``),
        or the ``folds`` given; ``device`` None picks a GPU when torch sees one."""
        model_folder = Path(model_folder)
        if not model_folder.is_dir():
            raise PredictionError(f"{model_folder}: no such model folder")
        folds = list(folds) if folds else trained_folds(model_folder)
        if not folds:
            raise PredictionError(f"{model_folder}: no fold has a model ({MODEL_FILE}) yet")
        device = choose_device(device)
        try:
            models = [AnomalyModel.load(model_folder / f"fold_{f}", device, checkpoint) for f in folds]
        except ModelError as e:
            raise PredictionError(str(e)) from None
        return cls(models, postprocess, batch_size, precision, model_folder)

    # ---- what it is ------------------------------------------------------------------------------
    @property
    def plans(self):
        return self.models[0].plans

    @property
    def dataset(self):
        return self.models[0].dataset

    @property
    def modality(self) -> str:
        return self.dataset.modality

    @property
    def folds(self) -> list[int]:
        return [m.fold for m in self.models]

    @property
    def device(self) -> torch.device:
        return self.models[0].device

    # ---- one case --------------------------------------------------------------------------------
    def predict(self, image: sitk.Image | list[sitk.Image], roi: sitk.Image | None = None,
                name: str = "image") -> Prediction:
        """The map, masks and score of one case given as SimpleITK images (one per channel of the
        plan, in dataset.json's order; a single image for a single-channel plan) and an optional
        region-of-interest mask in the same geometry."""
        images = [image] if isinstance(image, sitk.Image) else list(image)
        case = CaseFiles(name, "test", [], None, None, role=None, label=None, patient=name)
        loaded = case_from_images(case, images, roi)
        if isinstance(loaded, list):
            raise PredictionError("; ".join(loaded))
        prepared = self.prepare_loaded(loaded, name, ["in memory"], None)
        return self.result(prepared, self.predict_fold_maps(prepared.slices))

    def prepare(self, case: InputCase) -> PreparedCase:
        """Read, check and preprocess a case's files; PredictionError naming the file on any problem."""
        loaded = load_input_case(case, len(self.dataset.channel_names))
        return self.prepare_loaded(loaded, case.case_id, [str(p) for p in case.images], case.ending)

    def prepare_loaded(self, loaded: LoadedCase, name: str, inputs: list[str], ending: str | None) -> PreparedCase:
        expected = len(self.dataset.channel_names)
        if loaded.data.shape[0] != expected:
            raise PredictionError(f"{inputs[0]}: case {name} has {loaded.data.shape[0]} channel(s), the model reads "
                                  f"{expected} ({', '.join(self.dataset.channel_names.values())})")
        trained_on_2d = self.plans.preprocessing.mode == "resize"   # 2D datasets are resized, volumes resampled
        if loaded.orientation.is_2d != trained_on_2d:
            what = "a 2D image" if loaded.orientation.is_2d else f"a 3D volume ({loaded.data.shape[1]} slices)"
            raise PredictionError(f"{inputs[0]}: {what}, but the model was trained on "
                                  f"{'2D images' if trained_on_2d else '3D volumes'}; refused")
        meta, slices, _, roi = self.preprocessor.run(loaded.case, loaded)
        foreground, _ = foreground_mask(loaded.data, loaded.roi, self.modality)
        return PreparedCase(name, inputs, ending, loaded.geometry, meta, slices,
                            slice_region(slices, roi, meta, self.modality),
                            np.ascontiguousarray(loaded.orientation.from_canonical(foreground)))

    def predict_fold_maps(self, slices: np.ndarray) -> list[np.ndarray]:
        """(S, C, H, W) -> each fold's (S, H, W) anomaly map."""
        return [model.anomaly_maps(slices, self.batch_size).astype(np.float32) for model in self.models]

    def predict_maps(self, slices: np.ndarray) -> np.ndarray:
        """(S, C, H, W) -> (S, H, W): the mean of the folds' anomaly maps, summed one fold at a time
        (for callers that need no fold's own map: two maps in memory, not one per fold)."""
        total = 0.0
        for model in self.models:
            total = total + model.anomaly_maps(slices, self.batch_size).astype(np.float64)
        return (total / len(self.models)).astype(np.float32)

    def masks(self, maps: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(masks before post-processing, masks after it or None) in slice space."""
        raw = anomalous(maps, self.threshold, self.side) & region
        if self.postprocessing is None:
            return raw, None
        pp = self.postprocessing
        restrict = pp.restrict_to_roi if pp.restrict_to_roi is not None else True
        return raw, postprocess_slices(raw, region if restrict else None, int(pp.kernel_size), pp.operations)

    def result(self, prepared: PreparedCase, fold_maps: list[np.ndarray]) -> Prediction:
        """The slice-space maps of a prepared case (one per fold), turned into its results in the
        file's geometry: the masks from the folds' mean map, the image score the mean of the folds'."""
        maps = mean_map(fold_maps)
        raw, post = self.masks(maps, prepared.region)

        def to_file(slices: np.ndarray) -> np.ndarray:
            return restore_to_file_array(slices.astype(np.float32), prepared.meta, order=1)

        def file_mask(slice_masks: np.ndarray) -> np.ndarray:
            # linear interpolation of the 0/1 slices, cut at one half: smooth edges at the file's resolution
            return ((to_file(slice_masks) >= 0.5) & prepared.file_region).astype(np.uint8)

        def image(array: np.ndarray) -> sitk.Image:
            return prepared.geometry.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(array)))

        final = file_mask(post if post is not None else raw)
        score = folds_scaled_image_score(fold_maps, prepared.region, self.fold_image_scores)
        return Prediction(
            name=prepared.name, map=image((to_file(maps) * prepared.file_region).astype(np.float32)),
            mask=image(final), mask_without_postprocessing=None if post is None else image(file_mask(raw)),
            region=image(prepared.file_region.astype(np.uint8)), score=score,
            decision=None if self.image_threshold is None else int(score >= self.image_threshold),
            slices=int(len(maps)), anomalous_voxels=int(final.sum()))

    def write_case(self, prepared: PreparedCase, prediction: Prediction, output: Path, save_maps: bool) -> dict:
        return write_prediction(prediction, prepared.inputs, prepared.ending, output, save_maps)

    # ---- a folder ----------------------------------------------------------------------------------
    def prepared_chunks(self, cases: list[InputCase], chunk_slices: int, failed: dict):
        """(prepared cases, names of skipped cases) in groups of about ``chunk_slices`` slices, in
        input order, made on a background thread one group ahead: reading and preprocessing the next
        cases overlaps the forward passes of the current ones, so the model does not wait for files.
        A case that cannot be prepared lands in ``failed`` (and the others go on)."""
        chunks: queue.Queue = queue.Queue(maxsize=1)  # one group waiting while another is predicted
        stop = threading.Event()
        errors: list[BaseException] = []

        def produce() -> None:
            prepared, skipped, size = [], [], 0
            try:
                for case in cases:
                    if stop.is_set():
                        return
                    try:
                        prepared.append(self.prepare(case))
                        size += len(prepared[-1].slices)
                    except Exception as e:  # any unreadable or unfit file: report it, go on with the others
                        failed[case.case_id] = str(e).splitlines()[0] if str(e) else type(e).__name__
                        skipped.append(case.case_id)
                    if size >= chunk_slices:
                        chunks.put((prepared, skipped))
                        prepared, skipped, size = [], [], 0
                chunks.put((prepared, skipped))
            except BaseException as e:  # a bug, not a bad file: raised again where the chunks are read
                errors.append(e)
            finally:
                chunks.put(None)

        producer = threading.Thread(target=produce, name="autouad-prepare", daemon=True)
        producer.start()
        try:
            while (group := chunks.get()) is not None:
                yield group
            if errors:
                raise errors[0]
        finally:
            stop.set()
            while producer.is_alive():  # unblock a producer waiting on a full queue
                try:
                    chunks.get(timeout=0.1)
                except queue.Empty:
                    pass
            producer.join()

    def predict_folder(self, input_folder: Path, output_folder: Path, roi_folder: Path | None = None,
                       save_maps: bool = False, chunk_slices: int = 256, resume: bool = False) -> dict:
        """Every case in ``input_folder`` (autouad.inference.inputs names them), written to
        ``output_folder``; returns the run record, also written as predictions.json."""
        check_folders(input_folder, output_folder, roi_folder)
        input_folder, output_folder = Path(input_folder).resolve(), Path(output_folder).resolve()
        notes: dict[str, str] = {}
        cases, failed = find_input_cases(input_folder, self.dataset.channel_names, roi_folder,
                                         self.plans.input_channels, notes)
        if not cases and not failed:
            raise PredictionError(f"{input_folder}: no images with a supported ending")
        for note in notes.values():
            print(f"note: {note}", file=sys.stderr)
        record = self.predict_cases(cases, output_folder, save_maps, failed, input_folder, roi_folder, chunk_slices,
                                    resume)
        if notes:
            record["notes"] = notes
            save_json(record, Path(output_folder).resolve() / PREDICTIONS_FILE)
        return record

    def predict_cases(self, cases: list[InputCase], output_folder: Path, save_maps: bool = False,
                      failed: dict[str, str] | None = None, input_folder: Path | None = None,
                      roi_folder: Path | None = None, chunk_slices: int = 256, resume: bool = False) -> dict:
        """The given cases' files, predicted and written to ``output_folder``; ``failed`` holds
        problems found before (reported with the run's own). The run record is rewritten (atomically)
        after every group of cases, so a run killed halfway leaves whole files and a record of them;
        ``resume`` predicts only the cases that record does not hold yet."""
        failed = dict(failed or {})
        output_folder = Path(output_folder).resolve()
        for problem in failed.values():
            print(f"skipped: {problem}", file=sys.stderr)
        output_folder.mkdir(parents=True, exist_ok=True)
        if resume:
            remove_stale_temporaries(output_folder)  # half-written files of a killed run
        done: dict[str, dict] = already_predicted(output_folder) if resume else {}
        if done:
            print(f"continuing: {len(done)} case(s) already predicted in {output_folder}", file=sys.stderr)
            cases = [c for c in cases if c.case_id not in done]
        start = time.time()
        timing = {"model_seconds": 0.0, "waiting_for_data_seconds": 0.0}
        with progress(total=len(cases), desc="predicting", unit="case", file=sys.stdout, dynamic_ncols=True) as bar:
            chunks = self.prepared_chunks(cases, chunk_slices, failed)
            while True:
                waited = time.perf_counter()
                group = next(chunks, None)
                timing["waiting_for_data_seconds"] += time.perf_counter() - waited
                if group is None:
                    break
                prepared, skipped = group
                for case_id in skipped:
                    bar.write(f"skipped: {failed[case_id]}", file=sys.stderr)
                if prepared:
                    computing = time.perf_counter()
                    fold_maps = self.predict_fold_maps(np.concatenate([p.slices for p in prepared]))
                    timing["model_seconds"] += time.perf_counter() - computing
                    offset = 0
                    for p in prepared:
                        n = len(p.slices)
                        prediction = self.result(p, [maps[offset:offset + n] for maps in fold_maps])
                        done[p.name] = self.write_case(p, prediction, output_folder, save_maps)
                        offset += n
                    partial = self.run_record(input_folder, roi_folder, save_maps, done, failed, time.time() - start)
                    save_json(dict(partial, complete=False), output_folder / PREDICTIONS_FILE)
                bar.update(len(prepared) + len(skipped))
        if self.image_threshold is not None and done:
            write_scores(output_folder / SCORES_FILE, done, self.image_threshold)
        record = self.run_record(input_folder, roi_folder, save_maps, done, failed, time.time() - start)
        record.update({k: round(v, 2) for k, v in timing.items()}, complete=True)
        save_json(record, output_folder / PREDICTIONS_FILE)
        return record

    def run_record(self, input_folder: Path, roi_folder, save_maps: bool, done: dict, failed: dict,
                   seconds: float) -> dict:
        return {"model_folder": str(self.source), "dataset": self.plans.dataset,
                "method": self.plans.method, "plans_name": self.plans.plans_name, "folds": self.folds,
                "device": str(self.device), "precision": self.precision,
                "input_folder": None if input_folder is None else str(input_folder),
                "roi_folder": None if roi_folder is None else str(roi_folder),
                "map": self.models[0].map_name, "anomalous_side": self.side,
                "threshold": self.threshold,
                "fold_thresholds": {m.fold: {"strategy": m.threshold.strategy, "value": m.threshold.value,
                                             **({"percentile": m.threshold.details["percentile"]}
                                                if "percentile" in m.threshold.details else {})}
                                    for m in self.models},
                "image_threshold": self.image_threshold,
                # the score of a case: this reduction of its map inside the region, signed so that higher
                # is more anomalous (autouad.selection.image_scores), each fold's on its normal scale
                "image_score": self.image_score, "image_score_reason": self.image_score_reason,
                "fold_image_scores": {m.fold: vars(score) for m, score in zip(self.models, self.fold_image_scores)},
                "postprocessing": None if self.postprocessing is None else plans_to_dict(self.postprocessing),
                "save_maps": save_maps, "seconds": round(seconds, 2),
                "num_predicted": len(done), "num_failed": len(failed), "cases": done, "failed": failed}
