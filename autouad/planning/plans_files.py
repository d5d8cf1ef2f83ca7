"""Where a dataset's plans live, and which plans a method trains from.

The planner's own choice is ``plans.json`` (plans name ``autouadPlans``). Planning for a method
the user names (``-m caae``) writes ``autouadPlans_caae.json`` beside it, with its own
preprocessed folder, so that several methods' plans of one dataset coexist; ``--plans-name``
picks any other name.
"""
from __future__ import annotations

from pathlib import Path

from autouad.planning.plans import Plans, load_plans

DEFAULT_PLANS_NAME = "autouadPlans"


def plans_file_name(plans_name: str | None) -> str:
    return "plans.json" if plans_name in (None, DEFAULT_PLANS_NAME) else f"{plans_name}.json"


ALL_CHANNELS_PLANS_SUFFIX = "_allchannels"   # autouadPlans_<method>_allchannels: the method on every channel


def default_plans_name(method: str | None, all_channels: bool = False) -> str:
    if not method:
        if all_channels:  # the default plans.json stays the planner's own choice
            raise ValueError("every-channel plans need a method: they are autouadPlans_<method>_allchannels")
        return DEFAULT_PLANS_NAME
    return f"{DEFAULT_PLANS_NAME}_{method}" + (ALL_CHANNELS_PLANS_SUFFIX if all_channels else "")


class PlansNotFoundError(FileNotFoundError):
    pass


def find_plans(preprocessed_dataset_folder: Path, method: str | None = None,
               plans_name: str | None = None) -> tuple[Plans, Path]:
    """The plans to train ``method`` from: ``plans_name``'s file, else the method's own plans,
    else ``plans.json`` when the planner chose that method."""
    folder = Path(preprocessed_dataset_folder)
    if plans_name:
        candidates = [folder / plans_file_name(plans_name)]
    elif method:
        candidates = [folder / plans_file_name(default_plans_name(method)), folder / "plans.json"]
    else:
        candidates = [folder / "plans.json"]
    plan_command = f"autouad_plan_and_preprocess -d {folder.name}" + (f" -m {method}" if method else "")
    existing = [c for c in candidates if c.is_file()]
    if not existing:
        raise PlansNotFoundError(f"{candidates[0]}: no plans; run {plan_command}")
    for path in existing:
        plans = load_plans(path)
        if method is None or plans.method == method:
            return plans, path
    raise PlansNotFoundError(f"{existing[-1]}: these plans are for {plans.method}, not {method}; "
                             f"run {plan_command}")
