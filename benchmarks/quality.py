"""Every method against simple baselines, side by side, in one run.

    python benchmarks/quality.py [--schedule smoke|fast|paper] [--methods ascnet ...] [--folds 0 1]
                                 [--datasets brats kermany] [--work DIR] [--results FILE]

BraTS-6 (../shared/data/brats2015_deepmedic6), patient-wise 2-fold cross-validation: for every
method, convert -> plan -> preprocess -> train each fold -> calibrate the fold's cut on its
training patients -> predict its held-out patients with that fold's model; the folds' predictions
together cover all six patients and are scored at once against the tumour masks (OTMultiClass > 0).

The held-out patients are the test set here, so no cut may look at them. autouad_train calibrates
a fold on its validation cases, which are exactly those patients; quality.py therefore calibrates
each fold again, by the plan's own strategy, on the fold's training patients (recalibrated_predictor):
the Dice-optimal cut on their masks (validation_calibrated), the percentile of their normal slices
(normal_percentile) or the peaks of their maps' histogram (ASC-Net). The price of six patients is
that the model has seen those patients' normal slices in training, so their maps are a little
lower than the held-out patients' and the cut a little low; the held-out patients' labels and maps
are never used. ASC-Net's cut needs no labels at all, and its paper reads it off the histogram of
the images it segments: it also gets a row with the cut read off the scored patients' own maps.
Beside the methods, FLAIR intensity thresholding, the bar every unsupervised brain-MRI method must
clear: its label-free cut is the 99th percentile of the standardised FLAIR on the normal slices of
the fold's training patients, and its oracle cut (chosen on the labels) is the evaluator's
best-possible Dice.

Kermany chest X-rays (../shared/data/chestxray_kermany): every method trained on the given folds
and predicting the 624 test images (fold-averaged), image-level AUROC etc., beside the pixel kNN
baseline.

Everything lands in --work (default ./autouad_quality_<schedule>): the autouad folders and the
predictions. A second run with the same --work reuses what is done (trained folds are not trained
again; an interrupted fold continues from its checkpoint). The rows go to --results (default
<work>/quality.json, a Markdown table beside it): each row is written as soon as it is measured,
with the machine and the date, and rows already in the file from other runs of the same schedule and
folds stay, so that a run of many hours can be split into runs of a few methods. Jobs run one after
the other: two torch jobs on a small CPU slow each other down far more than they gain.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "data"
from autouad.cli.train import parse_settings  # noqa: E402  (after the sys.path line)
from autouad.methods.registry import method_names  # noqa: E402
from autouad.utils.machine import machine_description  # noqa: E402

METHODS = tuple(method_names())
FLAIR_LABEL_FREE, FLAIR_ORACLE, PIXEL_KNN = "FLAIR threshold (label-free)", "FLAIR threshold (oracle)", "pixel kNN"
AUTO = "auto"
OWN_HISTOGRAM = "(own-histogram cut)"
ROW_ORDER = (AUTO, FLAIR_LABEL_FREE, FLAIR_ORACLE, PIXEL_KNN) + METHODS
BRATS = {"id": 1, "source": SHARED / "brats2015_deepmedic6", "format": "brats-deepmedic"}
KERMANY = {"id": 2, "source": SHARED / "chestxray_kermany", "format": "chestxray-folders"}


def row_rank(name: str) -> tuple[int, int]:
    """A row's place in the tables: baselines, then each method, its own-histogram row after it."""
    base = name.removesuffix(" " + OWN_HISTOGRAM)
    return ROW_ORDER.index(base), int(base != name)


def dataset_folder(root: Path, dataset_id: int) -> Path:
    return next(root.glob(f"Dataset{dataset_id:03d}_*"))


def convert(spec: dict, work: Path) -> Path:
    from dataset_conversion.convert import load_converter
    raw = work / "raw"
    if not any(raw.glob(f"Dataset{spec['id']:03d}_*")):
        load_converter(spec["format"]).convert(spec["source"], spec["id"], raw_folder=raw)
    return dataset_folder(raw, spec["id"])


def folders(work: Path) -> dict:
    """The benchmark's own stage folders, given to every API call (the AUTOUAD_* variables are
    left alone)."""
    return {"raw_folder": work / "raw", "preprocessed_folder": work / "preprocessed"}


def plan_and_preprocess(work: Path, dataset_id: int, method: str, schedule: str, num_folds: int | None,
                        preprocess: bool = True, planner: str | None = None) -> None:
    """The method's plans (and the dataset's patient-wise splits) and preprocessed data. The
    dataset's fingerprint is extracted (and its files checked) once; later methods plan from it."""
    from autouad import api
    fingerprinted = (dataset_folder(work / "preprocessed", dataset_id) / api.FINGERPRINT_FILE).is_file() \
        if any((work / "preprocessed").glob(f"Dataset{dataset_id:03d}_*")) else False
    steps = ("plan",) if fingerprinted else ("fingerprint", "plan")
    api.plan_and_preprocess(dataset_id, method=method, schedule=schedule, num_folds=num_folds, num_processes=2,
                            planner=planner, steps=steps + (("preprocess",) if preprocess else ()), **folders(work))


def model_folder(work: Path, dataset_id: int, method: str) -> Path:
    """Where autouad_train put the method's folds (the planner's default plans)."""
    return work / "results" / dataset_folder(work / "raw", dataset_id).name / f"{method}__autouadPlans_{method}"


def train_folds(work: Path, dataset_id: int, method: str, schedule: str, folds: list[int],
                num_folds: int | None, overrides: dict | None = None, planner: str | None = None) -> dict:
    """Plan, preprocess and train; returns {fold: training seconds} (from each fold's log).
    ``num_folds`` None: the planner's choice; ``overrides``: schedule settings (``--set``)."""
    from autouad import api
    from autouad.utils.files import load_json

    plan_and_preprocess(work, dataset_id, method, schedule, num_folds, planner=planner)
    seconds = {}
    for fold in folds:
        fold_folder = model_folder(work, dataset_id, method) / f"fold_{fold}"
        if fold_complete(fold_folder):
            print(f"{method} fold {fold}: trained, exported and calibrated by an earlier run; reused")
        else:
            # an interrupted fold continues from its checkpoint
            api.train(dataset_id, fold, method, continue_training=(fold_folder / "checkpoint_latest.pt").is_file(),
                      overrides=overrides, preprocessed_folder=work / "preprocessed", results_folder=work / "results")
        log = load_json(fold_folder / "training_log.json")
        seconds[fold] = max((e.get("seconds", 0.0) for e in log.get("entries", [])), default=0.0)
    return seconds


def fold_complete(fold_folder: Path) -> bool:
    """Whether autouad_train finished this fold, exported its validation maps and calibrated its
    threshold after its final checkpoint was written. ``autouad_train --continue`` on a finished fold
    exports the maps again (minutes for a thousand X-rays), which a resumed benchmark does not need."""
    from autouad.calibration.thresholds import THRESHOLD_FILE
    from autouad.evaluation.fold_validation import SUMMARY_FILE
    from autouad.training.base_trainer import CHECKPOINT_FINAL, VALIDATION_FOLDER

    final = fold_folder / CHECKPOINT_FINAL
    after = [fold_folder / THRESHOLD_FILE, fold_folder / VALIDATION_FOLDER / SUMMARY_FILE]
    return final.is_file() and all(p.is_file() and p.stat().st_mtime >= final.stat().st_mtime for p in after)


def failed(dataset: str, method: str, error: Exception) -> dict:
    """A method's row when it failed: the others still run, and the table says why."""
    row = {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"}
    print(f"{dataset} {method}: {row['error']}", file=sys.stderr)
    return row


def fold_split(work: Path, dataset_id: int, fold: int) -> dict:
    from autouad.utils.files import load_json
    return load_json(dataset_folder(work / "preprocessed", dataset_id) / "splits_final.json")[fold]


def input_cases(raw: Path, cases: list[str]) -> list:
    """The cases' raw files as prediction inputs (the training cases a fold holds out)."""
    from autouad.dataset.raw_dataset import load_raw_dataset
    from autouad.inference.inputs import InputCase
    from autouad.utils.images import file_ending

    by_id = {c.case_id: c for c in load_raw_dataset(raw).training_cases()}
    return [InputCase(name, by_id[name].images, by_id[name].roi, file_ending(by_id[name].images[0]))
            for name in cases]


def merge_predictions(parts: list[Path], merged: Path) -> Path:
    """The per-fold prediction folders as one (files are per case; the run record of the first)."""
    from autouad.inference.outputs import PREDICTIONS_FILE
    if merged.exists():
        shutil.rmtree(merged)
    merged.mkdir(parents=True)
    for part in parts:
        for path in part.rglob("*"):
            if path.is_file() and path.name not in (PREDICTIONS_FILE, "summary.json"):
                target = merged / path.relative_to(part)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    shutil.copy2(parts[0] / PREDICTIONS_FILE, merged / PREDICTIONS_FILE)
    return merged


def pixel_row(summary: dict) -> dict:
    pixel = summary["pixel"]

    def mean_std(key):
        value = pixel.get(key) or {}
        return value.get("mean"), value.get("std")
    return {"dice": mean_std("dice"), "dice_without_postprocessing": mean_std("dice_without_postprocessing"),
            "auroc": mean_std("auroc"), "pooled_auroc": pixel.get("pooled_auroc"),
            "average_precision": mean_std("average_precision"),
            "best_possible_dice": (pixel.get("best_possible_dice") or {}).get("mean_dice"),
            "num_cases": summary.get("num_cases")}


def recalibrated_predictor(work: Path, dataset_id: int, method: str, fold: int, cases: list[str]):
    """The fold's trained model with its threshold calibrated on ``cases`` (the fold's training
    patients) instead of on its validation patients, whom quality.py scores: the maps of ``cases``
    are computed in memory and calibrated by the plans' strategy, as a fold's validation maps are.
    The trained model on disk is left as it is."""
    from autouad.calibration.thresholds import calibrate
    from autouad.inference.predictor import AnomalyPredictor
    from autouad.model import AnomalyModel
    from autouad.preprocessing.cases import load_preprocessed_case

    model = AnomalyModel.load(model_folder(work, dataset_id, method) / f"fold_{fold}")
    data_folder = dataset_folder(work / "preprocessed", dataset_id) / model.plans.preprocessing.data_folder
    pairs = []
    for name in cases:  # one volume at a time: a BraTS volume fills the batches by itself
        case = load_preprocessed_case(data_folder, name, model.dataset.modality)
        pairs.append((case, model.anomaly_maps(case.data)))
    threshold = calibrate(model.plans.threshold, pairs, model.trainer.histogram_range)
    threshold.details.update(fold=fold, calibrated_on="the fold's training patients")
    model.threshold = threshold
    return AnomalyPredictor([model], source=model_folder(work, dataset_id, method))


def brats_method(args, work: Path, raw: Path, reference: Path, method: str) -> dict[str, dict]:
    """Train the folds, calibrate each on its training patients, let it predict its held-out
    patients, score them together: {row name: row}.

    A fold whose own cut is ASC-Net's histogram peak read label-free from its validation maps (the
    scored patients' maps; autouad_train's threshold.json) gives a second row, ``<method>
    (own-histogram cut)``: the paper reads the cut off the histogram of the images it segments,
    which needs no mask, so this is a fair label-free figure too. A fold that fell back to a
    percentile of normal slices (which the masks define) gives none."""
    from autouad.evaluation.evaluator import evaluate_folders
    from autouad.inference.predictor import AnomalyPredictor
    from autouad.utils.files import load_json

    start = time.perf_counter()
    seconds = train_folds(work, BRATS["id"], method, args.schedule, args.folds, 2, args.settings, args.planner)
    model = model_folder(work, BRATS["id"], method)
    splits = {fold: fold_split(work, BRATS["id"], fold) for fold in args.folds}
    # (row name, each fold's predictor, prediction folder, the cut's words or None: the folds' own)
    variants = [(method, {fold: recalibrated_predictor(work, BRATS["id"], method, fold, split["train"])
                          for fold, split in splits.items()}, method, None)]
    if all(load_json(model / f"fold_{fold}" / "threshold.json")["strategy"] == "histogram_peak" for fold in splits):
        variants.append((f"{method} {OWN_HISTOGRAM}",
                         {fold: AnomalyPredictor.from_folder(model, [fold]) for fold in splits},
                         f"{method}_own_histogram",
                         "histogram peak of the scored patients' own maps (label-free, no mask seen)"))
    rows = {}
    for name, predictors, folder, cut in variants:
        parts = []
        for fold, split in splits.items():
            out = work / "predictions" / "brats" / folder / f"fold_{fold}"
            predictors[fold].predict_cases(input_cases(raw, split["val"]), out, save_maps=True)
            parts.append(out)
        merged = merge_predictions(parts, work / "predictions" / "brats" / folder / "cross_validation")
        rows[name] = dict(pixel_row(evaluate_folders(reference, merged)), cut=cut or fold_cuts(parts),
                          training_seconds=sum(seconds.values()), wall_seconds=time.perf_counter() - start)
    return rows


# How a row's masks were cut, for the table: a Dice is only comparable with the cut that made it.
CUTS = {"histogram_peak": "histogram peak of the training patients' maps (label-free)",
        "normal_percentile": "percentile of the training patients' normal slices (label-free)",
        "validation_calibrated": "best Dice on the training patients' masks"}


def fold_cuts(prediction_folders: list[Path]) -> str:
    """The threshold strategies the folds used (their predictions.json), as the table says them:
    a fold that fell back from its plan's strategy says so there."""
    from autouad.inference.outputs import PREDICTIONS_FILE
    from autouad.utils.files import load_json
    strategies = sorted({t["strategy"] for folder in prediction_folders
                         for t in load_json(folder / PREDICTIONS_FILE)["fold_thresholds"].values()})
    return "; ".join(CUTS.get(s, s) for s in strategies)


def brats(args, work: Path, results: "Results") -> None:
    from autouad.dataset.raw_dataset import load_raw_dataset
    from autouad.evaluation.baselines import intensity_baseline_predictions
    from autouad.evaluation.evaluator import evaluate_folders

    raw = convert(BRATS, work)
    dataset = load_raw_dataset(raw)
    by_id = {c.case_id: c for c in dataset.training_cases()}
    reference = raw / "masksTr"
    # FLAIR thresholding first (a minute): the bar is in the table before the first method trains.
    # The folds are the methods' (the planner's patient-wise 2-fold split of BraTS-6); per fold, the
    # cut comes from the fold's training patients' normal slices.
    plan_and_preprocess(work, BRATS["id"], args.methods[0], args.schedule, 2, preprocess=False,
                        planner=args.planner)
    flair = next(int(k) for k, v in dataset.meta["channel_names"].items() if v.upper() == "FLAIR")
    parts = []
    for fold in args.folds:
        split = fold_split(work, BRATS["id"], fold)
        out = work / "predictions" / "brats" / "flair_threshold" / f"fold_{fold}"
        intensity_baseline_predictions([by_id[c] for c in split["val"]], [by_id[c] for c in split["train"]], flair,
                                       out, normal_reference=dataset.normal_reference,
                                       modality=dataset.meta["modality"])
        parts.append(out)
    merged = merge_predictions(parts, work / "predictions" / "brats" / "flair_threshold" / "cross_validation")
    label_free = dict(pixel_row(evaluate_folders(reference, merged)),
                      cut="99th percentile of the training patients' normal slices (label-free)")
    results.record("brats", FLAIR_LABEL_FREE, label_free)
    results.record("brats", FLAIR_ORACLE, dict(label_free, dice=(label_free["best_possible_dice"], None),
                                              dice_without_postprocessing=(None, None),
                                              cut="best Dice on the scored patients' masks (oracle)"))
    for method in args.methods:
        try:
            for name, row in brats_method(args, work, raw, reference, method).items():
                results.record("brats", name, row)
        except Exception as e:
            results.record("brats", method, failed("brats", method, e))
    record_brats_auto(args, work, results)


def record_brats_auto(args, work: Path, results: "Results") -> None:
    """The `auto` row of BraTS-6; a run of one fold has none (it is skipped, not recorded as an
    error): the row scores each fold by a choice made on the others."""
    if len(args.folds) < 2:
        print(f"brats {AUTO}: skipped, its leave-one-fold-out selection needs at least two folds "
              f"(--folds {' '.join(map(str, args.folds))})")
        return
    try:
        results.record("brats", AUTO, brats_auto(args, work, results))
    except Exception as e:
        results.record("brats", AUTO, failed("brats", AUTO, e))


def brats_auto(args, work: Path, results: "Results") -> dict:
    """What the default commands give a user (plan, train the candidates, find_best_configuration,
    predict), scored without the selection seeing the scored patients: for each outer fold, the
    configuration is chosen and fitted on the other folds' validation patients only and scores the
    outer fold's patients (leave-one-fold-out; with two folds the inner selection fits and scores on
    one fold). Candidates: every trained method of this run and the intensity baseline."""
    from autouad.evaluation.metrics import mean_std
    from autouad.selection.find_best import gather, leave_one_fold_out

    start = time.perf_counter()
    name = dataset_folder(work / "raw", BRATS["id"]).name
    task, folds, candidates, evidence, kernels, _, _ = gather(name, work / "raw", work / "preprocessed",
                                                              work / "results", args.folds, quiet=True)
    rows = leave_one_fold_out(evidence, candidates, folds, task, kernels)
    cases = [v for row in rows for v in row["per_case"].values() if "dice" in v]
    trained = [r for n, r in results.data["brats"].items()
               if "training_seconds" in r and n != AUTO and not n.endswith(OWN_HISTOGRAM)]
    return {"dice": tuple(mean_std([c["dice"] for c in cases])[k] for k in ("mean", "std")),
            "dice_without_postprocessing": (None, None),
            "auroc": tuple(mean_std([c["auroc"] for c in cases])[k] for k in ("mean", "std")),
            "pooled_auroc": None, "average_precision": (None, None), "best_possible_dice": None,
            "num_cases": len(cases),
            "cut": "; ".join(f"fold {row['fold']}: {row['chosen']}" for row in rows) + " (chosen on the other fold)",
            "chosen": {str(row["fold"]): row["chosen"] for row in rows},
            "training_seconds": sum(r["training_seconds"] for r in trained),
            "wall_seconds": time.perf_counter() - start}


def predict_kermany_method(work: Path, raw: Path, method: str, folds: list[int], out: Path) -> dict:
    """Kermany's test X-rays predicted by ``method``'s trained ``folds`` in ``work`` into ``out``:
    the image metrics against the labels, with the image score the folds chose and why."""
    from autouad import api
    from autouad.evaluation.evaluator import evaluate_folders
    from autouad.inference.outputs import PREDICTIONS_FILE
    from autouad.utils.files import load_json

    api.predict(raw / "imagesTs", out, model_folder(work, KERMANY["id"], method), folds=folds)
    run = load_json(out / PREDICTIONS_FILE)
    return dict(evaluate_folders(raw / "dataset.json", out)["image"], image_score=run["image_score"],
                image_score_reason=run["image_score_reason"])


def kermany(args, work: Path, results: "Results") -> None:
    from autouad.evaluation.baselines import knn_baseline_predictions
    from autouad.evaluation.evaluator import evaluate_folders

    raw = convert(KERMANY, work)
    labels = raw / "dataset.json"
    out = work / "predictions" / "kermany" / "pixel_knn"
    knn_baseline_predictions(raw, raw / "imagesTs", out)
    results.record("kermany", PIXEL_KNN, evaluate_folders(labels, out)["image"])
    for method in args.methods:
        start = time.perf_counter()
        try:
            # the planner's folds (five for Kermany's 2975 patients): two would hold out half the
            # training images, whose validation maps every fold computes
            seconds = train_folds(work, KERMANY["id"], method, args.schedule, args.folds, None, args.settings,
                                  args.planner)
            row = predict_kermany_method(work, raw, method, args.folds, work / "predictions" / "kermany" / method)
            results.record("kermany", method, dict(row, training_seconds=sum(seconds.values()),
                                                   wall_seconds=time.perf_counter() - start))
        except Exception as e:
            results.record("kermany", method, failed("kermany", method, e))
    try:
        results.record("kermany", AUTO, kermany_auto(args, work, raw, results))
    except Exception as e:
        results.record("kermany", AUTO, failed("kermany", AUTO, e))


def kermany_auto(args, work: Path, raw: Path, results: "Results") -> dict:
    """What the default commands give a user: find_best_configuration on the trained folds'
    validation images (the Kermany train folder), then autouad_predict following its instructions on
    the 624 test images, which no selection or cut has seen."""
    from autouad import api
    from autouad.evaluation.evaluator import evaluate_folders
    from autouad.selection.evidence import method_of

    start = time.perf_counter()
    instructions = api.find_best_configuration(KERMANY["id"], args.folds, quiet=True, **folders(work),
                                               results_folder=work / "results")
    out = work / "predictions" / "kermany" / AUTO
    api.predict(raw / "imagesTs", out, dataset=KERMANY["id"], raw_folder=work / "raw", results_folder=work / "results")
    # the candidates are what this work folder trained (rows of other runs in the results file may
    # come from other work folders): listed with their out-of-fold AUROC so that the row says what it chose from
    compared = {row["configuration"]: row.get("auroc") for row in instructions["candidates"]}
    methods = {method_of(row["candidate"]) for row in instructions["candidates"]}
    trained = [r for n, r in results.data["kermany"].items() if "training_seconds" in r and n in methods]
    return dict(evaluate_folders(raw / "dataset.json", out)["image"], chosen=instructions["chosen"]["configuration"],
                candidates=compared, warnings=instructions["warnings"],
                training_seconds=sum(r["training_seconds"] for r in trained), wall_seconds=time.perf_counter() - start)


def fmt(value, std=None, digits=3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def strip_stamp(row: dict) -> dict:
    """A row without where and when it was measured: its figures, as the JSON file holds them (a
    (mean, std) tuple reads back as a list)."""
    return json.loads(json.dumps({k: v for k, v in row.items() if k not in ("machine", "measured")}))


class Results:
    """quality.json and quality.md: the rows of every run with the same schedule and folds, so that
    a benchmark of many hours can be run a few methods at a time (``--methods``), on several days or
    machines; each row is written the moment it is measured and says where and when."""

    def __init__(self, path: Path, schedule: str, folds: list[int], machine: str, settings: dict | None = None,
                 planner: str | None = None):
        self.path, self.machine, self.settings, self.planner = path, machine, settings or {}, planner
        self.data = {"schedule": schedule, "folds": folds, "brats": {}, "kermany": {}, "commands": []}
        if path.is_file():
            old = json.loads(path.read_text(encoding="utf-8"))
            if (old.get("schedule"), old.get("folds")) != (schedule, folds):
                raise SystemExit(f"{path}: holds the {old.get('schedule')} schedule's results for folds "
                                 f"{old.get('folds')}, not {schedule} {folds}; choose another --results")
            for dataset in ("brats", "kermany"):
                self.data[dataset].update(old.get(dataset) or {})
            self.data["commands"] = old.get("commands") or []

    def record_command(self, args, started: float, minutes: float) -> None:
        """The whole command's wall time beside its rows: a run of many hours is judged by it (a
        resumed command counts only what it did; the rows it reused keep their own times)."""
        self.data["commands"].append({
            "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)), "minutes": round(minutes, 1),
            "datasets": args.datasets, "methods": args.methods, "settings": self.settings,
            **({"planner": self.planner} if self.planner else {}), "machine": self.machine})
        self.save()

    def record(self, dataset: str, name: str, row: dict) -> None:
        from autouad.evaluation.metrics import undefined_to_none
        # an undefined figure (the AUROC of a fold without anomalies, say) is null, as in the
        # evaluator's summaries: strict JSON, and the table prints it as n/a
        row = undefined_to_none(dict(row, machine=self.machine, measured=time.strftime("%Y-%m-%d %H:%M")))
        if self.settings and "training_seconds" in row:
            row["settings"] = self.settings  # the trained rows' --set; the baselines train nothing
        if self.planner and "training_seconds" in row:
            row["planner"] = self.planner
        old = self.data[dataset].get(name)
        if old is not None and strip_stamp(old) == strip_stamp(row):
            # every run re-measures its dataset's baselines (seconds of work); the same figures keep
            # the row's first machine and date, so the results file changes only where a figure did
            return
        self.data[dataset][name] = row
        self.save()

    def save(self) -> None:
        from autouad.utils.files import atomic_output, save_json
        for dataset in ("brats", "kermany"):
            rows = self.data[dataset]
            self.data[dataset] = {k: rows[k] for k in sorted(rows, key=row_rank)}
        save_json(self.data, self.path)
        with atomic_output(self.path.with_suffix(".md")) as tmp:
            tmp.write_text(markdown(self.data) + "\n", encoding="utf-8")


def table(title: str, columns: list[str], rows: dict, cells) -> list[str]:
    """A Markdown table: a row per method (``cells(row)`` gives its figures), then the training time."""
    lines = [title, "", "| method | " + " | ".join(columns) + " | training |",
             "|---" * (len(columns) + 2) + "|"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error'][:120]} |")
            continue
        train = f"{r['training_seconds'] / 60:.1f} min" if "training_seconds" in r else "none"
        lines.append(f"| {name} | " + " | ".join(cells(r)) + f" | {train} |")
    return lines + [""]


def markdown(result: dict) -> str:
    machines = sorted({r["machine"] for d in ("brats", "kermany") for r in (result.get(d) or {}).values()
                       if "machine" in r})
    lines = [f"Schedule `{result['schedule']}`, folds {result['folds']}; measured on {'; '.join(machines)}", ""]
    if result.get("brats"):
        lines += table("BraTS-6, patient-wise 2-fold cross-validation (each fold's model predicts its held-out patients):",
                       ["Dice", "Dice (no post-processing)", "cut", "pixel AUROC", "pooled AUROC", "AP",
                        "best-possible Dice"],
                       result["brats"],
                       lambda r: [fmt(*r["dice"]), fmt(*r["dice_without_postprocessing"]), r.get("cut", "n/a"),
                                  fmt(*r["auroc"]), fmt(r["pooled_auroc"]), fmt(*r["average_precision"]),
                                  fmt(r["best_possible_dice"])])
    if result.get("kermany"):
        lines += table("Kermany chest X-rays, the 624 test images:",
                       ["AUROC", "AP", "precision", "recall", "specificity", "F1", "image score"], result["kermany"],
                       lambda r: [fmt(r.get(k)) for k in ("auroc", "average_precision", "precision", "recall",
                                                          "specificity", "f1")] + [r.get("image_score", "n/a")])
        chosen = (result["kermany"].get(AUTO) or {}).get("chosen")
        if chosen:
            lines += [f"`auto` predicted with `{chosen}`, chosen by find_best_configuration on the trained folds' "
                      f"validation images.", ""]
    for c in result.get("commands") or []:
        lines.append(f"- {c['started']}: {' '.join(c['datasets'])}, {' '.join(c['methods'])}"
                     + (f", --set {c['settings']}" if c["settings"] else "")
                     + (f", --planner {c['planner']}" if c.get("planner") else "") + f": {c['minutes']} min")
    return "\n".join(lines).rstrip("\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedule", default="fast", choices=["smoke", "fast", "paper"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1], choices=[0, 1])
    parser.add_argument("--datasets", nargs="+", default=["brats", "kermany"], choices=["brats", "kermany"])
    parser.add_argument("--work", type=Path, default=None, help="working folder (default ./autouad_quality_<schedule>)")
    parser.add_argument("--results", type=Path, default=None,
                        help="results JSON to add this run's rows to (default <work>/quality.json; "
                             "the Markdown table is written beside it)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", dest="set_items",
                        help="change a schedule setting of every method trained (as autouad_train --set; "
                             "for example training_precision=bf16; use a fresh --work, since trained folds are "
                             "reused); the rows record it")
    parser.add_argument("--planner", default=None, metavar="MODULE.CLASS",
                        help="plan every method with this planner class (as autouad_plan_and_preprocess --planner, "
                             "for example autouad.planning.variants.HistogramEqualizationPlanner; use a fresh --work, "
                             "since plans and trained folds are reused); the rows record it")
    args = parser.parse_args(argv)
    args.settings = parse_settings(args.set_items)
    work = (args.work or Path(f"autouad_quality_{args.schedule}")).resolve()
    for kind in ("raw", "preprocessed", "results"):
        (work / kind).mkdir(parents=True, exist_ok=True)
    results = Results((args.results or work / "quality.json").resolve(), args.schedule, args.folds,
                      machine_description(), args.settings, args.planner)
    start, started = time.perf_counter(), time.time()
    for name, spec, run in (("brats", BRATS, brats), ("kermany", KERMANY, kermany)):
        if name not in args.datasets:
            continue
        if not spec["source"].is_dir():
            print(f"skipping {name}: {spec['source']} not found", file=sys.stderr)
            continue
        run(args, work, results)
    minutes = (time.perf_counter() - start) / 60
    results.record_command(args, started, minutes)
    print(markdown(results.data))
    print(f"\n{minutes:.1f} min; written to {results.path} and "
          f"{results.path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
