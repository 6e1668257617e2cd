"""What machine a measurement ran on, and what else was using its CPU at the time.

Benchmarks, fault drills and soaks all record this: on a small shared box a number means little
without the CPU model and the neighbours that competed for it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path

import psutil


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_by_process(
    interval: float = 1.0, exclude_self: bool = True
) -> list[tuple[float, int, str]]:
    """(CPU %, pid, command line) of every process over ``interval`` seconds, busiest first."""
    procs = list(psutil.process_iter(["cmdline", "name"]))
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(interval)
    usage = []
    for proc in procs:
        if exclude_self and proc.pid == os.getpid():
            continue
        try:
            cmd = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])
            usage.append((proc.cpu_percent(None), proc.pid, cmd))
        except psutil.Error:
            continue
    return sorted(usage, reverse=True)
