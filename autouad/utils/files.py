"""Atomic file writing and safe JSON: an output either appears whole or not at all."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def _temp_path_beside(path: Path, suffix: str = ".tmp") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); outputs get the permissions a plain open() would give.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


@contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yields a temporary path beside ``path`` to write to; it becomes ``path`` only when the block
    ends without an error, so readers never see a half-written file. ``suffix`` ends the temporary
    name (image writers choose their format by it: pass ".tmp.nii.gz" for a NIfTI file)."""
    path = Path(path)
    tmp = _temp_path_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_figure(fig, path: str | os.PathLike, dpi: int = 80) -> None:
    """A matplotlib figure as PNG, atomically."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_json(obj: Any, path: str | os.PathLike, indent: int | None = 2) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(_to_jsonable(obj), f, indent=indent, allow_nan=False)
        f.write("\n")


def load_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_npy(array: np.ndarray, path: str | os.PathLike) -> None:
    """np.save without pickle, atomically; the file is memory-mappable with np.load(mmap_mode='r')."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def load_npy(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files that atomic_output leaves behind when a process is killed in the
    middle of a write (``.<name>.<random><suffix>``, beside their targets), under ``folder``;
    returns how many went. Only a run that continues in the folder calls it."""
    removed = 0
    for path in Path(folder).rglob(".*"):
        if path.is_file() and ".tmp" in path.name:
            path.unlink()
            removed += 1
    return removed
