"""Typed plans: plans.json loads into these dataclasses, checked on load.

The JSON on disk stays what it was (readable, written by the planner, editable by hand); what reads
it gets attributes instead of nested dicts, and a hand-edited file with a misspelt key, a wrong
type or a missing field fails at once with one line naming the file and the field, instead of deep
inside training:

    plans.json: preprocessing: unknown key 'slice_sise' (known: channels, crop, ...)

Two parts stay dicts on purpose: ``schedule`` and ``method_settings`` hold what one method's
paper needs (cycles, lambdas, widths) and differ from method to method; their keys are checked
against the method's own plans file (autouad.planning.method_plans) instead.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# keys a plans file may carry for compatibility: written by older versions, no longer read
LEGACY_METHOD_SETTINGS = ("needs",)


# schedule settings every method has: a wall-clock budget (the trainer's fit_to_budget), what
# fitting wrote, which networks stand for the fold (the trainer's KEEP_CHECKPOINT) and the precision
# of the training iterations (the trainer's TRAINING_PRECISIONS)
GENERIC_SCHEDULE_KEYS = ("budget_minutes", "budget_factor", "keep_checkpoint", "training_precision")


def keeps_best_proxy_by_default(schedule: dict, task: str) -> bool:
    """Whether a schedule gets keep_checkpoint best_proxy without asking: a wall-clock budget leaves
    the networks early in training, where a few iterations can undo a good state (DRAEM on BraTS-6:
    pixel AUROC 0.944 to 0.214 in its last five), so on pixel-level data the label-free proxy's best
    curve point is kept (docs/results.md, "Label-free kept checkpoint"); image-level data keeps the
    final networks (the proxy is unmeasured there), and a method's plans may say otherwise."""
    return bool(schedule.get("budget_minutes")) and task == "segmentation" and "keep_checkpoint" not in schedule


def anomaly_intensity_sign(modality: str, peak: str | None = None) -> float:
    """+1 where anomalies are brighter than the tissue around them, -1 where darker: the plans'
    histogram side where the fingerprint measured it (ASC-Net's peak), else the modality's rule
    the planner falls back on without masks (CT lesions darker than the organ; brain lesions in
    FLAIR/T2 and X-ray opacities brighter)."""
    if peak is not None:
        return 1.0 if peak == "rightmost" else -1.0
    return -1.0 if modality == "CT" else 1.0


class PlansError(ValueError):
    """A plans file that does not fit the schema; the message names the file and the field."""


@dataclass
class Normalization:
    scheme: Literal["minmax", "zscore", "ct_window", "fixed_range"]
    histogram_equalization: bool = False
    clip_percentiles: list[float] | None = None   # minmax: the robust range inside the foreground
    window: list[float] | None = None              # ct_window: HU window
    range: list[float] | None = None               # fixed_range: e.g. [0, 255]


@dataclass
class Preprocessing:
    mode: Literal["spacing", "resize"]
    slice_size: list[int]
    crop: Literal["roi", "foreground", "none"]
    image_order: int
    mask_order: int
    normalization: Normalization
    channels: list[str]
    data_folder: str
    target_spacing: list[float] | None = None
    slice_axis: str | None = None


@dataclass
class ThresholdPlan:
    strategy: str                                  # a name in autouad.calibration.thresholds.STRATEGIES
    cut: Literal["valley", "peak"] | None = None
    peak: Literal["rightmost", "leftmost"] | None = None
    percentile: float | None = None
    # histogram_peak with several input channels: the position (within input_channels) of the channel
    # of the output image whose histogram is read, the one the anomalies contrast most in
    channel: int | None = None
    # image-level data: how a map becomes an image score (autouad.selection.image_scores). None: the
    # method's declared one, unless the folds' labelled validation images rank another clearly better
    image_score: Literal["mean", "max_mean_filtered", "top_k_mean"] | None = None  # IMAGE_SCORES


@dataclass
class Postprocessing:
    enabled: bool
    # set when enabled
    operations: list[str] | None = None
    kernel_size: int | None = None
    restrict_to_roi: bool | None = None


@dataclass
class FoldsPlan:
    num_folds: int
    file: str = "splits_final.json"
    seed: int | None = None


@dataclass
class Candidate:
    method: str
    reason: str
    all_channels: bool = False         # the method on every channel instead of its paper's one


@dataclass
class Plans:
    plans_name: str
    dataset: str
    method: str
    task: Literal["segmentation", "image"]
    schedule: dict[str, Any]
    input_channels: list[int]
    preprocessing: Preprocessing
    threshold: ThresholdPlan
    postprocessing: Postprocessing
    batch_size: int
    folds: FoldsPlan
    method_settings: dict[str, Any]
    paper: str = ""
    planner: str = "autouad.planning.planner.AutoUADPlanner"
    autouad_version: str = ""
    command_line_overrides: dict[str, Any] = field(default_factory=dict)
    validation_fraction: float = 0.1
    reasons: dict[str, str] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)   # older plans have none

    @classmethod
    def from_dict(cls, data: dict, source: str | Path = "plans") -> "Plans":
        plans = _build(cls, data, str(source), "")
        plans.check_method_keys(str(source))
        return plans

    def to_dict(self) -> dict:
        return _to_dict(self)

    def replace(self, **changes) -> "Plans":
        """A copy with some top-level fields changed (nested values are copied, not shared)."""
        return Plans.from_dict(dict(self.to_dict(), **{k: _to_dict(v) for k, v in changes.items()}))

    @property
    def slice_size(self) -> tuple[int, int]:
        return tuple(self.preprocessing.slice_size)

    def check_method_keys(self, source: str) -> None:
        """The schedule's and method_settings' keys must be ones the method's plans file knows."""
        from autouad.methods.registry import UnknownMethodError
        from autouad.planning.method_plans import load_method_plans
        try:
            paper = load_method_plans(self.method)
        except UnknownMethodError as e:
            raise PlansError(f"{source}: method: {e}") from None
        known = ({k for schedule in paper.get("schedules", {}).values() for k in schedule}
                 | {"name", "note", *GENERIC_SCHEDULE_KEYS})
        for key in self.schedule:
            if key not in known:
                raise PlansError(f"{source}: schedule: unknown key {key!r} for {self.method} "
                                 f"(known: {', '.join(sorted(known))})")
        known = set(paper) | set(LEGACY_METHOD_SETTINGS)
        for key in self.method_settings:
            if key not in known:
                raise PlansError(f"{source}: method_settings: unknown key {key!r} for {self.method} "
                                 f"(known: {', '.join(sorted(known))})")


def load_plans(path: str | Path) -> Plans:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlansError(f"{path}: no plans file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PlansError(f"{path}: not valid JSON ({e})") from None
    return Plans.from_dict(data, path)


# ---- a small schema checker for the dataclasses above ----------------------------------------------
def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(tp, value, source: str, where: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _check(option, value, source, where)
            except PlansError:
                continue
        raise PlansError(f"{source}: {where}: {value!r} is not {' or '.join(_type_name(a) for a in args)}")
    if origin is Literal:
        if value not in args:
            raise PlansError(f"{source}: {where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise PlansError(f"{source}: {where}: expected an object, found {type(value).__name__}")
        return _build(tp, value, source, where)
    if origin is list:
        if not isinstance(value, list):
            raise PlansError(f"{source}: {where}: expected a list, found {type(value).__name__}")
        return [_check(args[0], v, source, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise PlansError(f"{source}: {where}: expected an object, found {type(value).__name__}")
        return {k: _check(args[1], v, source, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PlansError(f"{source}: {where}: {value!r} is not a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PlansError(f"{source}: {where}: {value!r} is not an integer")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise PlansError(f"{source}: {where}: {value!r} is not a {tp.__name__}")
        return value
    raise TypeError(f"plans schema: unsupported type {tp}")  # a bug in the schema, not in the file


def _build(cls, data: dict, source: str, where: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}: " if where else ""
    for key in data:
        if key not in fields:
            raise PlansError(f"{source}: {prefix}unknown key {key!r} (known: {', '.join(sorted(fields))})")
    values = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise PlansError(f"{source}: {prefix}required key {name!r} is missing")
            continue
        values[name] = _check(hints[name], data[name], source, path)
    return cls(**values)


def _to_dict(value):
    """JSON-ready plain data; optional fields left at None are omitted, as the planner wrote them."""
    if dataclasses.is_dataclass(value):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if v is None and f.default is None:
                continue
            out[f.name] = _to_dict(v)
        return out
    if isinstance(value, dict):
        return {k: _to_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_dict(v) for v in value]
    return value
