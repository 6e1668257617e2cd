"""Fault drill: what callers see when the worker is SIGKILLed under load, and under overload.

1. kill drill: a closed-loop REST client (``--threads`` callers) keeps firing; after a warm-up the
   Python worker (pid from the management API) gets SIGKILL. TorchServe notices, fails the
   in-flight batch and starts a new worker. Measured: requests failed (and with what status),
   seconds from the kill until a request *sent after the kill* is answered 200.
2. overload drill: a separate TorchServe with a tiny ``job_queue_size`` (``--queue-size``) and
   ``--overload-threads`` callers for ``--overload-seconds``: share of 503s, how fast a 503
   comes back (load shedding must be quick, not a timeout), then recovery: after the burst,
   ``--recovery-requests`` requests must all be 200.

Each drill runs on its own isolated TorchServe (never on a shared one). Writes
``results/fault-drill-<timestamp>/``: fault_drill.json and fault_drill.png (status codes over
time). By default it builds the full default archive (trained head from weights/ when present)
into a temp store; ``--store DIR`` reuses one holding ``<model>.mar``.

    python scripts/fault_drill.py                       # full model, ~2-3 min on 2 cores
    python scripts/fault_drill.py --store /tmp/store    # reuse a built archive

The tests (tests/test_faults.py) run these same functions against the tiny model.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import requests

from mmsent.config import DEFAULT_MODEL_NAME
from mmsent.harness.loadgen import ClosedLoop
from mmsent.harness.machine import machine_info, results_dir
from mmsent.harness.stats import percentile
from mmsent.harness.torchserve import TorchServe
from mmsent.packaging.archive import verify_sha256

ROOT = Path(__file__).resolve().parents[2]  # the repository


def default_payload() -> dict[str, Any]:
    """A realistic text + photo request (the JSON body a REST client sends)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (180, 90, 40)).save(buf, "JPEG", quality=90)
    return {"text": "the view from the hotel was breathtaking",
            "image": base64.b64encode(buf.getvalue()).decode()}  # fmt: skip


LOST = "lost"  # a caller whose request TorchServe never answered (timed out on its side)


def _first_probe_ok(url: str, payload: dict[str, Any], deadline: float,
                    clock: Callable[[], float]) -> float | None:
    """Send one request at a time until one is answered 200; return when that answer came.

    Independent of the load's callers: if TorchServe loses their requests (see
    :func:`kill_drill`) they are stuck until their own timeout, and a recovery measured only
    from their traffic would measure that timeout, not the server.
    """
    with requests.Session() as session:
        while clock() < deadline:
            try:
                resp = session.post(url, json=payload, timeout=5)
                if resp.status_code == 200:
                    return clock()
            except requests.RequestException:
                pass
            time.sleep(0.1)
    return None


def kill_drill(ts: TorchServe, model: str, payload: dict[str, Any], threads: int = 4,
               warmup_s: float = 3.0, after_s: float = 3.0, timeout_s: float = 120.0,
               call_timeout_s: float = 15.0,
               log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """SIGKILL the worker mid-load; measure failures and the time until answering again.

    TorchServe 0.12 answers the requests inside the dead worker with 507 "Worker died." --
    unless the kill lands while the worker's frontend thread is still *collecting* a batch
    (``BatchAggregator.pollBatch`` waiting out ``maxBatchDelay``): then the jobs it has already
    taken from the queue are dropped, never answered and never re-queued (measured: about half
    of the runs on the tiny model, whose batches spend most of their time being collected).
    Callers see nothing until their own timeout, so every client needs one; those requests
    count here as ``lost`` (status 0, a client-side timeout after ``call_timeout_s``).
    Recovery is the first 200 to a fresh probe sent after the kill.
    """
    url = f"{ts.inference_url}/predictions/{model}"
    old_pids = ts.worker_pids(model)
    with ClosedLoop(url, payload, threads, timeout=call_timeout_s) as load:
        time.sleep(warmup_s)
        before = len(load.snapshot())
        t_kill = load.now()
        os.kill(old_pids[0], signal.SIGKILL)
        log(f"[kill] SIGKILL worker pid {old_pids[0]} at t={t_kill:.2f}s "
            f"after {before} requests")  # fmt: skip
        recovered = _first_probe_ok(url, payload, t_kill + timeout_s, load.now)
        if recovered is not None:
            time.sleep(after_s)
    samples = load.samples
    new_pids = ts.worker_pids(model)
    failed = [s for s in samples if s.status != 200]
    result = {
        "threads": threads,
        "killed_pid": old_pids[0],
        "new_pids": new_pids,
        "t_kill_s": round(t_kill, 3),
        "recovery_s": None if recovered is None else round(recovered - t_kill, 3),
        "requests": len(samples),
        "failed": len(failed),
        "failed_statuses": dict(Counter(
            LOST if s.status == 0 and "Timeout" in s.error else s.status for s in failed)),
        "failure_messages": sorted({s.error for s in failed})[:5],
        "call_timeout_s": call_timeout_s,
        "ok_after_recovery": all(s.status == 200 for s in samples
                                 if recovered is not None and s.sent > recovered),  # fmt: skip
        "samples": [asdict(s) for s in samples],
    }
    log(f"[kill] answering again {result['recovery_s']}s after the kill; "
        f"{len(failed)}/{len(samples)} requests failed {result['failed_statuses']}")  # fmt: skip
    return result


def overload_drill(ts: TorchServe, model: str, payload: dict[str, Any], threads: int = 48,
                   seconds: float = 6.0, recovery_requests: int = 20, backoff_s: float = 0.0,
                   log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Many callers against a small queue: 503 share and speed, then recovery.

    ``backoff_s`` = 0 is the worst case: every refused caller retries at once, so the 503 flood
    itself competes with the worker for the CPU.
    """
    url = f"{ts.inference_url}/predictions/{model}"
    with ClosedLoop(url, payload, threads, backoff_s=backoff_s) as load:
        time.sleep(seconds)
    samples = load.samples
    burst_end = load.now()
    by_status = Counter(s.status for s in samples)
    lat = {code: [s.done - s.sent for s in samples if s.status == code] for code in by_status}
    shed_msgs = sorted({s.error for s in samples if s.status == 503})[:2]
    # Recovery: the queue drains within one batch time; then every request must be 200.
    time.sleep(1.0)
    t_rec = time.monotonic()
    statuses: list[int] = []
    with requests.Session() as session:
        for _ in range(recovery_requests):
            statuses.append(session.post(url, json=payload, timeout=60).status_code)
    result = {
        "threads": threads,
        "seconds": seconds,
        "backoff_after_error_s": backoff_s,
        "job_queue_size": ts.overrides.get("job_queue_size"),
        "requests": len(samples),
        "throughput_ok_rps": round(by_status.get(200, 0) / burst_end, 2),
        "statuses": {str(k): v for k, v in sorted(by_status.items())},
        "share_503": round(by_status.get(503, 0) / max(1, len(samples)), 4),
        "latency_s": {str(k): {"p50": percentile(v, 0.5, 4), "p95": percentile(v, 0.95, 4),
                               "max": percentile(v, 1.0, 4)}
                      for k, v in lat.items()},  # fmt: skip
        "shed_message": shed_msgs,
        "recovery_statuses": dict(Counter(statuses)),
        "recovered": all(s == 200 for s in statuses),
        "recovery_wall_s": round(time.monotonic() - t_rec, 3),
        "samples": [asdict(s) for s in samples],
    }
    log(f"[overload] {len(samples)} requests in {seconds:.0f}s with {threads} callers: "
        f"{result['statuses']}, 503 share {result['share_503']:.1%}, "
        f"503 p95 {result['latency_s'].get('503', {}).get('p95')}s; after the burst "
        f"{result['recovery_statuses']}")  # fmt: skip
    return result


# -- reporting ---------------------------------------------------------------------------------
def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {200: "tab:green", 503: "tab:orange", 507: "tab:red", 0: "black"}
    fig, axes = plt.subplots(2, 1, figsize=(10, 6.5))
    for ax, key, title in ((axes[0], "kill", "worker SIGKILLed under load"),
                           (axes[1], "overload", "overload (small job queue)")):  # fmt: skip
        drill = result[key]
        samples = drill["samples"]
        for code in sorted({s["status"] for s in samples}):
            pts = [(s["done"], s["done"] - s["sent"]) for s in samples if s["status"] == code]
            ax.scatter(*zip(*pts, strict=True), s=8, label=str(code or "no answer"),
                       color=colours.get(code, "tab:purple"))  # fmt: skip
        if key == "kill":
            ax.axvline(drill["t_kill_s"], color="tab:red", ls="--", label="SIGKILL")
            if drill["recovery_s"] is not None:
                ax.axvline(drill["t_kill_s"] + drill["recovery_s"], color="tab:green", ls=":",
                           label=f"answering again (+{drill['recovery_s']:.1f}s)")  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("time the answer arrived (s)")
        ax.set_ylabel("latency (s)")
        ax.legend(title="HTTP status", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_store(tmp: Path, model: str) -> Path:
    store = tmp / "store"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_archive.py"), "--out",
                    str(store), "--model-name", model], check=True)  # fmt: skip
    return store


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", type=Path, default=None,
                   help="model store holding <model>.mar (default: build the full default model)")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--threads", type=int, default=4, help="callers during the kill drill")
    p.add_argument("--overload-threads", type=int, default=48)
    p.add_argument("--overload-seconds", type=float, default=8.0)
    p.add_argument("--queue-size", type=int, default=4, help="job_queue_size for the overload")
    p.add_argument("--overload-backoff", type=float, default=0.0,
                   help="seconds an overload caller waits after a 503 (0 = retry at once)")
    p.add_argument("--recovery-requests", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    out = results_dir("fault-drill", args.out)
    model, payload = args.model_name, default_payload()
    with tempfile.TemporaryDirectory(prefix="fault-drill-") as tmp:
        store = args.store or build_store(Path(tmp), model)
        verify_sha256(store / f"{model}.mar")
        result: dict[str, Any] = {"command": " ".join(["python", *sys.argv]),
                                  "machine_before": machine_info()}  # fmt: skip
        with TorchServe(store, {model: f"{model}.mar"}) as ts:
            requests.post(f"{ts.inference_url}/predictions/{model}", json=payload, timeout=120)
            result["kill"] = kill_drill(ts, model, payload, threads=args.threads)
        with TorchServe(store, {model: f"{model}.mar"},
                        overrides={"job_queue_size": str(args.queue_size)}) as ts:  # fmt: skip
            requests.post(f"{ts.inference_url}/predictions/{model}", json=payload, timeout=120)
            result["overload"] = overload_drill(
                ts, model, payload, threads=args.overload_threads,
                seconds=args.overload_seconds, recovery_requests=args.recovery_requests,
                backoff_s=args.overload_backoff,
            )
        result["machine_after"] = {"loadavg": os.getloadavg()}
    (out / "fault_drill.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "fault_drill.png")
    summary = {k: v for k, v in result["kill"].items() if k != "samples"}
    summary_o = {k: v for k, v in result["overload"].items() if k != "samples"}
    print(json.dumps({"kill": summary, "overload": summary_o}, indent=1))
    print(f"[fault-drill] wrote {out}")
    return 0 if result["kill"]["recovery_s"] is not None and result["overload"]["recovered"] else 1

