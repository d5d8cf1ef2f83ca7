"""The training log: losses averaged over short windows, events (stage ends, stopping rules), and
``progress.png`` with one panel per loss."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from autouad.utils.files import save_figure, save_json


class TrainingLog:
    def __init__(self, every: int = 1):
        self.every = max(1, int(every))
        self.entries: list[dict] = []
        self.events: list[dict] = []
        self._window: dict[str, list[float]] = defaultdict(list)
        self._window_phase: str | None = None

    def add(self, step: int, phase: str, losses: dict[str, float], elapsed: float) -> None:
        if self._window_phase not in (None, phase):
            self.flush(step - 1, elapsed)
        self._window_phase = phase
        for k, v in losses.items():
            self._window[k].append(float(v))
        if len(next(iter(self._window.values()), [])) >= self.every:
            self.flush(step, elapsed)

    def flush(self, step: int, elapsed: float) -> None:
        if not self._window:
            return
        entry = {"step": int(step), "phase": self._window_phase, "seconds": round(float(elapsed), 2)}
        entry.update({k: float(np.mean(v)) for k, v in self._window.items()})
        self.entries.append(entry)
        self._window.clear()

    def event(self, step: int, kind: str, **fields) -> None:
        self.events.append({"step": int(step), "event": kind, **fields})

    def state_dict(self) -> dict:
        return {"every": self.every, "entries": self.entries, "events": self.events}

    def load_state_dict(self, state: dict) -> None:
        self.every, self.entries, self.events = state["every"], list(state["entries"]), list(state["events"])
        self._window.clear()
        self._window_phase = None

    def save(self, path: Path, header: dict) -> None:
        save_json({**header, "entries": self.entries, "events": self.events}, path)

    def plot(self, path: Path, title: str) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = sorted({k for e in self.entries for k in e} - {"step", "phase", "seconds"})
        if not keys:
            return
        quality = [e for e in self.events if e.get("event") == "validation"]
        rows = len(keys) + bool(quality)
        fig, axes = plt.subplots(rows, 1, figsize=(8, 1.9 * rows + 0.6), squeeze=False)
        if quality:
            # validation quality against wall-clock minutes: what a budget buys
            ax = axes[-1, 0]
            ax.plot([e["minutes"] for e in quality], [e["value"] for e in quality], marker="o", lw=1)
            ax.set_xlabel("minutes of training")
            ax.set_ylabel(f"validation\n{quality[-1]['metric']}", fontsize=8)
            ax.grid(alpha=0.3)
        for ax, key in zip(axes[:len(keys), 0], keys):
            steps, values = [], []
            for e in self.entries:
                if key in e:
                    # A gap (another phase's iterations) breaks the line instead of bridging it.
                    if steps and e["step"] - steps[-1] > self.every:
                        steps.append(np.nan)
                        values.append(np.nan)
                    steps.append(e["step"])
                    values.append(e[key])
            ax.plot(steps, values, lw=1, marker="." if len(steps) < 60 else None)
            ax.set_ylabel(key, fontsize=8)
            ax.grid(alpha=0.3)
            for ev in self.events:
                if ev.get("major"):
                    ax.axvline(ev["step"], color="grey", lw=0.6, ls="--")
        axes[len(keys) - 1, 0].set_xlabel("iteration")
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        try:
            save_figure(fig, path, dpi=80)
        finally:
            plt.close(fig)
