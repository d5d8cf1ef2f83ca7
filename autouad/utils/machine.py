"""The machine: what a benchmark figure was measured on, in words, and how torch should do its
floating point on it."""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch


def machine_description(device: torch.device | str | None = None) -> str:
    """Where a benchmark figure was measured, in words: processor, cores, torch threads and version,
    and the GPU where ``device`` is one (``None``: where torch sees a GPU) or "CPU only". Every
    benchmark writes this string beside its figures."""
    on_gpu = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    return (f"{processor_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"
            + (f", {torch.cuda.get_device_name(device)}" if on_gpu else ", CPU only"))


def processor_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform.processor()`` is often
    empty), else what ``platform`` knows: speed figures differ between CPUs of the same core count.
    " with bf16 instructions" follows where the CPU has them: a virtual machine's "AMD EPYC" is an
    AVX2 one or a Zen 4 one, and bf16 training is 2x faster on the second, 7-20x slower on the first."""
    name = cpuinfo_field("model name") or platform.processor() or platform.machine()
    return name + (" with bf16 instructions" if cpu_has_native_bf16() else "")


@functools.lru_cache(maxsize=None)  # the CPU does not change while the process runs
def cpuinfo_field(name: str) -> str | None:
    """The value of the first line of ``/proc/cpuinfo`` that starts with ``name`` (Linux), stripped;
    None where that file or line is missing."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(name) and ":" in line), None)


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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (the ``avx512_bf16`` or ``amx_bf16`` flag of
    ``/proc/cpuinfo``; False where that file is missing).

    Why it matters: bf16 autocast on a CPU without these instructions emulates every product and
    was 7-20x slower than float32 on an AVX2 EPYC, while on a Zen 4 EPYC (avx512_bf16) it was
    faster (docs/results.md, "Speed options"). torch's own check
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) answers True for any AVX-512 CPU, emulated or not."""
    flags = set((cpuinfo_field("flags") or "").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})
