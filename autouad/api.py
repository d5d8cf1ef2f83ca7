"""autouad's Python API: the front door the command lines are thin layers over.

    from autouad import api
    api.plan_and_preprocess(3)                      # validate -> fingerprint -> plan -> preprocess
    api.train(3, "all")                             # every fold of the planner's method
    api.predict("scans/", "out/", dataset=3, roi_folder="brains/")
    api.evaluate("masks/", "out/")

Folders are arguments; each defaults to its ``AUTOUAD_*`` variable (autouad.paths), which nothing in
autouad sets. For one image in memory, use ``autouad.AnomalyPredictor`` (see its docstring).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from autouad.paths import find_dataset_name, folder

FINGERPRINT_FILE = "dataset_fingerprint.json"
PLANNING_STEPS = ("fingerprint", "plan", "preprocess")


class APIError(Exception):
    """A request the API cannot carry out; one line saying why and what to do."""


# ---- plan and preprocess -------------------------------------------------------------------------------
@dataclass
class PlanningResult:
    dataset: str
    fingerprint: dict
    plans: object | None = None            # autouad.planning.plans.Plans, when planned
    plans_path: Path | None = None
    preprocessed: dict | None = None       # {"done", "skipped", "num_slices"} when preprocessed
    seconds: float = 0.0


def plan_and_preprocess(dataset: str | int, *, method: str | None = None, schedule: str | None = None,
                        num_folds: int | None = None, planner: str | type | None = None,
                        plans_name: str | None = None, memory_budget_gb: float = 8.0, num_processes: int = 2,
                        steps: tuple[str, ...] = PLANNING_STEPS, verify_only: bool = False,
                        all_channels: bool = False, raw_folder: str | Path | None = None,
                        preprocessed_folder: str | Path | None = None) -> PlanningResult:
    """Validate the raw dataset and write its fingerprint, plan (``plans.json``, or
    ``autouadPlans_<method>.json`` for a named ``method``) and preprocess, or the ``steps`` given
    (each reads what the step before it wrote). ``verify_only`` checks the raw data and writes
    nothing. Raises autouad.dataset.validation.DatasetValidationError with every problem found."""
    import shutil

    from autouad.dataset.raw_dataset import load_raw_dataset
    from autouad.fingerprint.extractor import DatasetFingerprintExtractor
    from autouad.planning.plans import load_plans
    from autouad.planning.plans_files import default_plans_name, plans_file_name
    from autouad.planning.planner import load_planner_class, plan_dataset
    from autouad.preprocessing.preprocessor import preprocess_dataset
    from autouad.utils.files import load_json, save_json

    unknown = set(steps) - set(PLANNING_STEPS)
    if unknown:
        raise APIError(f"unknown planning step(s) {sorted(unknown)}; the steps are {', '.join(PLANNING_STEPS)}")
    if all_channels and not method and not plans_name:
        raise APIError("all_channels needs a method (-m): every-channel plans sit beside the default plans as "
                       "autouadPlans_<method>_allchannels")
    start = time.time()
    raw_root, preprocessed_root = folder("raw", raw_folder), folder("preprocessed", preprocessed_folder)
    name = find_dataset_name(dataset, (raw_root, preprocessed_root))
    raw, out = raw_root / name, preprocessed_root / name
    if "fingerprint" in steps or verify_only:
        if not raw.is_dir():
            raise FileNotFoundError(f"{raw}: no such raw dataset (check AUTOUAD_raw)")
        fingerprint = DatasetFingerprintExtractor(raw, num_processes).run()
        s = fingerprint["summary"]
        print(f"{name}: {s['num_training_cases']} training cases ({s['num_normal_cases']} normal, "
              f"{s['num_unlabeled_cases']} unlabeled), {s['num_test_cases']} test; all files check out")
        if verify_only:
            return PlanningResult(name, fingerprint, seconds=time.time() - start)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(raw / "dataset.json", out / "dataset.json")
        save_json(fingerprint, out / FINGERPRINT_FILE)
    else:
        fingerprint = load_json(out / FINGERPRINT_FILE)
    if not {"plan", "preprocess"} & set(steps):
        return PlanningResult(name, fingerprint, seconds=time.time() - start)
    plans_name = plans_name or default_plans_name(method, all_channels)
    plans_path = out / plans_file_name(plans_name)
    if "plan" in steps:
        planner_class = planner if isinstance(planner, type) else load_planner_class(planner)
        plans = plan_dataset(fingerprint, out, planner_class, plans_file=plans_path.name, method=method,
                             schedule=schedule, num_folds=num_folds, memory_budget_gb=memory_budget_gb,
                             plans_name=plans_name, all_channels=all_channels)
        print_plan(plans)
    else:
        plans = load_plans(plans_path)
    result = PlanningResult(name, fingerprint, plans, plans_path)
    if "preprocess" in steps:
        result.preprocessed = preprocess_dataset(load_raw_dataset(raw), plans, out / plans.preprocessing.data_folder,
                                                 num_processes)
        print(f"preprocessed {result.preprocessed['done']} case(s), skipped {result.preprocessed['skipped']} already "
              f"done; {result.preprocessed['num_slices']} slices in {out / plans.preprocessing.data_folder}")
    result.seconds = time.time() - start
    print(f"{name}: finished in {result.seconds:.1f} s; outputs in {out}")
    return result


def print_plan(plans) -> None:
    p = plans.preprocessing
    print(f"plan: method {plans.method}, schedule {plans.schedule.get('name')}, slices {p.slice_size[0]}x"
          f"{p.slice_size[1]}, batch {plans.batch_size}, {plans.folds.num_folds} folds, threshold "
          f"{plans.threshold.strategy}")
    if plans.candidates:
        print(f"  candidates: {', '.join(c.method for c in plans.candidates)}")
    for key, reason in plans.reasons.items():
        print(f"  {key}: {reason}")


# ---- train ---------------------------------------------------------------------------------------------
def train(dataset: str | int, fold: int | str | list[int], method: str | None = None, schedule: str | None = None,
          *, plans_name: str | None = None, overrides: dict | None = None, epochs: int | None = None,
          cycles: tuple[int, int] | None = None, iterations: int | None = None, continue_training: bool = False,
          overwrite: bool = False, validation_only: bool = False, device: str = "auto", num_gpus: int = 1,
          trainer: str | None = None, checkpoint_every: int | None = None, seed: int = 12345,
          preprocessed_folder: str | Path | None = None, results_folder: str | Path | None = None) -> list:
    """Train fold ``fold`` (a number, a list, or ``"all"``) of ``method``'s plans (default: the
    planner's choice in plans.json). ``schedule`` picks another of the method's schedules;
    ``overrides`` (or the shorthands ``epochs``, ``cycles``, ``iterations``) change single settings
    of it. Each fold ends calibrated, scored on its validation cases and saved as model.pt.
    Returns a list of autouad.training.run.TrainedFold (rank 0's)."""
    from autouad.planning.plans_files import find_plans
    from autouad.training.fold_data import TrainingError
    from autouad.training.run import TrainRequest, alias_overrides, run_training

    preprocessed_root, results_root = folder("preprocessed", preprocessed_folder), folder("results", results_folder)
    name = find_dataset_name(dataset, (preprocessed_root, results_root))
    plans, plans_path = find_plans(preprocessed_root / name, method, plans_name)
    num_folds = plans.folds.num_folds
    if fold == "all":
        folds = list(range(num_folds))
    else:
        folds = [int(f) for f in (fold if isinstance(fold, (list, tuple)) else [fold])]
        bad = [f for f in folds if not 0 <= f < num_folds]
        if bad:
            raise TrainingError(f"fold {bad[0]} is out of range: {name} has folds 0 to {num_folds - 1} (or 'all')")
    request = TrainRequest(
        dataset=name, plans=plans, plans_path=plans_path, results_folder=results_root, folds=folds,
        schedule=schedule,
        overrides={**alias_overrides(plans.method, cycles=cycles, epochs=epochs, iterations=iterations),
                   **(overrides or {})},
        continue_training=continue_training or validation_only, overwrite=overwrite,
        validation_only=validation_only, device=_device(device), num_gpus=num_gpus, trainer=trainer,
        checkpoint_every=checkpoint_every, seed=seed)
    return run_training(request)


def train_candidates(dataset: str | int, fold: int | str | list[int], *, schedule: str | None = None,
                     device: str = "auto", raw_folder: str | Path | None = None,
                     preprocessed_folder: str | Path | None = None, results_folder: str | Path | None = None,
                     num_processes: int = 2, **train_options) -> dict[str, list]:
    """Train every candidate method of the plans (``plans.json``'s ``candidates``, in their order) on
    ``fold``: each is planned and preprocessed first when it has no plans yet (with the planner's
    schedule), and folds already trained are reused (an interrupted one continues). A candidate
    marked ``all_channels`` (a multi-channel dataset: the first method on every channel, not its
    paper's one) gets its own plans, ``autouadPlans_<method>_allchannels``. Returns
    {method or method:allchannels: [TrainedFold]}; then ``find_best_configuration`` compares them."""
    from autouad.planning.plans import load_plans
    from autouad.planning.plans_files import default_plans_name, plans_file_name
    from autouad.selection.evidence import candidate_name
    from autouad.training.run import fold_output_folder, trained_fold_from_folder

    preprocessed_root, results_root = folder("preprocessed", preprocessed_folder), folder("results", results_folder)
    name = find_dataset_name(dataset, (folder("raw", raw_folder), preprocessed_root))
    default = load_plans(preprocessed_root / name / "plans.json")
    folds = list(range(default.folds.num_folds)) if fold == "all" else \
        [int(f) for f in (fold if isinstance(fold, (list, tuple)) else [fold])]
    trained = {}
    for index, candidate in enumerate(default.candidates):
        method = candidate.method
        plans_name = (None if index == 0 and method == default.method
                      else default_plans_name(method, candidate.all_channels))
        plans_path = preprocessed_root / name / plans_file_name(plans_name)
        if not plans_path.is_file():
            plan_and_preprocess(name, method=method, schedule=schedule or default.schedule.get("name"),
                                num_processes=num_processes, steps=("plan", "preprocess"), raw_folder=raw_folder,
                                preprocessed_folder=preprocessed_folder, all_channels=candidate.all_channels)
        plans = load_plans(plans_path)
        key = candidate_name(method, plans.plans_name)
        trained[key] = []
        for k in folds:
            output = fold_output_folder(results_root, name, plans, k)
            if (output / "model.pt").is_file():
                print(f"{key} fold {k}: trained, calibrated and saved by an earlier run; reused")
                trained[key].append(trained_fold_from_folder(output))
                continue
            trained[key] += train(name, k, method, schedule, plans_name=plans_name, device=device,
                                  continue_training=(output / "checkpoint_latest.pt").is_file(),
                                  preprocessed_folder=preprocessed_root, results_folder=results_root,
                                  **train_options)
    return trained


def _device(requested: str | None) -> str:
    from autouad.inference.predictor import choose_device
    return choose_device(requested)


# ---- find the best configuration ---------------------------------------------------------------------
def find_best_configuration(dataset: str | int, folds: list[int] | None = None, *, quiet: bool = False,
                            raw_folder: str | Path | None = None, preprocessed_folder: str | Path | None = None,
                            results_folder: str | Path | None = None) -> dict:
    """Compare every trained method's configurations and the baselines out of fold over ``folds``
    (default: all of the plans' folds), choose one, and write ``inference_instructions.json`` (and
    a short ``.txt``) into the dataset's results folder; returns the instructions.
    (autouad.selection.find_best explains candidates, threshold sources and the metric.)"""
    from autouad.selection.find_best import find_best_configuration as find_best

    raw_root, preprocessed_root = folder("raw", raw_folder), folder("preprocessed", preprocessed_folder)
    results_root = folder("results", results_folder)
    name = find_dataset_name(dataset, (preprocessed_root, results_root))
    return find_best(name, raw_root, preprocessed_root, results_root, folds, quiet=quiet)


# ---- predict -------------------------------------------------------------------------------------------
@dataclass
class PredictionRun:
    output_folder: Path
    model_folder: Path
    record: dict = field(repr=False)       # predictions.json

    @property
    def num_predicted(self) -> int:
        return self.record["num_predicted"]

    @property
    def failed(self) -> dict[str, str]:
        return self.record["failed"]


def find_model_folder(results_dataset_folder: Path, method: str | None = None,
                      plans_name: str | None = None) -> Path:
    """The one trained ``<method>__<plans>`` folder of a dataset that fits ``method`` / ``plans_name``
    (the planner's own plans win over plans made for a named method)."""
    from autouad.inference.predictor import PredictionError, trained_folds
    from autouad.planning.plans_files import DEFAULT_PLANS_NAME

    root = Path(results_dataset_folder)
    found = sorted(p for p in root.glob("*__*") if p.is_dir() and trained_folds(p))
    fits = [p for p in found if (method is None or p.name.split("__")[0] == method)
            and (plans_name is None or p.name.split("__", 1)[1] == plans_name)]
    if len(fits) > 1 and plans_name is None:
        fits = [p for p in fits if p.name.split("__", 1)[1] == DEFAULT_PLANS_NAME] or fits
    if len(fits) == 1:
        return fits[0]
    if not fits:
        trained = ", ".join(p.name for p in found) or "none"
        raise PredictionError(f"{root}: no trained model fits -m {method} -p {plans_name} (trained: {trained}); "
                              f"train one with autouad_train")
    raise PredictionError(f"{root}: several trained models fit ({', '.join(p.name for p in fits)}); "
                          f"choose with -m / -p")


def find_trained_dataset(results_folder: Path, input_folder: Path, raw_folder: Path | None) -> str:
    """The dataset to predict with when none is named: the only one with trained models, or the
    one whose raw folder holds the input folder."""
    from autouad.inference.predictor import PredictionError, trained_folds
    from autouad.paths import DATASET_FOLDER_RE

    trained = sorted(p.name for p in Path(results_folder).glob("Dataset*")
                     if DATASET_FOLDER_RE.match(p.name) and any(trained_folds(m) for m in p.glob("*__*")))
    if len(trained) == 1:
        return trained[0]
    if raw_folder is not None:
        inside = Path(input_folder).resolve()
        holding = [name for name in trained if (Path(raw_folder) / name).resolve() in inside.parents]
        if len(holding) == 1:
            return holding[0]
    if not trained:
        raise PredictionError(f"{results_folder}: no trained model; train one with autouad_train, or name a model "
                              f"with -m/--model")
    raise PredictionError(f"{results_folder}: several datasets have trained models ({', '.join(trained)}); "
                          f"choose one with -d")


def predict(input_folder: str | Path, output_folder: str | Path, model_folder: str | Path | None = None,
            dataset: str | int | None = None, roi_folder: str | Path | None = None, folds: list[int] | None = None,
            *, method: str | None = None, plans_name: str | None = None, save_maps: bool = False,
            postprocess: bool = True, device: str | None = None, batch_size: int | None = None,
            precision: str = "auto", checkpoint: str | None = None, results_folder: str | Path | None = None,
            raw_folder: str | Path | None = None, resume: bool = False, report: bool = False) -> PredictionRun:
    """Masks (and with ``save_maps`` maps and regions) for every image in ``input_folder``, written
    to ``output_folder`` in the inputs' geometry, with the trained folds of ``model_folder``, or of
    ``dataset`` (``method`` / ``plans_name`` pick among its models), or, with neither, of the only
    dataset that has trained models. A case that cannot be read is reported in the record's
    ``failed`` and the others are predicted. ``resume`` predicts only the cases an interrupted run
    into the same folder did not finish; ``report`` writes report.html (autouad.inference.report)."""
    run = _predict(input_folder, output_folder, model_folder, dataset, roi_folder, folds, method=method,
                   plans_name=plans_name, save_maps=save_maps or report, postprocess=postprocess, device=device,
                   batch_size=batch_size, precision=precision, checkpoint=checkpoint, results_folder=results_folder,
                   raw_folder=raw_folder, resume=resume)
    if report:
        from autouad.inference.report import write_report
        run.record["report"] = str(write_report(Path(output_folder)))
        print(f"report: {run.record['report']}")
    return run


def _predict(input_folder, output_folder, model_folder=None, dataset=None, roi_folder=None, folds=None, *, method=None,
             plans_name=None, save_maps=False, postprocess=True, device=None, batch_size=None, precision="auto",
             checkpoint=None, results_folder=None, raw_folder=None, resume=False) -> PredictionRun:
    from autouad.inference.predictor import AnomalyPredictor, check_folders
    from autouad.model import CHECKPOINT_FINAL

    from autouad.inference.archive import OpenedArchive
    from autouad.selection.find_best import INSTRUCTIONS_FILE

    check_folders(Path(input_folder), Path(output_folder), None if roi_folder is None else Path(roi_folder))
    roi = None if roi_folder is None else Path(roi_folder)
    if model_folder is not None and Path(model_folder).suffix == ".zip":
        with OpenedArchive(Path(model_folder)) as archive:
            run = _predict(input_folder, output_folder, archive.model_folder(), roi_folder=roi_folder, folds=folds,
                           save_maps=save_maps, postprocess=postprocess, device=device, batch_size=batch_size,
                           precision=precision, checkpoint=checkpoint, resume=resume)
            run.record["model"] = str(model_folder)
            return PredictionRun(run.output_folder, Path(model_folder), run.record)
    if model_folder is not None and (Path(model_folder) / INSTRUCTIONS_FILE).is_file() and folds is None:
        return predict_as_instructed(Path(model_folder) / INSTRUCTIONS_FILE, Path(input_folder), Path(output_folder),
                                     roi, save_maps, device, None, resume)
    if model_folder is None:
        results_root = folder("results", results_folder)
        raw_root = folder("raw", raw_folder)
        name = (find_dataset_name(dataset, (results_root,)) if dataset is not None
                else find_trained_dataset(results_root, Path(input_folder), raw_root))
        instructions = results_root / name / INSTRUCTIONS_FILE
        if method is None and plans_name is None and folds is None and instructions.is_file():
            return predict_as_instructed(instructions, Path(input_folder), Path(output_folder), roi, save_maps,
                                         device, raw_root / name, resume)
        if method is None and plans_name is None:
            print(f"note: {results_root / name} has no {INSTRUCTIONS_FILE}: predicting with the planner's method; "
                  f"run autouad_find_best_configuration -d {name} to compare the candidates and the baselines "
                  f"first", file=sys.stderr)
        model_folder = find_model_folder(results_root / name, method, plans_name)
    predictor = AnomalyPredictor.from_folder(model_folder, folds, device, checkpoint or CHECKPOINT_FINAL,
                                             postprocess=postprocess, batch_size=batch_size, precision=precision)
    if predictor.dataset.roi_name and roi_folder is None:
        print(f"warning: the model was trained inside {predictor.dataset.roi_name} masks; without ROI masks the "
              f"{'body' if predictor.modality == 'CT' else 'non-zero region'} of each image stands in for them",
              file=sys.stderr)
    print(f"model: {model_folder} (folds {', '.join(map(str, predictor.folds))}); threshold "
          f"{predictor.threshold:.4g}, anomalous {predictor.side} it")
    record = predictor.predict_folder(Path(input_folder), Path(output_folder), roi, save_maps, resume=resume)
    return PredictionRun(Path(output_folder), Path(model_folder), record)


def predict_as_instructed(instructions: Path, input_folder: Path, output_folder: Path, roi_folder: Path | None,
                          save_maps: bool, device: str | None, raw_dataset_folder: Path | None,
                          resume: bool = False) -> PredictionRun:
    """Predict with the configuration an inference_instructions.json chose."""
    from autouad.inference.configured import ConfiguredPredictor

    predictor = ConfiguredPredictor.from_instructions(instructions, device, raw_dataset_folder)
    print(f"following {instructions}: {predictor.chosen['configuration']}")
    record = predictor.predict_folder(input_folder, output_folder, roi_folder, save_maps, resume=resume)
    return PredictionRun(output_folder, instructions.parent, record)


# ---- shareable models ----------------------------------------------------------------------------------
def export_model(dataset: str | int, output: str | Path, *, model_folder: str | Path | None = None,
                 folds: list[int] | None = None, results_folder: str | Path | None = None) -> Path:
    """One zip with what prediction needs: the dataset's chosen configuration (its inference
    instructions and their models), or one ``model_folder`` (autouad.inference.archive)."""
    from autouad.inference.archive import export_model as export

    results_root = folder("results", results_folder)
    name = find_dataset_name(dataset, (results_root,))
    return export(results_root / name, Path(output), None if model_folder is None else Path(model_folder), folds)


def install_model(archive: str | Path, *, results_folder: str | Path | None = None, overwrite: bool = False) -> Path:
    """Check an exported zip (paths, checksums, weights-only loading) and unpack it into the results
    folder; returns the dataset's results folder."""
    from autouad.inference.archive import install_model as install
    return install(Path(archive), folder("results", results_folder), overwrite)


# ---- evaluate ------------------------------------------------------------------------------------------
@dataclass
class EvaluationResult:
    path: Path                 # where summary.json was written
    summary: dict = field(repr=False)

    @property
    def pixel(self) -> dict | None:
        return self.summary["pixel"]

    @property
    def image(self) -> dict | None:
        return self.summary["image"]


def evaluate(reference_folder: str | Path, prediction_folder: str | Path, *, roi_folder: str | Path | None = None,
             output: str | Path | None = None) -> EvaluationResult:
    """Score a prediction folder against a folder of reference masks (pixel level: Dice, AUROC, AP,
    best-possible Dice) or a labels file (a ``case,label`` CSV or a dataset.json: image level);
    ``summary.json`` goes to ``output`` (default: in the prediction folder)."""
    from autouad.evaluation.evaluator import default_summary_path, evaluate_folders

    output = Path(output) if output is not None else default_summary_path(Path(prediction_folder))
    summary = evaluate_folders(Path(reference_folder), Path(prediction_folder),
                               roi_folder=None if roi_folder is None else Path(roi_folder), output=output)
    return EvaluationResult(output, summary)


# ---- baselines and summaries ---------------------------------------------------------------------------
def baseline_knn(dataset: str | int, output_folder: str | Path, input_folder: str | Path | None = None, *,
                 k: int = 1, size: int = 32, raw_folder: str | Path | None = None) -> dict:
    """The pixel kNN baseline's scores for a 2D dataset's images (default: its imagesTs), written in
    autouad_predict's layout so that ``evaluate`` scores it as it scores a method."""
    from autouad.evaluation.baselines import knn_baseline_predictions
    from autouad.inference.predictor import check_folders

    raw_root = folder("raw", raw_folder)
    dataset_folder = raw_root / find_dataset_name(dataset, (raw_root,))
    input_folder = Path(input_folder) if input_folder is not None else dataset_folder / "imagesTs"
    check_folders(input_folder, Path(output_folder), None)
    return knn_baseline_predictions(dataset_folder, input_folder, Path(output_folder), k=k, size=size)


def baseline_intensity(dataset: str | int, output_folder: str | Path, input_folder: str | Path | None = None, *,
                       channel: str | None = None, z: float = 2.0, roi_folder: str | Path | None = None,
                       raw_folder: str | Path | None = None, preprocessed_folder: str | Path | None = None) -> dict:
    """The intensity baseline's masks for a dataset's images (default: its imagesTs, with roisTs):
    per case the robust z-score of one channel (default: the one whose anomalies the fingerprint
    measured with the strongest contrast, else the first) inside the ROI or foreground, signed by
    the measured polarity, cut at ``z`` (2 by default; find_best_configuration chooses z out of fold
    instead). Written in autouad_predict's layout, so ``evaluate`` scores it as it scores a method."""
    from autouad.inference.configured import ConfiguredPredictor
    from autouad.model import DatasetFacts
    from autouad.utils.files import load_json

    raw_root, preprocessed_root = folder("raw", raw_folder), folder("preprocessed", preprocessed_folder)
    name = find_dataset_name(dataset, (raw_root, preprocessed_root))
    meta = load_json(raw_root / name / "dataset.json")
    names = [meta["channel_names"][k] for k in sorted(meta["channel_names"], key=int)]
    fingerprint_path = preprocessed_root / name / FINGERPRINT_FILE
    polarity = (load_json(fingerprint_path)["summary"].get("anomaly_polarity") or {}) if fingerprint_path.is_file() else {}
    if channel is None:
        channel = max(names, key=lambda n: abs((polarity.get(n) or {}).get("median_contrast", 0.0))) if polarity \
            else names[0]
    if channel not in names:
        raise APIError(f"{raw_root / name / 'dataset.json'}: no channel {channel!r} (channels: {', '.join(names)})")
    dark = (polarity.get(channel) or {}).get("polarity") == "dark"
    member = f"intensity:{channel}"
    instructions = {
        "dataset": name, "task": "segmentation", "folds": [], "warnings": [],
        "dataset_facts": DatasetFacts.from_dataset_json(meta).to_dict(),
        "chosen": {"configuration": f"{member} with case_z cut (z = {z:g}), no post-processing",
                   "members": {member: {"kind": "intensity", "channel": names.index(channel),
                                        "sign": -1.0 if dark else 1.0, "signs": []}},
                   "threshold": {"source": "case_z", "z": float(z)}, "postprocessing": {"kernel": 0}}}
    images = Path(input_folder) if input_folder is not None else raw_root / name / "imagesTs"
    rois = Path(roi_folder) if roi_folder is not None else (
        raw_root / name / "roisTs" if input_folder is None and (raw_root / name / "roisTs").is_dir() else None)
    return ConfiguredPredictor(instructions).predict_folder(images, Path(output_folder), rois, save_maps=True)


def summarize(dataset: str | int, *, results_folder: str | Path | None = None) -> dict:
    """Every trained fold of every model of a dataset, from the folds' validation summaries; saved as
    ``validation_summary.json`` in the dataset's results folder."""
    from autouad.evaluation.summary import summarize_folds

    results_root = folder("results", results_folder)
    return summarize_folds(results_root / find_dataset_name(dataset, (results_root,)))
