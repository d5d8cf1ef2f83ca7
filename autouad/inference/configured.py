"""Prediction with the configuration find_best_configuration chose (inference_instructions.json).

The chosen configuration may be a trained method with another threshold source or post-processing
than its plans', the non-learned intensity baseline, the pixel kNN baseline, or an average of
several of them. Each member's map is brought into the raw case's canonical space (where
find_best_configuration compared them), combined, cut by the configuration's threshold source
with the parameters fitted on the validation folds, post-processed slice by slice in the raw
voxels, and written in the input's geometry, in the layout of autouad_predict. The run record
(predictions.json) names the configuration and repeats the instructions' warnings.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autouad.dataset.raw_dataset import CaseFiles
from autouad.dataset.validation import LoadedCase, case_from_images
from autouad.evaluation.baselines import knn_scores, shrink
from autouad.inference.inputs import find_input_cases
from autouad.inference.outputs import PREDICTIONS_FILE, SCORES_FILE, write_scores
from autouad.inference.predictor import (AnomalyPredictor, Prediction, PredictionError, already_predicted,
                                         check_folders, folds_mean_image_score, load_input_case, write_prediction)
from autouad.preprocessing.foreground import foreground_mask
from autouad.preprocessing.preprocessor import restore_to_canonical
from autouad.postprocessing.morphology import postprocess_cropped
from autouad.selection.configurations import HISTOGRAM_FALLBACK_Z, case_statistics
from autouad.selection.evidence import INTENSITY, KNN_KIND, intensity_values, robust_z
from autouad.utils.files import load_json, remove_stale_temporaries, save_json
from autouad.utils.progress import progress


class ConfiguredPredictor:
    def __init__(self, instructions: dict, device: str | None = None, raw_dataset_folder: Path | None = None,
                 source: Path | None = None):
        self.instructions = instructions
        self.chosen = instructions["chosen"]
        self.task = instructions["task"]
        self.source = source
        self.members = self.chosen["members"]
        base = Path(source).parent if source is not None else Path(".")
        self.predictors = {name: AnomalyPredictor.from_folder(base / info["model_folder"], instructions["folds"],
                                                              device)
                           for name, info in self.members.items() if info["kind"] == "method"}
        from autouad.model import DatasetFacts
        self.dataset = DatasetFacts(**instructions["dataset_facts"])
        self.knn_reference = None
        if any(info["kind"] == KNN_KIND for info in self.members.values()):
            self.knn_reference = self._knn_reference(raw_dataset_folder)

    @classmethod
    def from_instructions(cls, path: Path, device: str | None = None, raw_dataset_folder: Path | None = None):
        return cls(load_json(path), device, raw_dataset_folder, Path(path))

    @property
    def warnings(self) -> list[str]:
        return list(self.instructions.get("warnings") or [])

    @staticmethod
    def _knn_reference(raw_dataset_folder: Path | None) -> np.ndarray:
        from autouad.dataset.raw_dataset import load_raw_dataset
        from autouad.utils.images import read_image
        if raw_dataset_folder is None:
            raise PredictionError("the pixel kNN baseline needs the raw dataset's normal training images")
        normal = [c for c in load_raw_dataset(raw_dataset_folder).training_cases() if c.role == "normal"]
        return np.stack([shrink(np.squeeze(read_image(c.images[0])[0])).ravel() for c in normal])

    def required_channels(self) -> list[int]:
        """The channels the configuration reads: its models' input channels and its intensity channels."""
        needed: set[int] = set()
        for name, info in self.members.items():
            if info["kind"] == "method":
                needed |= set(self.predictors[name].plans.input_channels)
            elif info["kind"] == INTENSITY:
                needed |= ({info["channel"]} if info["channel"] is not None else set(range(len(self.dataset.channel_names))))
            else:
                needed.add(0)
        return sorted(needed)

    # ---- one case ----------------------------------------------------------------------------------------
    def predict(self, image: sitk.Image | list[sitk.Image], roi: sitk.Image | None = None,
                name: str = "image") -> Prediction:
        images = [image] if isinstance(image, sitk.Image) else list(image)
        case = CaseFiles(name, "test", [], None, None, role=None, label=None, patient=name)
        loaded = case_from_images(case, images, roi)
        if isinstance(loaded, list):
            raise PredictionError("; ".join(loaded))
        return self.predict_loaded(loaded, name)

    def predict_loaded(self, loaded: LoadedCase, name: str) -> Prediction:
        region = loaded.roi if loaded.roi is not None else foreground_mask(loaded.data, None, self.dataset.modality)[0]
        if self.task == "image":
            return self._image_prediction(loaded, region, name)
        values = {}
        for member, info in self.members.items():
            if info["kind"] == "method":
                predictor = self.predictors[member]
                prepared = predictor.prepare_loaded(loaded, name, ["in memory"], None)
                canonical = restore_to_canonical(predictor.predict_maps(prepared.slices), prepared.meta, order=1)
                sign = -1.0 if info["anomalous_side"] == "below" else 1.0
                values[member] = (sign * canonical[region]).astype(np.float32)
            elif info["kind"] == INTENSITY:
                values[member] = intensity_values(info["channel"], info["sign"], info["signs"], loaded.data, region)
            else:
                raise PredictionError(f"a {info['kind']} member cannot make a pixel map")
        combined = (np.mean([robust_z(v) for v in values.values()], axis=0) if len(values) > 1
                    else next(iter(values.values())))
        cut = self._cut(combined)
        raw = np.zeros(region.shape, bool)
        raw[region] = combined >= cut
        kernel = int(self.chosen["postprocessing"]["kernel"] or 0)
        final = postprocess_cropped(raw, region, kernel) if kernel else raw
        full = np.zeros(region.shape, np.float32)
        full[region] = combined
        return self._result(loaded, name, full, final, raw if kernel else None, region,
                            score=float(np.mean(combined)) if combined.size else 0.0, decision=None)

    def _cut(self, values: np.ndarray) -> float:
        threshold = self.chosen["threshold"]
        source = threshold["source"]
        if source in ("calibrated", "normal_percentile"):
            return float(threshold["value"])
        median, mad = case_statistics(values)
        if source == "case_z":
            return median + float(threshold["z"]) * mad
        from autouad.calibration.histogram_peaks import DEFAULT_BINS
        from autouad.calibration.thresholds import CalibrationError, histogram_peak_threshold
        [info] = self.members.values()
        lo, hi = info["value_range"]
        try:
            return histogram_peak_threshold(np.histogram(values, DEFAULT_BINS, (lo, hi))[0], (lo, hi), "rightmost",
                                            "valley")[0]
        except CalibrationError:
            return median + HISTOGRAM_FALLBACK_Z * mad

    def _image_prediction(self, loaded: LoadedCase, region: np.ndarray, name: str) -> Prediction:
        scores, shown = {}, None
        for member, info in self.members.items():
            if info["kind"] == "method":
                predictor = self.predictors[member]
                prepared = predictor.prepare_loaded(loaded, name, ["in memory"], None)
                fold_maps = predictor.predict_fold_maps(prepared.slices)
                # the mean of the folds' scores: the scale the member's validation scores had
                scores[member] = folds_mean_image_score(fold_maps, prepared.region, info.get("image_score") or "mean",
                                                        info["anomalous_side"])
                if shown is None:
                    shown = predictor.result(prepared, fold_maps)
            elif info["kind"] == KNN_KIND:
                query = shrink(np.squeeze(loaded.orientation.from_canonical(loaded.data[0]))).ravel()[None]
                scores[member] = float(knn_scores(self.knn_reference, query, 1)[0])
        norms = self.chosen.get("normalisation")
        score = (float(np.mean([(scores[m] - norms[m]["mean"]) / norms[m]["std"] for m in scores])) if norms
                 else next(iter(scores.values())))
        decision = int(score >= float(self.chosen["image_threshold"]["value"]))
        if shown is not None:
            shown.score, shown.decision = score, decision
            return shown
        empty = np.zeros(region.shape, np.float32)
        return self._result(loaded, name, empty, empty > 0, None, region, score, decision)

    @staticmethod
    def _result(loaded: LoadedCase, name: str, values: np.ndarray, final: np.ndarray, raw: np.ndarray | None,
                region: np.ndarray, score: float, decision: int | None) -> Prediction:
        back = loaded.orientation.from_canonical

        def image(array: np.ndarray) -> sitk.Image:
            return loaded.geometry.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(back(array))))
        return Prediction(name=name, map=image(values.astype(np.float32)), mask=image(final.astype(np.uint8)),
                          mask_without_postprocessing=None if raw is None else image(raw.astype(np.uint8)),
                          region=image(region.astype(np.uint8)), score=score, decision=decision,
                          slices=int(region.shape[0]), anomalous_voxels=int(final.sum()))

    # ---- a folder ------------------------------------------------------------------------------------------
    def predict_folder(self, input_folder: Path, output_folder: Path, roi_folder: Path | None = None,
                       save_maps: bool = False, resume: bool = False) -> dict:
        check_folders(input_folder, output_folder, roi_folder)
        input_folder, output_folder = Path(input_folder).resolve(), Path(output_folder).resolve()
        notes: dict[str, str] = {}
        cases, failed = find_input_cases(input_folder, self.dataset.channel_names, roi_folder, self.required_channels(),
                                         notes)
        for note in notes.values():
            print(f"note: {note}", file=sys.stderr)
        if not cases and not failed:
            raise PredictionError(f"{input_folder}: no images with a supported ending")
        for warning in self.warnings:
            print(f"WARNING: {warning}", file=sys.stderr)
        output_folder.mkdir(parents=True, exist_ok=True)
        if resume:
            remove_stale_temporaries(output_folder)  # half-written files of a killed run
        done, start = (already_predicted(output_folder) if resume else {}), time.time()
        cases = [c for c in cases if c.case_id not in done]
        for case in progress(cases, desc="predicting", unit="case", file=sys.stdout, dynamic_ncols=True):
            try:
                prediction = self.predict_loaded(load_input_case(case, len(self.dataset.channel_names)), case.case_id)
            except Exception as e:  # one unreadable or unfit case: report it, go on with the others
                failed[case.case_id] = str(e).splitlines()[0] if str(e) else type(e).__name__
                print(f"skipped: {failed[case.case_id]}", file=sys.stderr)
                continue
            done[case.case_id] = write_prediction(prediction, [str(p) for p in case.images], case.ending,
                                                  output_folder, save_maps)
            save_json({"configuration": self.chosen["configuration"], "complete": False, "cases": done,
                       "failed": failed}, output_folder / PREDICTIONS_FILE)
        threshold = self.chosen.get("image_threshold", {}).get("value")
        if self.task == "image" and done:
            write_scores(output_folder / SCORES_FILE, done, float(threshold))
        record = {"configuration": self.chosen["configuration"], "instructions": None if self.source is None
                  else str(self.source), "dataset": self.instructions["dataset"], "task": self.task,
                  "folds": self.instructions["folds"], "members": self.members,
                  "threshold": self.chosen.get("threshold"), "postprocessing": self.chosen.get("postprocessing"),
                  "image_threshold": threshold, "anomalous_side": "above",
                  "map": "the configuration's map, signed so that higher is more anomalous",
                  "warnings": self.warnings, "input_folder": str(input_folder),
                  "roi_folder": None if roi_folder is None else str(roi_folder), "save_maps": save_maps,
                  "seconds": round(time.time() - start, 2), "num_predicted": len(done), "num_failed": len(failed),
                  "cases": done, "failed": failed, "complete": True, **({"notes": notes} if notes else {})}
        save_json(record, output_folder / PREDICTIONS_FILE)
        return record
