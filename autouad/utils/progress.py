"""Progress bars (tqdm, with an ETA) that the command lines' ``--quiet`` silences in one place."""
from __future__ import annotations

from tqdm import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence (or restore) every progress bar of this process."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


def progress(*args, **kwargs) -> tqdm:
    """tqdm, disabled when the process is quiet (or when the caller disables it)."""
    kwargs["disable"] = bool(kwargs.get("disable", False)) or _quiet
    return tqdm(*args, **kwargs)
