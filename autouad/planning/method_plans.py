"""A method's paper settings: its plans file (the top-level plans/ folder, installed as
``autouad_plans``, or the file its registry declaration names)."""
from __future__ import annotations

import copy
import json

from autouad.methods.registry import get_method


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_method_plans(method: str) -> dict:
    """The paper settings of ``method``; a file with ``"base"`` extends another method's file."""
    path = get_method(method).plans_path
    with open(path) as f:
        settings = json.load(f)
    base = settings.pop("base", None)
    return _deep_merge(load_method_plans(base), settings) if base else settings
