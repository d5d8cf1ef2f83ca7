"""Where autouad keeps its data, nnU-Net style: three folders named by environment variables.

    AUTOUAD_raw           raw datasets, one folder DatasetXXX_Name per dataset
    AUTOUAD_preprocessed  fingerprints, plans, splits and preprocessed slices
    AUTOUAD_results       trained folds, thresholds, predictions

When a variable is unset, autouad falls back to ``~/autouad_data/<raw|preprocessed|results>``
and says once which variable is unset and how to set it.

The variables are only defaults: the Python API (autouad.api) takes the folders as arguments and
library code receives them as paths; nothing in autouad sets the variables.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ENV_VARS = {"raw": "AUTOUAD_raw", "preprocessed": "AUTOUAD_preprocessed", "results": "AUTOUAD_results"}
DEFAULT_ROOT = Path.home() / "autouad_data"
_warned: set[str] = set()


def _folder(kind: str) -> Path:
    var = ENV_VARS[kind]
    value = os.environ.get(var)
    if value:
        return Path(value).expanduser()
    default = DEFAULT_ROOT / kind
    if var not in _warned:
        _warned.add(var)
        print(f"autouad: {var} is not set; using {default}. Set it with: export {var}=/path/to/{kind}",
              file=sys.stderr)
    return default


def raw_root() -> Path:
    return _folder("raw")


def preprocessed_root() -> Path:
    return _folder("preprocessed")


def results_root() -> Path:
    return _folder("results")


DATASET_FOLDER_RE = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-]+)$")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 0 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be between 0 and 999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ValueError(f"dataset name {name!r} may hold only letters, digits, '_' and '-'")
    return f"Dataset{dataset_id:03d}_{name}"


def folder(kind: str, given: str | Path | None = None) -> Path:
    """``given``, else the folder of ``kind`` (raw, preprocessed, results) from its AUTOUAD_* variable."""
    return Path(given).expanduser() if given is not None else _folder(kind)


def find_dataset_name(dataset: str | int, roots: tuple[Path, ...] | None = None) -> str:
    """Resolve an id (``3``, ``"003"``) or a full name (``"Dataset003_Demo"``) to the folder name,
    looking in ``roots`` (default: the raw, preprocessed and results folders), in that order."""
    text = str(dataset)
    if DATASET_FOLDER_RE.match(text):
        return text
    if not text.isdigit():
        raise ValueError(f"{text!r} is neither a dataset id nor a DatasetXXX_Name folder name")
    dataset_id = int(text)
    roots = roots if roots is not None else (raw_root(), preprocessed_root(), results_root())
    found: set[str] = set()
    for root in roots:
        if root.is_dir():
            for child in root.iterdir():
                m = DATASET_FOLDER_RE.match(child.name)
                if m and int(m.group(1)) == dataset_id and child.is_dir():
                    found.add(child.name)
    if not found:
        raise FileNotFoundError(
            f"no dataset with id {dataset_id} in {', '.join(str(r) for r in roots)}; "
            f"convert one first (autouad_convert_dataset) or check {ENV_VARS['raw']}")
    if len(found) > 1:
        raise ValueError(f"dataset id {dataset_id} is ambiguous: {sorted(found)}")
    return found.pop()
