"""Classes named by a dotted path on the command line (``--trainer``, ``--planner``)."""
from __future__ import annotations

import importlib


def import_subclass(dotted: str, base: type, error: type[Exception], what: str) -> type:
    """The subclass of ``base`` at ``dotted`` ("package.module.Class"); ``error`` with a one-line
    message naming ``what`` it should have been otherwise."""
    module, _, name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception as e:  # a user's module may fail in any way while it loads (SyntaxError, ...)
        first = (str(e).splitlines() or [""])[0]
        raise error(f"cannot import {what} {dotted}: {type(e).__name__}: {first}") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise error(f"{dotted} is not a subclass of {base.__name__}")
    return cls
