"""The method registry: every method declares itself once, in its own package's ``__init__.py``.

    register(MethodSpec(name="ascnet", trainer="autouad.methods.ascnet.trainer:ASCNetTrainer", ...))

The planner chooses among the declarations (``needs`` and ``setting``), ``autouad_train`` finds the
trainer here, the command lines offer the registered names, and the benchmarks and the method
contract test (tests/test_method_contract.py) run every registered method. A new method is one new
package under ``autouad/methods/`` (docs/extending.md); nothing else needs to know its name.

Method packages are imported when the registry is first read, not when autouad is imported, and a
declaration names its trainer as a dotted string: planning and the command lines' help never
import torch.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path

MODALITIES = ("MRI", "CT", "X-ray")
IMAGE_SCORES = ("mean", "max_mean_filtered", "top_k_mean")
ANOMALOUS_SIDES = ("above", "polarity")


class UnknownMethodError(ValueError):
    pass


@dataclass(frozen=True)
class DataSituation:
    """What a dataset offers a method, read off its fingerprint."""
    dimension: int              # 2: a dataset of 2D images; 3: volumes
    modality: str
    has_reference: bool         # a normal reference (normal cases or lesion-free slices)
    has_unlabeled: bool         # an unlabeled (mixed) set
    has_roi: bool               # region-of-interest masks (brain, liver)
    has_masks: bool             # anomaly masks on some training cases

    @classmethod
    def of(cls, fingerprint: dict) -> "DataSituation":
        s = fingerprint["summary"]
        return cls(dimension=int(s["dimension"]), modality=fingerprint["modality"],
                   has_reference=s["num_reference_slices"] > 0, has_unlabeled=s["num_unlabeled_cases"] > 0,
                   has_roi=bool(fingerprint.get("roi_name")), has_masks=s["num_cases_with_masks"] > 0)


@dataclass(frozen=True)
class Requirements:
    """Conditions on a data situation: what a method cannot do without (``needs``) or the situation
    its paper was made for (``setting``). Unset fields accept anything."""
    normal_reference: bool = True
    unlabeled: bool = False
    roi: bool = False
    dimensions: tuple[int, ...] = (2, 3)
    modalities: tuple[str, ...] = MODALITIES

    def unmet(self, situation: DataSituation) -> list[str]:
        """What of these requirements the situation lacks, in words (empty: all met)."""
        missing = []
        if self.normal_reference and not situation.has_reference:
            missing.append("a normal reference")
        if self.unlabeled and not situation.has_unlabeled:
            missing.append("an unlabeled set")
        if self.roi and not situation.has_roi:
            missing.append("region-of-interest masks")
        if situation.dimension not in self.dimensions:
            missing.append(f"{'/'.join(f'{d}D' for d in self.dimensions)} data (this dataset is {situation.dimension}D)")
        if situation.modality not in self.modalities:
            missing.append(f"{'/'.join(self.modalities)} images (this dataset is {situation.modality})")
        return missing


@dataclass(frozen=True)
class MethodSpec:
    """One method's declaration.

    ``needs`` are hard: the planner never offers a method whose needs are unmet. ``setting`` is the
    data situation of the method's paper; the planner prefers methods whose setting matches, in
    ``priority`` order (lower first), and lists the rest after them. A baseline that a paper
    compares against, rather than proposes, has no setting.
    """
    name: str
    trainer: str                                # "package.module:TrainerClass"
    paper: str
    needs: Requirements
    setting: Requirements | None
    setting_reason: str                         # why the method suits data of its setting
    priority: int
    plans_file: str | None = None               # default: the top-level plans/<name>.json
    image_score: str = "mean"                   # how the paper turns a map into an image score
    anomalous_side: str = "above"               # "polarity": the side follows the anomalies' polarity (I_ro)
    image_level_on_2d: bool = False             # its paper's task on 2D images is image-level detection
    # command-line shorthands (--epochs, --cycles, --iterations) -> the schedule keys they set
    schedule_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # network settings (plans' method_settings["network"]) of the paper's architecture at a fraction
    # of its widths: what the method contract test (and a quick check of a new machine) trains
    tiny_network: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.image_score not in IMAGE_SCORES:
            raise ValueError(f"{self.name}: image_score must be one of {IMAGE_SCORES}, not {self.image_score!r}")
        if self.anomalous_side not in ANOMALOUS_SIDES:
            raise ValueError(f"{self.name}: anomalous_side must be one of {ANOMALOUS_SIDES}")

    @property
    def plans_path(self) -> Path:
        if self.plans_file:
            return Path(self.plans_file)
        import autouad_plans
        return autouad_plans.PLANS_FOLDER / f"{self.name}.json"

    def trainer_class(self):
        from autouad.training.base_trainer import import_trainer
        return import_trainer(self.trainer.replace(":", "."))

    def suits(self, situation: DataSituation) -> tuple[bool, str]:
        """(whether the data is this method's paper setting, the reason in words)."""
        if self.setting is None:
            return False, f"a baseline ({self.paper.split(':')[0]})"
        unmet = self.setting.unmet(situation)
        if unmet:
            return False, f"outside its paper's setting (lacks {', '.join(unmet)})"
        return True, self.setting_reason


_REGISTRY: dict[str, MethodSpec] = {}
_discovered = False


def register(spec: MethodSpec) -> MethodSpec:
    """Declare a method (called once, from the method package's ``__init__.py``)."""
    known = _REGISTRY.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"method {spec.name!r} is declared twice ({known.trainer} and {spec.trainer})")
    _REGISTRY[spec.name] = spec
    return spec


def _discover() -> None:
    """Import every package under autouad/methods once, so that each declares itself."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import autouad.methods as package
    for module in pkgutil.iter_modules(package.__path__):
        if module.ispkg:
            importlib.import_module(f"{package.__name__}.{module.name}")


def methods() -> list[MethodSpec]:
    """Every registered method, in the planner's order of preference."""
    _discover()
    return sorted(_REGISTRY.values(), key=lambda s: (s.priority, s.name))


def method_names() -> list[str]:
    return [s.name for s in methods()]


def get_method(name: str) -> MethodSpec:
    _discover()
    if name not in _REGISTRY:
        raise UnknownMethodError(f"unknown method {name!r}; known: {', '.join(method_names())}")
    return _REGISTRY[name]


def candidates_for(situation: DataSituation) -> list[tuple[MethodSpec, str]]:
    """The methods whose needs the data meets, those of their paper's setting first (each group in
    priority order), with the reason each is listed."""
    fitting, others = [], []
    for spec in methods():
        if spec.needs.unmet(situation):
            continue
        suited, reason = spec.suits(situation)
        (fitting if suited else others).append((spec, reason))
    return fitting + others
