"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint holds only tensors, numbers, strings, lists and dicts (network and optimizer state
dicts, the position in the schedule, stream positions, the log), so a checkpoint received from
someone else cannot run code when it is loaded.
"""
from __future__ import annotations

from pathlib import Path

import torch

from autouad.training.fold_data import TrainingError
from autouad.utils.files import atomic_output

# a fold folder's checkpoints (the names the trainer writes and the model and the CLIs read)
CHECKPOINT_LATEST = "checkpoint_latest.pt"
CHECKPOINT_FINAL = "checkpoint_final.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"


def save_checkpoint(state: dict, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint to continue from; start without --continue")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainingError(f"{path}: not a readable autouad checkpoint ({first_line[:160]})") from None
    if not isinstance(state, dict) or "position" not in state or "networks" not in state:
        raise TrainingError(f"{path}: not an autouad checkpoint (no position or networks)")
    return state
