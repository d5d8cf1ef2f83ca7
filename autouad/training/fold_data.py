"""A fold's preprocessed slices: which cases train and which validate, and pools of slices to sample.

The cases are autouad.preprocessing.cases.PreprocessedCase, memory-mapped, so a pool of any size
costs no RAM until a batch reads it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from autouad.planning.plans import Plans
from autouad.preprocessing.cases import MissingCaseError, PreprocessedCase
from autouad.preprocessing.cases import load_preprocessed_case as _load_case
from autouad.utils.files import load_json


class TrainingError(Exception):
    """A problem with the training inputs or a checkpoint, reported in one line."""


def load_preprocessed_case(folder: Path, case: str, modality: str = "MRI") -> PreprocessedCase:
    try:
        return _load_case(folder, case, modality)
    except MissingCaseError as e:
        raise TrainingError(str(e)) from None


class SlicePool:
    """A list of (case, slice) references over memory-mapped cases, read in batches."""

    def __init__(self, name: str, cases: list[PreprocessedCase], refs: np.ndarray, channels: list[int]):
        self.name = name
        self.cases = cases
        self.refs = np.asarray(refs, dtype=np.int64).reshape(-1, 2)  # rows: (case index, slice index)
        self.channels = list(channels)

    def __len__(self) -> int:
        return len(self.refs)

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Slices as float32 (B, C, H, W), channels as the plan selects them."""
        out = [self.cases[c].data[s][self.channels] for c, s in self.refs[np.asarray(indices)]]
        return np.ascontiguousarray(np.stack(out).astype(np.float32, copy=False))

    def read_roi(self, indices: np.ndarray) -> np.ndarray | None:
        rows = self.refs[np.asarray(indices)]
        if any(self.cases[c].roi is None for c, _ in rows):
            return None
        return np.stack([self.cases[c].roi[s] for c, s in rows]).astype(bool)

    def balanced(self, size: int, seed: int) -> "SlicePool":
        """The pool grown to ``size`` by drawing duplicates at random (ASC-Net makes its input and
        reference sets equally large this way); a pool already that large is returned unchanged."""
        if len(self) >= size or len(self) == 0:
            return self
        rng = np.random.default_rng(seed)
        extra = rng.choice(len(self), size - len(self), replace=True)
        return SlicePool(self.name, self.cases, np.concatenate([self.refs, self.refs[extra]]), self.channels)


class FoldData:
    """The cases of one fold, split as ``splits_final.json`` says, and the slice pools built from them.

    ``train_cases`` train the networks; ``validation_cases`` are held out, run through the model at
    the end and used for calibration and scoring (and by label-free stopping rules on the way).
    """

    def __init__(self, preprocessed_dataset_folder: Path, plans: Plans, fold: int):
        self.folder = Path(preprocessed_dataset_folder)
        self.plans = plans
        self.data_folder = self.folder / plans.preprocessing.data_folder
        splits_file = self.folder / plans.folds.file
        if not splits_file.is_file():
            raise TrainingError(f"{splits_file}: no splits; run autouad_plan_and_preprocess first")
        splits = load_json(splits_file)
        if not 0 <= fold < len(splits):
            raise TrainingError(f"fold {fold} is out of range: {splits_file} defines folds 0 to {len(splits) - 1}")
        if not (self.data_folder / "dataset_index.json").is_file():
            raise TrainingError(f"{self.data_folder}: not preprocessed; run autouad_plan_and_preprocess first")
        self.fold = fold
        self.train_names = sorted(splits[fold]["train"])
        self.validation_names = sorted(splits[fold]["val"])
        self.channels = list(plans.input_channels)
        dataset_json = self.folder / "dataset.json"
        self.modality = load_json(dataset_json)["modality"] if dataset_json.is_file() else "MRI"
        self.train_cases = [load_preprocessed_case(self.data_folder, c, self.modality) for c in self.train_names]
        self.validation_cases = [load_preprocessed_case(self.data_folder, c, self.modality)
                                 for c in self.validation_names]

    def pool(self, name: str, cases: list[PreprocessedCase], select=None) -> SlicePool:
        """Slices of ``cases``; ``select(case) -> bool array`` keeps some of each case's slices."""
        refs = []
        for ci, case in enumerate(cases):
            keep = np.ones(case.num_slices, bool) if select is None else np.asarray(select(case), bool)
            refs.extend((ci, int(s)) for s in np.flatnonzero(keep))
        return SlicePool(name, cases, np.array(refs, dtype=np.int64).reshape(-1, 2), self.channels)

    def reference_pool(self, cases: list[PreprocessedCase] | None = None) -> SlicePool:
        """The normal reference: slices of normal cases, or slices without anomaly under the
        ``slices_without_anomaly`` protocol (preprocessing marked them ``is_reference``)."""
        return self.pool("reference", self.train_cases if cases is None else cases, lambda c: c.is_reference)

    def validation_pool(self) -> SlicePool:
        return self.pool("validation", self.validation_cases)
