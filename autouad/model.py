"""A trained model as an object: one fold's networks, the plans it was trained with, its method, the
facts of the dataset that preprocessing needs, its calibrated threshold and its image-level cut.

    model = AnomalyModel.load("results/Dataset001_BraTS/ascnet__autouadPlans/fold_0")
    maps = model.anomaly_maps(slices)        # (S, C, H, W) preprocessed slices -> (S, H, W)

On disk a trained fold keeps two files of weights: ``checkpoint_final.pt``, everything resuming
needs (every network, the optimizers, the data streams), and ``model.pt``, written after
calibration, with only what prediction needs: the networks the method predicts with (ASC-Net's M,
not its discriminator; HealthyGAN's generator, not its critic), the plans, the dataset facts and
the threshold. Both hold only tensors and plain data and are read with
``torch.load(..., weights_only=True)``: a model received from someone else cannot run code when
it is loaded.

Folds trained before model.pt existed load from their checkpoint_final.pt, the model folder's
plans.json and dataset.json, and threshold.json (``load`` picks the way by itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autouad import __version__
from autouad.calibration.thresholds import THRESHOLD_FILE, CalibrationError, Threshold
from autouad.planning.plans import Plans, PlansError
from autouad.training.checkpoint import CHECKPOINT_FINAL, load_checkpoint
from autouad.training.fold_data import TrainingError
from autouad.utils.files import atomic_output, load_json

MODEL_FILE = "model.pt"
MODEL_FORMAT = "autouad-model-1"
PRECISIONS = ("fp32", "fp16", "bf16")


class ModelError(Exception):
    """A file or folder that is not a usable trained model; the message names it and says why."""


@dataclass(frozen=True)
class DatasetFacts:
    """What prediction must know of the dataset a model was trained on (from its dataset.json)."""
    modality: str
    channel_names: dict[str, str]
    normal_reference: str = "cases"
    roi_name: str | None = None

    @classmethod
    def from_dataset_json(cls, meta: dict) -> "DatasetFacts":
        return cls(meta["modality"], {str(k): str(v) for k, v in meta["channel_names"].items()},
                   meta.get("normal_reference", "cases"), meta.get("roi_name"))

    def to_dict(self) -> dict:
        return {"modality": self.modality, "channel_names": dict(self.channel_names),
                "normal_reference": self.normal_reference, "roi_name": self.roi_name}


class AnomalyModel:
    """One trained fold. ``trainer`` is the method's trainer holding only the inference networks
    (it knows how its networks turn slices into maps); ``threshold`` is None before calibration."""

    def __init__(self, trainer, dataset: DatasetFacts, threshold: Threshold | None, fold: int,
                 source: Path | None = None):
        self.trainer = trainer
        self.dataset = dataset
        self.threshold = threshold
        self.fold = fold
        self.source = source

    # ---- what it is ----------------------------------------------------------------------------------
    @property
    def plans(self) -> Plans:
        return self.trainer.plans

    @property
    def method(self) -> str:
        return self.plans.method

    @property
    def networks(self) -> dict[str, torch.nn.Module]:
        return self.trainer.networks

    @property
    def map_name(self) -> str:
        return self.trainer.map_name

    @property
    def device(self) -> torch.device:
        return self.trainer.device

    def __repr__(self) -> str:
        cut = "uncalibrated" if self.threshold is None else f"threshold {self.threshold.value:.4g}"
        return f"AnomalyModel({self.method}, {self.plans.dataset}, fold {self.fold}, {cut})"

    # ---- prediction ------------------------------------------------------------------------------------
    def anomaly_maps(self, slices: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """(S, C_all, H, W) preprocessed slices with every channel of the plan -> (S, H, W) float32
        maps, higher = more anomalous except where the threshold says ``below``."""
        return self.trainer.predict_slices(slices, batch_size)

    def set_precision(self, precision: str) -> None:
        """auto (bf16 autocast on a GPU, fp32 on the CPU), fp32 or bf16 for the forward passes."""
        self.trainer.inference_precision = precision

    # ---- saving and loading --------------------------------------------------------------------------
    def state(self, precision: str = "fp32") -> dict:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]

        # dynamic-network-architectures' blocks register each layer twice (conv and all_modules.0),
        # so one tensor appears under two keys; torch.save writes a shared storage once, and the
        # cast keeps that sharing (one cast per tensor) or fp16 files would hardly shrink.
        cast: dict[tuple, torch.Tensor] = {}

        def stored(tensor: torch.Tensor) -> torch.Tensor:
            # keyed on the module's own tensor (alive while we save), never on a temporary CPU copy
            # whose freed address a later tensor could reuse
            tensor = tensor.detach()
            if not tensor.is_floating_point():
                return tensor.cpu()
            key = (str(tensor.device), tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
                   tuple(tensor.shape), tensor.stride())
            if key not in cast:
                cast[key] = tensor.to("cpu", dtype)
            return cast[key]

        return {"format": MODEL_FORMAT, "autouad_version": __version__, "method": self.method,
                "trainer": self.trainer.dotted_name(), "fold": self.fold, "plans": self.plans.to_dict(),
                "dataset": self.dataset.to_dict(),
                "threshold": None if self.threshold is None else self.threshold.to_record(),
                "precision": precision,
                "networks": {name: {k: stored(v) for k, v in net.state_dict().items()}
                             for name, net in self.networks.items()}}

    def save(self, path: str | Path, precision: str = "fp32") -> Path:
        """Write the model file (atomically); ``precision`` fp16 / bf16 halves its size (the
        weights are cast back to float32 on loading)."""
        path = Path(path)
        with atomic_output(path) as tmp:
            torch.save(self.state(precision), tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu",
             checkpoint: str = CHECKPOINT_FINAL) -> "AnomalyModel":
        """A model from a ``model.pt`` file or a trained fold's folder (its model.pt, else, for
        folds trained before model.pt existed, its ``checkpoint``, plans, dataset.json and
        threshold.json)."""
        path = Path(path)
        if path.is_dir():
            if checkpoint == CHECKPOINT_FINAL and (path / MODEL_FILE).is_file():
                return cls.from_state(_read(path / MODEL_FILE), path / MODEL_FILE, device)
            return cls.from_fold_folder(path, device, checkpoint)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file or fold folder")
        return cls.from_state(_read(path), path, device)

    @classmethod
    def from_state(cls, state: dict, source: Path, device: str | torch.device = "cpu") -> "AnomalyModel":
        if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
            raise ModelError(f"{source}: not an autouad model file (format {state.get('format') if isinstance(state, dict) else None!r})")
        try:
            plans = _plans(state["plans"], source)
            trainer_cls = _trainer_class(state.get("trainer"), plans.method, source)
            networks = {name: {k: (v.float() if v.is_floating_point() else v) for k, v in weights.items()}
                        for name, weights in state["networks"].items()}
            fold = int(state["fold"])
            dataset = DatasetFacts(**state["dataset"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelError(f"{source}: malformed model file ({type(e).__name__}: {e})") from None
        trainer = _inference_trainer(trainer_cls, plans, fold, networks, source, device)
        threshold = None if state.get("threshold") is None else _threshold(state["threshold"], source)
        return cls(trainer, dataset, threshold, fold, source)

    @classmethod
    def from_fold_folder(cls, fold_folder: Path, device: str | torch.device = "cpu",
                         checkpoint: str = CHECKPOINT_FINAL) -> "AnomalyModel":
        """The compatibility path: a fold folder as autouad_train wrote it before model.pt."""
        fold_folder = Path(fold_folder)
        checkpoint_path = fold_folder / checkpoint
        if not checkpoint_path.is_file():
            raise ModelError(f"{checkpoint_path}: fold has no {checkpoint}; train it with autouad_train")
        try:
            state = load_checkpoint(checkpoint_path)
        except TrainingError as e:
            raise ModelError(str(e)) from None
        model_folder = fold_folder.parent
        if isinstance(state.get("plans"), dict):
            plans = _plans(state["plans"], checkpoint_path)
        elif (model_folder / "plans.json").is_file():
            plans = _plans(load_json(model_folder / "plans.json"), model_folder / "plans.json")
        else:
            raise ModelError(f"{model_folder / 'plans.json'}: missing; is {fold_folder} a trained fold?")
        dotted = state.get("trainer")
        log = fold_folder / "training_log.json"
        if dotted is None and log.is_file():
            dotted = load_json(log).get("trainer")  # a user's own trainer subclass too
        trainer_cls = _trainer_class(dotted, plans.method, checkpoint_path)
        dataset_json = model_folder / "dataset.json"
        if not dataset_json.is_file():
            raise ModelError(f"{dataset_json}: missing; is {model_folder} a trained model folder?")
        dataset = DatasetFacts.from_dataset_json(load_json(dataset_json))
        threshold_path = fold_folder / THRESHOLD_FILE
        threshold = _threshold(load_json(threshold_path), threshold_path) if threshold_path.is_file() else None
        fold = int(state.get("fold", fold_folder.name.split("_")[-1]))
        trainer = _inference_trainer(trainer_cls, plans, fold, state["networks"], checkpoint_path, device)
        return cls(trainer, dataset, threshold, fold, checkpoint_path)

    @classmethod
    def from_trainer(cls, trainer, dataset: DatasetFacts, threshold: Threshold | None) -> "AnomalyModel":
        """The model of a trainer that has just trained: its inference networks, as they are."""
        state = {name: net.state_dict() for name, net in trainer.networks.items()}
        inference = _inference_trainer(type(trainer), trainer.plans, trainer.fold, state, "the trainer",
                                       trainer.device)
        return cls(inference, dataset, threshold, trainer.fold, trainer.output_folder)


def _read(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated, foreign or pickled files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: not a readable autouad model file ({first[:160]})") from None


def _plans(data: dict, source: Path) -> Plans:
    try:
        return Plans.from_dict(data, source)
    except PlansError as e:
        raise ModelError(str(e)) from None


def _threshold(record: dict, source: Path) -> Threshold:
    try:
        return Threshold.from_record(record, source)
    except CalibrationError as e:
        raise ModelError(str(e)) from None


def _trainer_class(dotted: str | None, method: str, source: Path):
    """The trainer a model file names (a user's subclass too, nnU-Net style), which must be the
    method's own trainer or derive from it: a file cannot swap in an unrelated class."""
    from autouad.methods import trainer_class
    try:
        own = trainer_class(method)
        cls = trainer_class(method, dotted) if dotted else own
    except TrainingError as e:
        raise ModelError(f"{source}: {e}") from None
    if not issubclass(cls, own):
        raise ModelError(f"{source}: its trainer {dotted} is not {method}'s trainer {own.__name__} or a subclass of it")
    return cls


def _inference_trainer(trainer_cls, plans: Plans, fold: int, networks: dict, source, device):
    try:
        return trainer_cls.for_inference(plans, fold, networks, source, device)
    except TrainingError as e:
        raise ModelError(str(e)) from None
