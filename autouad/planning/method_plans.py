"""The papers' configurations (the top-level plans/ folder, installed as ``autouad_plans``)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

METHODS = ("ascnet", "caae", "aae", "vae", "healthygan", "twophase", "draem")


def plans_folder() -> Path:
    import autouad_plans
    return autouad_plans.PLANS_FOLDER


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
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    with open(plans_folder() / f"{method}.json") as f:
        settings = json.load(f)
    base = settings.pop("base", None)
    return _deep_merge(load_method_plans(base), settings) if base else settings
