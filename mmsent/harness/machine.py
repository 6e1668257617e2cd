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
from typing import Any

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


def busiest_processes(n: int = 3) -> list[str]:
    """Top CPU users right now (name + %), so a noisy neighbour is visible in the results."""
    return [f"{pct:.0f}% {cmd[:80]}" for pct, _, cmd in cpu_by_process(exclude_self=False)[:n]]


def machine_info() -> dict[str, Any]:
    """THE machine record of every benchmark, drill and soak: hardware, software, load, and the
    other processes above 20 % CPU (on a shared 2-core box a number means little without it)."""
    import torch

    busy = [{"pid": pid, "cpu_percent": pct, "cmd": cmd[:120]}
            for pct, pid, cmd in cpu_by_process() if pct > 20]  # fmt: skip
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "other_busy_processes": busy,
    }


RESULTS = Path(__file__).resolve().parents[2] / "results"  # gitignored


def results_dir(kind: str, out: Path | None = None) -> Path:
    """``out``, or ``results/<kind>-<timestamp>/``: where every run writes its JSON/CSV/PNG."""
    path = out or RESULTS / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    path.mkdir(parents=True, exist_ok=True)
    return path
