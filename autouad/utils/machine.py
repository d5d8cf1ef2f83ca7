"""The machine: what a benchmark figure was measured on, in words, and how torch should do its
floating point on it."""
from __future__ import annotations

import platform
from pathlib import Path

import torch


def processor_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform.processor()`` is often
    empty), else what ``platform`` knows: speed figures differ between CPUs of the same core count."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def flush_denormals() -> bool:
    """Flush denormal floats to zero in this process's CPU arithmetic; returns whether the CPU
    supports it (x86 with SSE3 does).

    Why: on Intel CPUs an arithmetic operation with a denormal operand takes a microcode assist,
    many times the cost of a normal one. Swish's derivative is about 1e-33 at a pre-activation of
    -80, and behind weight-standardised convolutions (unit-variance filters, no 1/sqrt(fan-in)
    scale) such pre-activations are common; times the small gradients coming back from a loss
    averaged over many pixels (about 1e-7), the product is denormal (measured: docs/experiments.md).
    Values below 1.2e-38 carry nothing a network's training or a map's threshold can use, so they
    become zeros."""
    return bool(torch.set_flush_denormal(True))
