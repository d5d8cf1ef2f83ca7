"""Prediction: images in, anomaly masks (and maps, and image scores) out, in the inputs' geometry.

Per case: read and check the files, preprocess exactly as the plan preprocessed the training data,
run every chosen fold's model on the slices and average their maps, cut the mean map at the mean
of the folds' calibrated thresholds (threshold.json, found on each fold's validation data), post-
process as the plan says, and undo cropping, resampling and reorientation so that every output has
its input's shape, spacing, origin and direction.

Slices of several cases go through the networks together (a folder of 2D X-rays is one batch of
many images, not one forward pass per image), in inference mode, on the CPU or a GPU.

The output folder's layout is in autouad.inference.outputs. Masks of 2D images are PNG and their maps TIFF (JPEG would alter a mask, PNG cannot hold floats);
.mhd inputs give .mha outputs (one self-contained file).
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from autouad.calibration.thresholds import THRESHOLD_FILE, anomalous, image_scores, slice_region
from autouad.dataset.validation import load_case
from autouad.inference.inputs import InputCase, find_input_cases
from autouad.inference.outputs import (MAPS_FOLDER, PREDICTIONS_FILE, ROIS_FOLDER, SCORES_FILE,
                                       WITHOUT_POSTPROCESSING_FOLDER, output_endings, write_image, write_scores)
from autouad.methods import trainer_class
from autouad.postprocessing.morphology import postprocess_slices
from autouad.preprocessing.foreground import foreground_mask
from autouad.preprocessing.preprocessor import CasePreprocessor, restore_to_file_array
from autouad.training.base_trainer import CHECKPOINT_FINAL, LOG_FILE
from autouad.utils.files import load_json, save_json
from autouad.utils.images import Geometry



class PredictionError(Exception):
    """The model or the command cannot predict; one line saying why."""


@dataclass
class FoldModel:
    fold: int
    trainer: object  # an AutoUADTrainer holding only its networks
    threshold: dict  # the fold's threshold.json


@dataclass
class PreparedCase:
    """A case read and preprocessed, waiting for its maps."""
    case: InputCase
    geometry: Geometry
    meta: dict
    slices: np.ndarray            # (S, C, H, W) preprocessed
    region: np.ndarray            # (S, H, W) bool, in slice space
    file_region: np.ndarray       # bool, in the file's array shape


def check_folders(input_folder: Path, output_folder: Path, roi_folder: Path | None) -> None:
    """autouad never writes among its inputs: the output may not be, or lie in, an input folder."""
    output = Path(output_folder).resolve()
    for what, folder in (("input", input_folder), ("ROI", roi_folder)):
        if folder is not None and Path(folder).resolve() in (output, *output.parents):
            raise PredictionError(f"{output_folder}: the output must not lie in the {what} folder {folder}; "
                                  f"autouad never writes among the inputs")


def trained_folds(model_folder: Path) -> list[int]:
    return sorted(int(p.parent.name.split("_")[1]) for p in model_folder.glob(f"fold_*/{CHECKPOINT_FINAL}"))


def load_fold_model(model_folder: Path, plans: dict, fold: int, device: torch.device, checkpoint: str) -> FoldModel:
    fold_folder = model_folder / f"fold_{fold}"
    checkpoint_path = fold_folder / checkpoint
    if not checkpoint_path.is_file():
        raise PredictionError(f"{checkpoint_path}: fold {fold} has no {checkpoint}; train it with "
                              f"autouad_train {plans['dataset']} {fold} -m {plans['method']}")
    threshold_path = fold_folder / THRESHOLD_FILE
    if not threshold_path.is_file():
        raise PredictionError(f"{threshold_path}: fold {fold} is not calibrated; run autouad_train "
                              f"{plans['dataset']} {fold} -m {plans['method']} --val")
    log = fold_folder / LOG_FILE
    dotted = load_json(log).get("trainer") if log.is_file() else None  # a user's own trainer subclass too
    cls = trainer_class(plans["method"], dotted)
    return FoldModel(fold, cls.for_inference(plans, fold, checkpoint_path, device), load_json(threshold_path))


class AnomalyPredictor:
    """The trained folds of one model folder (``$AUTOUAD_results/<dataset>/<method>__<plans>``)."""

    def __init__(self, model_folder: Path, folds: list[int] | None = None, device: str = "cpu",
                 checkpoint: str = CHECKPOINT_FINAL, postprocess: bool = True, batch_size: int | None = None,
                 precision: str = "auto"):
        self.model_folder = Path(model_folder)
        for name in ("plans.json", "dataset.json"):
            if not (self.model_folder / name).is_file():
                raise PredictionError(f"{self.model_folder / name}: missing; is this a trained model folder?")
        self.plans = load_json(self.model_folder / "plans.json")
        self.dataset_meta = load_json(self.model_folder / "dataset.json")
        self.modality = self.dataset_meta["modality"]
        self.device = torch.device(device)
        available = trained_folds(self.model_folder)
        self.folds = list(folds) if folds else available
        if not self.folds:
            raise PredictionError(f"{self.model_folder}: no fold has {CHECKPOINT_FINAL} yet")
        self.models = [load_fold_model(self.model_folder, self.plans, f, self.device, checkpoint) for f in self.folds]
        for model in self.models:
            model.trainer.inference_precision = precision
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every batch has the plan's slice size: pick the fastest kernels once
        sides = {m.threshold["anomalous_side"] for m in self.models}
        if len(sides) > 1:
            raise PredictionError(f"{self.model_folder}: the folds disagree on the anomalous side ({sorted(sides)})")
        self.side = sides.pop()
        # One cut for the fold-averaged map: the mean of the folds' cuts (identical for one fold).
        self.threshold = float(np.mean([m.threshold["value"] for m in self.models]))
        image = [m.threshold.get("image") for m in self.models]
        self.image_threshold = float(np.mean([t["value"] for t in image])) if all(image) else None
        pp = self.plans.get("postprocessing") or {}
        self.postprocessing = pp if pp.get("enabled") and postprocess else None
        self.preprocessor = CasePreprocessor(self.plans["preprocessing"], self.modality,
                                             self.dataset_meta.get("normal_reference", "cases"))
        self.batch_size = batch_size or max(1, 2 * int(self.plans["batch_size"]))

    # ---- one case at a time ------------------------------------------------------------------------
    def prepare(self, case: InputCase) -> PreparedCase:
        """Read, check and preprocess; raises PredictionError naming the file on any problem."""
        files = case.as_case_files()
        loaded = load_case(files)
        if isinstance(loaded, list):
            raise PredictionError("; ".join(loaded))
        meta, slices, _, roi = self.preprocessor.run(files, loaded)
        foreground, _ = foreground_mask(loaded.data, loaded.roi, self.modality)
        return PreparedCase(case, loaded.geometry, meta, slices, slice_region(slices, roi, meta, self.modality),
                            np.ascontiguousarray(loaded.orientation.from_canonical(foreground)))

    def predict_maps(self, slices: np.ndarray) -> np.ndarray:
        """(S, C, H, W) -> (S, H, W): the mean of the folds' anomaly maps."""
        total = None
        for model in self.models:
            maps = model.trainer.predict_slices(slices, self.batch_size).astype(np.float64)
            total = maps if total is None else total + maps
        return (total / len(self.models)).astype(np.float32)

    def masks(self, maps: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(masks before post-processing, masks after it or None) in slice space."""
        raw = anomalous(maps, self.threshold, self.side) & region
        if self.postprocessing is None:
            return raw, None
        pp = self.postprocessing
        return raw, postprocess_slices(raw, region if pp.get("restrict_to_roi", True) else None,
                                       int(pp["kernel_size"]), pp["operations"])

    def to_file(self, prepared: PreparedCase, slices: np.ndarray, order: int) -> np.ndarray:
        return restore_to_file_array(slices.astype(np.float32), prepared.meta, order=order)

    def write_case(self, prepared: PreparedCase, maps: np.ndarray, output: Path, save_maps: bool) -> dict:
        mask_ending, map_ending = output_endings(prepared.case.ending)
        name = prepared.case.case_id
        raw, post = self.masks(maps, prepared.region)
        written = {}

        def file_mask(slice_masks: np.ndarray) -> np.ndarray:
            # linear interpolation of the 0/1 slices, cut at one half: smooth edges at the file's resolution
            return ((self.to_file(prepared, slice_masks, order=1) >= 0.5) & prepared.file_region).astype(np.uint8)

        final = file_mask(post if post is not None else raw)
        write_image(final, prepared.geometry, output / f"{name}{mask_ending}")
        written["mask"] = f"{name}{mask_ending}"
        if post is not None:
            write_image(file_mask(raw), prepared.geometry, output / WITHOUT_POSTPROCESSING_FOLDER / f"{name}{mask_ending}")
            written["mask_without_postprocessing"] = f"{WITHOUT_POSTPROCESSING_FOLDER}/{name}{mask_ending}"
        if save_maps:
            file_map = self.to_file(prepared, maps, order=1) * prepared.file_region
            write_image(file_map.astype(np.float32), prepared.geometry, output / MAPS_FOLDER / f"{name}{map_ending}")
            write_image(prepared.file_region.astype(np.uint8), prepared.geometry,
                        output / ROIS_FOLDER / f"{name}{mask_ending}")
            written.update(map=f"{MAPS_FOLDER}/{name}{map_ending}", roi=f"{ROIS_FOLDER}/{name}{mask_ending}")
        record = {"inputs": [str(p) for p in prepared.case.images], "outputs": written,
                  "anomalous_voxels": int(final.sum()), "slices": int(len(maps))}
        if self.image_threshold is not None:
            score = float(image_scores(maps, prepared.region, self.side).mean()) if len(maps) else 0.0
            record.update(score=score, decision=int(score >= self.image_threshold))
        return record

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
                       save_maps: bool = False, chunk_slices: int = 256) -> dict:
        check_folders(input_folder, output_folder, roi_folder)
        input_folder, output_folder = Path(input_folder).resolve(), Path(output_folder).resolve()
        cases, failed = find_input_cases(input_folder, self.dataset_meta["channel_names"], roi_folder)
        if not cases and not failed:
            raise PredictionError(f"{input_folder}: no images with a supported ending")
        for problem in failed.values():
            print(f"skipped: {problem}", file=sys.stderr)
        output_folder.mkdir(parents=True, exist_ok=True)
        done: dict[str, dict] = {}
        start = time.time()
        timing = {"model_seconds": 0.0, "waiting_for_data_seconds": 0.0}
        with tqdm(total=len(cases), desc="predicting", unit="case", file=sys.stdout, dynamic_ncols=True) as bar:
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
                    maps = self.predict_maps(np.concatenate([p.slices for p in prepared]))
                    timing["model_seconds"] += time.perf_counter() - computing
                    offset = 0
                    for p in prepared:
                        n = len(p.slices)
                        done[p.case.case_id] = self.write_case(p, maps[offset:offset + n], output_folder, save_maps)
                        offset += n
                bar.update(len(prepared) + len(skipped))
        if self.image_threshold is not None and done:
            write_scores(output_folder / SCORES_FILE, done, self.image_threshold)
        record = self.run_record(input_folder, roi_folder, save_maps, done, failed, time.time() - start)
        record.update({k: round(v, 2) for k, v in timing.items()})
        save_json(record, output_folder / PREDICTIONS_FILE)
        return record

    def run_record(self, input_folder: Path, roi_folder, save_maps: bool, done: dict, failed: dict,
                   seconds: float) -> dict:
        return {"model_folder": str(self.model_folder), "dataset": self.plans["dataset"],
                "method": self.plans["method"], "plans_name": self.plans["plans_name"], "folds": self.folds,
                "device": str(self.device), "precision": self.models[0].trainer.inference_precision,
                "input_folder": str(input_folder),
                "roi_folder": None if roi_folder is None else str(roi_folder),
                "map": self.models[0].trainer.map_name, "anomalous_side": self.side,
                "threshold": self.threshold,
                "fold_thresholds": {m.fold: {k: m.threshold.get(k) for k in ("strategy", "value", "percentile")
                                             if k in m.threshold} for m in self.models},
                "image_threshold": self.image_threshold,
                "image_score": None if self.image_threshold is None else
                "mean of the map inside the region, signed so that higher is more anomalous",
                "postprocessing": self.postprocessing, "save_maps": save_maps, "seconds": round(seconds, 2),
                "num_predicted": len(done), "num_failed": len(failed), "cases": done, "failed": failed}
