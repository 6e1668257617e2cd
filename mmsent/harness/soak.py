"""Soak test: steady load at ~80% of measured capacity for minutes; errors and memory over time.

Leaks and slow degradation only show up over time, so this holds an *open-loop* request rate
(requests are sent on a fixed schedule whether or not earlier ones finished, like independent
users) at ``--load-fraction`` of the capacity measured by a short closed-loop ramp (or at
``--rps``), and samples every ``--sample-every`` seconds with psutil:
the RSS of the Java frontend and of the Python worker(s), CPU, the 1-min load average,
throughput, errors and latency. 0 errors are expected.

Writes ``results/soak-<timestamp>/``: soak.json (summary + every sample), soak.csv (one row per
sample) and soak.png (RSS, latency and throughput over time). Not part of CI.

    python scripts/soak.py                        # full default model, 10 minutes
    python scripts/soak.py --minutes 2 --store /tmp/store
    python scripts/soak.py --rps 5 --minutes 30   # skip the capacity ramp

It starts its own isolated TorchServe (never a shared one) and stops it at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import requests

from mmsent.config import DEFAULT_MODEL_NAME
from mmsent.harness.drills import build_store, default_payload
from mmsent.harness.loadgen import ClosedLoop
from mmsent.harness.machine import machine_info, results_dir
from mmsent.harness.stats import percentile
from mmsent.harness.torchserve import TorchServe
from mmsent.packaging.archive import verify_sha256

ROOT = Path(__file__).resolve().parents[2]  # the repository

MB = 1024 * 1024


def measure_capacity(url: str, payload: dict[str, Any], levels: tuple[int, ...] = (1, 4, 8, 16),
                     seconds: float = 10.0) -> dict[str, Any]:  # fmt: skip
    """Closed-loop ramp: the best 200-throughput over the concurrency levels is the capacity."""
    steps = []
    for threads in levels:
        with ClosedLoop(url, payload, threads) as load:
            time.sleep(seconds)
        ok = [s for s in load.samples if s.status == 200]
        rps = len(ok) / seconds
        lat = [s.done - s.sent for s in ok]
        steps.append({"threads": threads, "rps": round(rps, 2),
                      "errors": len(load.samples) - len(ok),
                      "p50_s": percentile(lat, 0.5, 3)})  # fmt: skip
        print(f"[soak] capacity ramp: {threads:2d} callers -> {rps:.2f} req/s")
    best = max(steps, key=lambda s: s["rps"])
    return {"rps": best["rps"], "at_threads": best["threads"], "steps": steps}


def server_processes(ts: TorchServe) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(java frontend, python workers) under the launcher's process tree."""
    assert ts.process is not None
    tree = psutil.Process(ts.process.pid).children(recursive=True)
    java, workers = [], []
    for proc in tree:
        try:
            name, cmd = proc.name(), " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if name == "java" or "model-server.jar" in cmd or "ModelServer" in cmd:
            java.append(proc)
        elif "model_service_worker" in cmd:
            workers.append(proc)
    return java, workers


class OpenLoop:
    """Send one request every 1/rps seconds from a scheduler thread into a thread pool."""

    def __init__(self, url: str, payload: dict[str, Any], rps: float, max_in_flight: int = 64):
        self.url, self.body, self.rps = url, json.dumps(payload).encode(), rps
        self.pool = ThreadPoolExecutor(max_workers=max_in_flight)
        self.results: list[tuple[float, float, int]] = []  # (scheduled, latency, status)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.local = threading.local()
        self.t0 = time.monotonic()
        self.late = 0  # schedule slots that found every pool thread busy (server falling behind)

    def _one(self, sent: float) -> None:
        session = getattr(self.local, "session", None) or requests.Session()
        self.local.session = session
        # Latency counts from the *scheduled* send time: a request that waited for a free client
        # thread waited for the server too (no coordinated omission).
        start = self.t0 + sent
        try:
            status = session.post(self.url, data=self.body, timeout=60,
                                  headers={"Content-Type": "application/json"}).status_code
        except requests.RequestException:
            status = 0
        with self.lock:
            self.results.append((sent, time.monotonic() - start, status))

    def run(self, seconds: float) -> None:
        self.t0 = time.monotonic()
        interval = 1.0 / self.rps
        n = 0
        while not self.stop.is_set():
            due = self.t0 + n * interval
            if due - self.t0 >= seconds:
                break
            delay = due - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            if self.pool._work_queue.qsize() > 0:  # noqa: SLF001 - only a diagnostic
                self.late += 1
            self.pool.submit(self._one, due - self.t0)
            n += 1
        self.pool.shutdown(wait=True)


def _slope_mb_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) in MB/min: > 0 over a long run hints at a leak."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] / 60 for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den, 3)


def soak(ts: TorchServe, model: str, payload: dict[str, Any], rps: float, minutes: float,
         sample_every: float) -> dict[str, Any]:  # fmt: skip
    url = f"{ts.inference_url}/predictions/{model}"
    loop = OpenLoop(url, payload, rps)
    runner = threading.Thread(target=loop.run, args=(minutes * 60,), daemon=True)
    runner.start()
    rows: list[dict[str, Any]] = []
    seen = 0
    while runner.is_alive():
        time.sleep(sample_every)
        t = time.monotonic() - loop.t0
        java, workers = server_processes(ts)
        with loop.lock:
            new = loop.results[seen:]
            seen = len(loop.results)
        lat = [r[1] for r in new if r[2] == 200]

        def rss(procs: list[psutil.Process]) -> float:
            total = 0
            for proc in procs:
                with contextlib.suppress(psutil.Error):  # a worker may be restarting
                    total += proc.memory_info().rss
            return round(total / MB, 1)

        rows.append({
            "t_s": round(t, 1), "java_rss_mb": rss(java), "worker_rss_mb": rss(workers),
            "worker_pids": " ".join(str(p.pid) for p in workers),
            "done": len(new), "errors": sum(1 for r in new if r[2] != 200),
            "rps": round(len(new) / sample_every, 2),
            "p50_s": percentile(lat, 0.5, 3),
            "p95_s": percentile(lat, 0.95, 3),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        })  # fmt: skip
        r = rows[-1]
        print(f"[soak] t={r['t_s']:6.0f}s java {r['java_rss_mb']:7.1f} MB  worker "
              f"{r['worker_rss_mb']:7.1f} MB  {r['rps']:5.2f} req/s  errors {r['errors']}  "
              f"p95 {r['p95_s']}s  load {r['loadavg_1m']}")  # fmt: skip
    runner.join()
    statuses = Counter(r[2] for r in loop.results)
    lat_all = [r[1] for r in loop.results if r[2] == 200]

    def q(p: float) -> float | None:
        return percentile(lat_all, p, 3)

    half = [r for r in rows if r["t_s"] >= rows[-1]["t_s"] / 2] if rows else []
    summary: dict[str, Any] = {
        "target_rps": round(rps, 2),
        # answered per second until the last answer (a backlog drains after the schedule ends)
        "achieved_rps": round(len(loop.results) / max(minutes * 60, max(
            (r[0] + r[1] for r in loop.results), default=1.0)), 2),
        "drain_after_schedule_s": round(max((r[0] + r[1] for r in loop.results), default=0.0)
                                        - minutes * 60, 1),
        "requests": len(loop.results),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": sum(v for k, v in statuses.items() if k != 200),
        "late_sends": loop.late,
        "latency_s": {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "max": q(1.0)},
        "worker_restarts": len({r["worker_pids"] for r in rows}) - 1 if rows else 0,
    }
    for key in ("java_rss_mb", "worker_rss_mb"):
        values = [r[key] for r in rows]
        summary[key] = {
            "first": values[0] if values else None, "last": values[-1] if values else None,
            "max": max(values) if values else None,
            "slope_mb_per_min_second_half": _slope_mb_per_min([(r["t_s"], r[key]) for r in half]),
        }  # fmt: skip
    return {"summary": summary, "samples": rows}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["soak"]["samples"]
    t = [r["t_s"] / 60 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].plot(t, [r["java_rss_mb"] for r in rows], label="frontend (java)")
    axes[0].plot(t, [r["worker_rss_mb"] for r in rows], label="worker (python)")
    axes[0].set_ylabel("RSS (MB)")
    axes[0].set_ylim(bottom=0)
    axes[0].legend()
    axes[1].plot(t, [r["p50_s"] for r in rows], label="p50")
    axes[1].plot(t, [r["p95_s"] for r in rows], label="p95")
    axes[1].set_ylabel("latency (s)")
    axes[1].legend()
    axes[2].plot(t, [r["rps"] for r in rows], label="answered req/s")
    axes[2].plot(t, [r["errors"] for r in rows], label="errors / sample", color="tab:red")
    axes[2].set_xlabel("minutes")
    axes[2].legend()
    s = result["soak"]["summary"]
    fig.suptitle(f"soak: {s['target_rps']} req/s target, {s['requests']} requests, "
                 f"{s['errors']} errors")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", type=Path, default=None,
                   help="model store holding <model>.mar (default: build the full default model)")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rps", type=float, default=None, help="fixed rate; skips the capacity ramp")
    p.add_argument("--load-fraction", type=float, default=0.8)
    p.add_argument("--ramp-seconds", type=float, default=10.0, help="per concurrency level")
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    out = results_dir("soak", args.out)
    model, payload = args.model_name, default_payload()
    result: dict[str, Any] = {"command": " ".join(["python", *sys.argv]),
                              "machine_before": machine_info()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        store = args.store or build_store(Path(tmp), model)
        verify_sha256(store / f"{model}.mar")
        with TorchServe(store, {model: f"{model}.mar"}) as ts:
            url = f"{ts.inference_url}/predictions/{model}"
            for _ in range(3):  # warm: first answers pay one-off costs
                requests.post(url, json=payload, timeout=120)
            if args.rps is None:
                result["capacity"] = measure_capacity(url, payload, seconds=args.ramp_seconds)
                rps = args.load_fraction * result["capacity"]["rps"]
            else:
                rps = args.rps
            print(f"[soak] {args.minutes:g} min at {rps:.2f} req/s")
            result["soak"] = soak(ts, model, payload, rps, args.minutes, args.sample_every)
    result["machine_after"] = {"loadavg": os.getloadavg()}
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    with open(out / "soak.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(result["soak"]["samples"][0]))
        writer.writeheader()
        writer.writerows(result["soak"]["samples"])
    plot(result, out / "soak.png")
    print(json.dumps(result["soak"]["summary"], indent=1))
    print(f"[soak] wrote {out}")
    return 0 if result["soak"]["summary"]["errors"] == 0 else 1

