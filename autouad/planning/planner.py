"""The planner: from the dataset fingerprint to plans.json, one reasoned decision at a time.

Every decision is a method ``choose_<what>`` that returns ``(value, reason)``; subclass the planner
and override one of them to change that decision only:

    class MyPlanner(AutoUADPlanner):
        def choose_postprocessing(self):
            value, _ = super().choose_postprocessing()
            return dict(value, kernel_size=7), "7x7 suits our lesions"

and select it with ``autouad_plan_and_preprocess -d 3 --planner mypackage.MyPlanner``.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from autouad import __version__
from autouad.methods.registry import DataSituation, UnknownMethodError, candidates_for, get_method
from autouad.planning.method_plans import load_method_plans
from autouad.planning.plans import Plans, anomaly_intensity_sign, keeps_best_proxy_by_default
from autouad.planning.plans_files import DEFAULT_PLANS_NAME
from autouad.utils.files import load_json, save_json
from autouad.utils.imports import import_subclass

SCHEDULES = ("paper", "fast", "smoke")
# the largest share of the training masks' voxels that the plan's post-processing may erase
MAX_POSTPROCESSING_LOSS = 0.10
SPLIT_SEED = 12345


class PlanningError(Exception):
    """The data cannot support what was asked; the message says why and what to change."""


class AutoUADPlanner:
    plans_name = DEFAULT_PLANS_NAME

    def __init__(self, fingerprint: dict, preprocessed_folder: str | Path, method: str | None = None,
                 schedule: str | None = None, num_folds: int | None = None, memory_budget_gb: float = 8.0,
                 plans_name: str | None = None, all_channels: bool = False):
        self.fingerprint = fingerprint
        self.summary = fingerprint["summary"]
        self.preprocessed_folder = Path(preprocessed_folder)
        self.requested = {"method": method, "schedule": schedule, "num_folds": num_folds,
                          "all_channels": all_channels or None}
        self.memory_budget_gb = memory_budget_gb
        if plans_name:
            self.plans_name = plans_name
        if schedule is not None and schedule not in SCHEDULES:
            raise PlanningError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if method is not None:
            try:
                get_method(method)
            except UnknownMethodError as e:
                raise PlanningError(str(e)) from None
        self.method: str | None = None
        self.settings: dict = {}
        self.schedule_name: str | None = None

    # -- the data situation ------------------------------------------------------------------------
    @property
    def modality(self) -> str:
        return self.fingerprint["modality"]

    @property
    def is_2d_dataset(self) -> bool:
        return self.summary["dimension"] == 2

    @property
    def has_reference(self) -> bool:
        return self.summary["num_reference_slices"] > 0

    @property
    def has_unlabeled(self) -> bool:
        return self.summary["num_unlabeled_cases"] > 0

    @property
    def has_masks(self) -> bool:
        return self.summary["num_cases_with_masks"] > 0

    # -- decisions ---------------------------------------------------------------------------------
    def choose_candidates(self) -> tuple[list[dict], str]:
        """Every registered method the data can train, those of their paper's setting first, each with
        the reason it is listed (autouad.methods.registry.candidates_for)."""
        situation = DataSituation.of(self.fingerprint)
        if not situation.has_reference:
            raise PlanningError(
                "no normal reference: mark normal cases with role 'normal' in dataset.json, or give masks and set "
                "normal_reference to 'slices_without_anomaly'; every method here learns what normal looks like")
        listed = [{"method": spec.name, "reason": reason} for spec, reason in candidates_for(situation)]
        if not listed:
            raise PlanningError("no registered method can train on this data situation")
        names = self.fingerprint["channel_names"]
        first = load_method_plans(listed[0]["method"])
        if len(names) > first.get("input", {}).get("channels", 1):
            # the papers read one sequence; several may help: the first method on every channel too,
            # and find_best_configuration decides out of fold
            listed.insert(1, {"method": listed[0]["method"], "all_channels": True,
                              "reason": f"{listed[0]['method']} on every channel ({', '.join(names)}) instead of its "
                                        f"paper's one: decided out of fold"})
        return listed, "the registered methods whose needs the data meets, their paper's setting first"

    def choose_method(self) -> tuple[str, str]:
        if self.requested["method"]:
            return self.requested["method"], "chosen on the command line (-m)"
        first = self.plans["candidates"][0]
        return first["method"], first["reason"]

    def choose_schedule(self) -> tuple[dict, str]:
        if self.requested["schedule"]:
            name, reason = self.requested["schedule"], "chosen on the command line (--schedule)"
        else:
            try:
                import torch
                gpu = torch.cuda.is_available()
            except ImportError:  # pragma: no cover - torch is a dependency
                gpu = False
            name = "paper" if gpu else "fast"
            reason = ("a CUDA GPU is available: the paper's schedule" if gpu else
                      "no GPU here: the 'fast' schedule, scaled to train a fold in under an hour on a CPU; "
                      "use --schedule paper on a GPU")
        self.schedule_name = name
        schedule = dict(self.settings["schedules"][name], name=name)
        if keeps_best_proxy_by_default(schedule, self.plans["task"]):
            schedule["keep_checkpoint"] = "best_proxy"
            reason += ("; keep_checkpoint best_proxy: a budgeted schedule keeps the networks of the curve point "
                       "that finds pasted synthetic blobs best (label-free), not the last one")
        return schedule, reason

    def choose_input_channels(self) -> tuple[list[int], str]:
        names = self.fingerprint["channel_names"]
        wanted = self.settings.get("input", {}).get("channels", 1)
        if len(names) <= wanted:
            return list(range(len(names))), "every channel the dataset has"
        if self.requested["all_channels"]:
            return list(range(len(names))), (f"every channel ({', '.join(names)}), asked for: whether channels beyond "
                                             f"the paper's {wanted} help is decided out of fold by "
                                             f"find_best_configuration")
        polarity = self.summary.get("anomaly_polarity") or {}
        if polarity:
            best = max(names, key=lambda n: abs(polarity.get(n, {}).get("median_contrast", 0.0)))
            c = polarity[best]["median_contrast"]
            return [names.index(best)], (f"{self.method} takes {wanted} channel; {best} shows the anomalies with the "
                                         f"strongest contrast in the masks ({c:+.2f} foreground SD)")
        return [0], f"{self.method} takes {wanted} channel; no masks to compare channels, so the first ({names[0]})"

    def choose_normalization(self) -> tuple[dict, str]:
        per_modality = self.settings["normalization"]
        scheme = dict(per_modality[self.modality])
        note = scheme.pop("note", None) or per_modality.get("note", "")
        reason = f"{self.method}'s paper setting for {self.modality}: {scheme['scheme']}"
        if scheme.get("histogram_equalization"):
            reason += " with per-slice histogram equalisation"
        if self.modality == "X-ray" and scheme["scheme"] == "fixed_range":
            maxima = [s["max"] for s in self.summary["foreground_intensity"].values()]
            if max(maxima) > 255:
                scheme = {"scheme": "minmax", "clip_percentiles": [0.5, 99.5],
                          "histogram_equalization": scheme.get("histogram_equalization", False)}
                reason = "X-rays with values above 255 (not 8-bit): per-image min-max to [0, 1] instead of 0..255"
        return scheme, reason + (f" ({note})" if note else "")

    def choose_geometry(self) -> tuple[dict, str]:
        geo = self.settings["geometry"]
        divisor = geo["slice_size_divisor"]
        max_pixels = geo["max_slice_pixels"][self.schedule_name]
        if self.is_2d_dataset:
            # 2D images carry no trustworthy spacing: the papers resize them to a fixed square size
            native = int(max(self.summary["median_shape"][1:]))
            side = min(native, int(math.isqrt(max_pixels)))
            side = max(divisor, side // divisor * divisor)
            return ({"mode": "resize", "slice_size": [side, side], "crop": "none", "image_order": 1, "mask_order": 1},
                    f"2D images are resized to {side}x{side}: the median image is {native} px wide and "
                    f"{self.method}'s {self.schedule_name} setting allows {max_pixels} px per slice")
        spacing = [float(v) for v in self.summary["median_spacing"][1:]]
        extent_mm = [e * s for e, s in zip(self.summary["max_foreground_bbox_shape"][1:],
                                           np.max([c["spacing"][1:] for c in self.fingerprint["cases"]
                                                   if c["split"] == "train"], axis=0))]
        size = [int(math.ceil(e / s / divisor) * divisor) for e, s in zip(extent_mm, spacing)]
        reason = (f"median in-plane spacing {spacing[0]:g} x {spacing[1]:g} mm; the largest foreground box "
                  f"({extent_mm[0]:.0f} x {extent_mm[1]:.0f} mm) fits {size[0]}x{size[1]} (multiple of {divisor})")
        if size[0] * size[1] > max_pixels:
            factor = math.sqrt(size[0] * size[1] / max_pixels)
            spacing = [s * factor for s in spacing]
            size = [int(math.ceil(e / s / divisor) * divisor) for e, s in zip(extent_mm, spacing)]
            while size[0] * size[1] > max_pixels:
                spacing = [s * 1.02 for s in spacing]
                size = [int(math.ceil(e / s / divisor) * divisor) for e, s in zip(extent_mm, spacing)]
            reason = (f"the largest foreground box ({extent_mm[0]:.0f} x {extent_mm[1]:.0f} mm) at the median spacing "
                      f"exceeds {self.method}'s {self.schedule_name} budget of {max_pixels} px per slice: spacing "
                      f"coarsened to {spacing[0]:.3g} x {spacing[1]:.3g} mm, slices {size[0]}x{size[1]}")
        crop = "roi" if self.fingerprint.get("roi_name") else "foreground"
        return ({"mode": "spacing", "target_spacing": [round(s, 6) for s in spacing], "slice_size": size,
                 "crop": crop, "image_order": 3, "mask_order": 1,
                 "slice_axis": "axial (canonical axis 0); slices keep their own thickness"},
                reason + f"; cropped to the {'ROI' if crop == 'roi' else 'non-zero foreground'} and padded")

    def choose_threshold(self) -> tuple[dict, str]:
        strategy = dict(self.settings["threshold"])
        strategy.pop("note", None)
        if strategy["strategy"] == "histogram_peak":
            names = [self.fingerprint["channel_names"][i] for i in self.plans["input_channels"]]
            measured = self.summary.get("anomaly_polarity") or {}
            # several channels: the output's channel the anomalies contrast most in carries the peaks
            position = max(range(len(names)), key=lambda i: abs(measured.get(names[i], {}).get("median_contrast", 0)))
            if len(names) > 1:
                strategy["channel"] = position
            channel = names[position]
            polarity = measured.get(channel)
            if polarity:
                side = "right" if polarity["polarity"] == "bright" else "left"
                why = (f"the anomalies are {polarity['polarity']} in {channel} "
                       f"({polarity['cases_bright']}/{polarity['cases']} cases brighter than their surroundings)")
            else:
                side = "right" if anomaly_intensity_sign(self.modality) > 0 else "left"
                why = {"CT": "no masks to measure polarity; CT lesions are usually darker than the organ",
                       "X-ray": "no masks to measure polarity; opacities (pneumonia, masses) are brighter than "
                                "aerated lung",
                       }.get(self.modality, "no masks to measure polarity; brain lesions are usually bright in "
                                            "FLAIR/T2")
            strategy["peak"] = "rightmost" if side == "right" else "leftmost"
            return strategy, f"ASC-Net's histogram-peak threshold of I_ro, {strategy['peak']} peak: {why}"
        image_level = self.plans["task"] == "image"
        if strategy["strategy"] == "validation_calibrated" and not self.has_masks:
            strategy = {"strategy": "normal_percentile", "percentile": 99.0}
            return strategy, ("no anomaly masks to calibrate on: label-free cut at the 99th percentile of the "
                              "scores of normal validation slices")
        if strategy["strategy"] == "normal_percentile" and self.has_masks and not image_level:
            return ({"strategy": "validation_calibrated"},
                    "training cases have anomaly masks: the threshold maximising Dice on each fold's validation "
                    "cases (the comparative-study protocol ASC-Net cites); never on test labels")
        if strategy["strategy"] == "validation_calibrated":
            return strategy, "the threshold maximising Dice on each fold's validation cases (never test labels)"
        return strategy, (f"label-free: the {strategy['percentile']:g}th percentile of the anomaly scores of normal "
                          f"validation {'images' if image_level else 'slices'}")

    def choose_postprocessing(self) -> tuple[dict, str]:
        pp = self.settings.get("postprocessing")
        if not pp or self.plans["task"] == "image":
            return {"enabled": False}, "image-level task: no mask post-processing"
        fraction = self.summary.get("anomaly_fraction_mean")
        if fraction is not None and fraction > 0.02:
            k, why = pp["kernel_size_large_anomalies"], (f"anomalies are large ({100 * fraction:.1f} % of the "
                                                         f"foreground, like BraTS tumours): {pp['kernel_size_large_anomalies']}x"
                                                         f"{pp['kernel_size_large_anomalies']} as for BraTS")
        elif fraction is not None:
            k, why = pp["kernel_size_small_anomalies"], (f"anomalies are small ({100 * fraction:.2f} % of the foreground): "
                                                         "5x5 as for MS-SEG and LiTS")
        else:
            k, why = pp["kernel_size_small_anomalies"], "no masks to size anomalies: the smaller 5x5 kernel"
        paper_mm = float(pp.get("paper_pixel_mm", 1.0))
        losses = self.summary.get("postprocessing_loss")
        lesions = self.summary.get("lesions")
        if lesions:
            why += (f"; the training masks hold {lesions['count']} lesions, median {lesions['median_diameter_mm']:.1f} "
                    f"mm across (quartiles {lesions['quartiles_mm'][0]:.1f}-{lesions['quartiles_mm'][1]:.1f} mm)")
        if losses:
            # the masks decide how large a kernel they survive: never one that erases more than
            # MAX_POSTPROCESSING_LOSS of the training masks' voxels (small lesions vanish under a wide one)
            sizes = sorted((int(size) for size in losses), reverse=True)
            allowed = [size for size in sizes if size <= k * paper_mm and losses[str(size)] <= MAX_POSTPROCESSING_LOSS]
            if not allowed:
                return ({"enabled": False},
                        f"no post-processing: even a {min(sizes)} mm kernel erases "
                        f"{100 * losses[str(min(sizes))]:.0f} % of the training masks' voxels (limit "
                        f"{100 * MAX_POSTPROCESSING_LOSS:.0f} %); " + why)
            if allowed[0] < k * paper_mm:
                why += (f"; the masks allow at most {allowed[0]} mm (a {k * paper_mm:g} mm kernel erases "
                        f"{100 * losses.get(str(int(k * paper_mm)), float('nan')):.0f} % of the training masks' voxels, "
                        f"{allowed[0]} mm {100 * losses[str(allowed[0])]:.0f} %; limit "
                        f"{100 * MAX_POSTPROCESSING_LOSS:.0f} %)")
                k = max(1, int(round(allowed[0] / paper_mm)))
                k += 1 - k % 2
        spacing = self.plans["preprocessing"].get("target_spacing")
        if spacing and self.plans["preprocessing"]["mode"] == "spacing":
            # The papers' kernels are in pixels of their ~1 mm slices; keep the physical size on this grid.
            scaled = max(1, 2 * int(round((k * paper_mm / float(np.mean(spacing)) - 1) / 2)) + 1)
            if scaled != k:
                why += (f"; {k} px at the papers' {paper_mm:g} mm pixels is {scaled} px at this plan's "
                        f"{float(np.mean(spacing)):.3g} mm" + (" (no effect at this resolution)" if scaled == 1 else ""))
                k = scaled
        return ({"enabled": True, "operations": pp["operations"], "kernel_size": k,
                 "restrict_to_roi": bool(self.fingerprint.get("roi_name"))}, "opening then closing, " + why)

    def choose_batch_size(self) -> tuple[int, str]:
        h, w = self.plans["preprocessing"]["slice_size"]
        paper = self.settings["batch_size"]
        if "batch_size_128" in self.settings and max(h, w) <= 128:
            paper = self.settings["batch_size_128"]  # a paper's batch for slices of at most 128x128
        floats = self.settings["network"]["estimated_training_floats_per_pixel"]
        per_sample = floats * 4 * h * w
        fits = max(1, int(self.memory_budget_gb * 2 ** 30 // per_sample))
        n_slices = self.summary["num_foreground_slices"]
        cap = max(1, n_slices // 4)
        batch = max(1, min(paper, fits, cap))
        reason = f"{self.method}'s batch size {paper}"
        if batch < paper:
            why = (f"memory ({per_sample / 2 ** 20:.0f} MiB per sample, budget {self.memory_budget_gb:g} GiB)"
                   if fits < min(paper, cap) else f"the data ({n_slices} slices)")
            reason += f", lowered to {batch} by {why}"
        else:
            reason += f" fits the {self.memory_budget_gb:g} GiB budget (~{per_sample * batch / 2 ** 30:.2f} GiB)"
        return batch, reason

    def choose_num_folds(self) -> tuple[int, str]:
        if self.requested["num_folds"]:
            return int(self.requested["num_folds"]), "chosen on the command line (--folds)"
        n_patients = self.summary["num_patients"]
        if n_patients < 100:
            return 2, f"{n_patients} patients: patient-wise two-fold cross-validation, as the papers' protocols"
        return 5, f"{n_patients} patients: patient-wise five-fold cross-validation"

    # -- splits -------------------------------------------------------------------------------------
    def make_splits(self, num_folds: int) -> list[dict]:
        """Patient-wise folds, stratified by role: every case of a patient lands in the same fold.
        Deterministic (seeded); written to splits_final.json, which a user may replace."""
        train = [c for c in self.fingerprint["cases"] if c["split"] == "train"]
        by_patient: dict[str, list[dict]] = defaultdict(list)
        for c in train:
            by_patient[c["patient"]].append(c)
        if len(by_patient) < num_folds:
            raise PlanningError(f"{len(by_patient)} patients cannot make {num_folds} patient-wise folds; use --folds "
                                f"{max(len(by_patient), 1)} or fewer")
        rng = np.random.default_rng(SPLIT_SEED)
        strata: dict[str, list[str]] = defaultdict(list)
        for patient, cases in sorted(by_patient.items()):
            roles = {c["role"] for c in cases}
            strata["normal" if roles == {"normal"} else "unlabeled" if roles == {"unlabeled"} else "mixed"].append(patient)
        fold_of: dict[str, int] = {}
        offset = 0
        for stratum in sorted(strata):
            patients = strata[stratum]
            for i, idx in enumerate(rng.permutation(len(patients))):
                fold_of[patients[idx]] = (i + offset) % num_folds
            offset += len(patients)
        splits = []
        for k in range(num_folds):
            val = sorted(c["case"] for c in train if fold_of[c["patient"]] == k)
            splits.append({"train": sorted(c["case"] for c in train if fold_of[c["patient"]] != k), "val": val})
        return splits

    def check_splits(self, splits: list[dict], where: Path) -> None:
        train = {c["case"]: c["patient"] for c in self.fingerprint["cases"] if c["split"] == "train"}
        for k, fold in enumerate(splits):
            unknown = (set(fold.get("train", [])) | set(fold.get("val", []))) - set(train)
            if unknown:
                raise PlanningError(f"{where}: fold {k} names cases that are not training cases: {sorted(unknown)[:3]}")
            shared = {train[c] for c in fold["train"]} & {train[c] for c in fold["val"]}
            if shared:
                raise PlanningError(f"{where}: fold {k} puts patient(s) {sorted(shared)[:3]} in both train and val")

    def choose_splits(self, num_folds: int) -> tuple[dict, str]:
        path = self.preprocessed_folder / "splits_final.json"
        if path.is_file():
            existing = load_json(path)
            self.check_splits(existing, path)
            if len(existing) == num_folds or not self.requested["num_folds"]:
                return ({"num_folds": len(existing), "file": path.name},
                        f"kept the existing {path.name} ({len(existing)} folds; it may be the user's own)")
        splits = self.make_splits(num_folds)
        self.check_splits(splits, path)
        save_json(splits, path)
        return {"num_folds": num_folds, "file": path.name, "seed": SPLIT_SEED}, \
            f"patient-wise, stratified by role, seed {SPLIT_SEED}"

    # -- the whole plan -------------------------------------------------------------------------------
    def plan(self) -> dict:
        reasons: dict[str, str] = {}
        self.plans: dict = {"plans_name": self.plans_name, "dataset": self.fingerprint["dataset"],
                            "planner": f"{type(self).__module__}.{type(self).__qualname__}",
                            "autouad_version": __version__,
                            "command_line_overrides": {k: v for k, v in self.requested.items() if v is not None}}
        self.plans["candidates"], reasons["candidates"] = self.choose_candidates()
        self.method, reasons["method"] = self.choose_method()
        spec = get_method(self.method)
        self.settings = load_method_plans(self.method)
        self.plans["method"] = self.method
        self.plans["paper"] = self.settings["paper"]
        image_level = self.is_2d_dataset and spec.image_level_on_2d
        self.plans["task"] = "image" if image_level else "segmentation"
        reasons["task"] = (f"image-level decisions (2D images, {self.method}'s paper task)" if image_level
                           else "pixel-level anomaly maps and masks")
        self.plans["schedule"], reasons["schedule"] = self.choose_schedule()
        self.plans["input_channels"], reasons["input_channels"] = self.choose_input_channels()
        normalization, reasons["normalization"] = self.choose_normalization()
        geometry, reasons["geometry"] = self.choose_geometry()
        self.plans["preprocessing"] = dict(geometry, normalization=normalization,
                                           channels=self.fingerprint["channel_names"],
                                           data_folder=f"{self.plans_name}_2d")
        self.plans["threshold"], reasons["threshold"] = self.choose_threshold()
        if self.is_2d_dataset:
            reasons["threshold"] += (f"; images are scored by {self.method}'s own image score, "
                                     f"{spec.image_score}, unless its folds' labelled validation images rank "
                                     f"another clearly better (threshold.image_score fixes it; docs/usage.md)")
        self.plans["postprocessing"], reasons["postprocessing"] = self.choose_postprocessing()
        self.plans["batch_size"], reasons["batch_size"] = self.choose_batch_size()
        num_folds, reasons["num_folds"] = self.choose_num_folds()
        self.plans["folds"], reasons["splits"] = self.choose_splits(num_folds)
        self.plans["validation_fraction"] = self.settings.get("validation_fraction", 0.1)
        self.plans["method_settings"] = {k: v for k, v in self.settings.items()
                                         if k not in ("normalization", "geometry", "schedules", "threshold",
                                                      "postprocessing", "batch_size", "folds", "paper")}
        self.plans["reasons"] = reasons
        # the typed plans check what a subclass's decisions wrote before anything is saved
        return Plans.from_dict(self.plans, f"the plans of {type(self).__name__}")


def load_planner_class(dotted: str | None):
    if not dotted:
        return AutoUADPlanner
    return import_subclass(dotted, AutoUADPlanner, PlanningError, "planner")


def plan_dataset(fingerprint: dict, preprocessed_folder: str | Path, planner_class=AutoUADPlanner,
                 plans_file: str = "plans.json", **kwargs) -> Plans:
    planner = planner_class(fingerprint, preprocessed_folder, **kwargs)
    plans = planner.plan()
    save_json(plans.to_dict(), Path(preprocessed_folder) / plans_file)
    return plans
