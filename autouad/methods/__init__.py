"""One package per method: its networks, its losses, its trainer (a subclass of AutoUADTrainer) and,
in its ``__init__.py``, its declaration to the registry (autouad.methods.registry)."""
from __future__ import annotations

from autouad.methods.registry import (DataSituation, MethodSpec, Requirements, UnknownMethodError,
                                      candidates_for, get_method, method_names, methods, register)

__all__ = ["DataSituation", "MethodSpec", "Requirements", "UnknownMethodError", "candidates_for", "get_method",
           "method_names", "methods", "register", "trainer_class"]


def trainer_class(method: str, dotted: str | None = None):
    """The trainer of ``method``, or the class at ``dotted`` ("package.module.Class") when given
    (a user's own subclass, ``--trainer``)."""
    from autouad.training.base_trainer import import_trainer
    from autouad.training.fold_data import TrainingError
    if dotted:
        return import_trainer(dotted)
    try:
        return get_method(method).trainer_class()
    except UnknownMethodError as e:
        raise TrainingError(str(e)) from None
