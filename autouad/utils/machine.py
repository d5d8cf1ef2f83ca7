"""What a benchmark figure was measured on, in words."""
from __future__ import annotations

import platform
from pathlib import Path


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
