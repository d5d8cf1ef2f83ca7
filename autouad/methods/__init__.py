"""One folder per method: its networks, its losses and its trainer (a subclass of AutoUADTrainer)."""
from __future__ import annotations

import importlib

# method name -> "module:TrainerClass"; a plan's method picks its trainer here unless --trainer says otherwise.
TRAINERS = {
    "ascnet": "autouad.methods.ascnet.trainer:ASCNetTrainer",
    "caae": "autouad.methods.caae.trainer:CAAETrainer",
    "aae": "autouad.methods.caae.trainer:AAETrainer",
    "vae": "autouad.methods.caae.trainer:VAETrainer",
    "healthygan": "autouad.methods.healthygan.trainer:HealthyGANTrainer",
    "twophase": "autouad.methods.twophase.trainer:TwoPhaseTrainer",
    "draem": "autouad.methods.twophase.draem:DRAEMTrainer",
}


def trainer_class(method: str, dotted: str | None = None):
    """The trainer of ``method``, or the class at ``dotted`` ("package.module.Class") when given."""
    from autouad.training.base_trainer import AutoUADTrainer
    from autouad.training.fold_data import TrainingError
    if dotted:
        module, _, name = dotted.rpartition(".")
    elif method in TRAINERS:
        module, _, name = TRAINERS[method].partition(":")
    else:
        raise TrainingError(f"method {method!r} has no trainer yet (trainers: {', '.join(sorted(TRAINERS))})")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise TrainingError(f"cannot import trainer {module}.{name}: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, AutoUADTrainer)):
        raise TrainingError(f"{module}.{name} is not a subclass of AutoUADTrainer")
    return cls
