"""Which batching settings meet a latency target on THIS host? A bounded sweep, like Triton's
Model Analyzer: ``batchSize`` x ``maxBatchDelay`` x workers (threads split between them).

    python scripts/recommend_batching.py --target-p95-ms 400 --concurrency 24

Each point serves the archive with those settings (a fresh TorchServe, the archive unpacked
once and its ``model-config.yaml`` rewritten per point), drives it with the closed-loop client
at ``--concurrency`` requests in flight, and records req/s and p50 / p95 / p99 latency. The
recommendation is the highest-throughput point whose p95 meets the target, written as a ready
``model-config.yaml`` snippet; the plot shows the throughput-latency frontier. ``--budget-min``
bounds the whole sweep: points not reached are listed as such. Settings depend on the host
(cores, GPU): run it on the host you deploy to; a GPU host must run its own.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import yaml

from mmsent.config import DEFAULT_MODEL_NAME
from mmsent.harness.benchmark import closed_loop
from mmsent.harness.machine import machine_info, results_dir
from mmsent.harness.stats import percentile
from mmsent.harness.torchserve import TorchServe
from mmsent.harness.workload import make_payloads

ROOT = Path(__file__).resolve().parents[2]
MODEL = DEFAULT_MODEL_NAME
SETTING_KEYS = ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay")


def point_folder(unpacked: Path, store: Path, batch: int, delay: int, workers: int) -> str:
    """A model folder for one point: the unpacked archive hard-linked, its settings rewritten."""
    name = f"b{batch}-d{delay}-w{workers}"
    folder = store / name
    if not folder.exists():
        shutil.copytree(unpacked, folder, copy_function=os.link)
        settings_file = folder / "model-config.yaml"
        settings = yaml.safe_load(settings_file.read_text())
        settings.update(minWorkers=workers, maxWorkers=workers, batchSize=batch,
                        maxBatchDelay=delay)  # fmt: skip
        settings_file.unlink()  # a hard link: never write through to the shared copy
        settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    return name


def measure(store: Path, folder: str, threads: int, bodies: list[bytes], concurrency: int,
            warmup_s: float, seconds: float) -> dict[str, Any]:  # fmt: skip
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with TorchServe(store, {MODEL: folder}, env=env) as ts:
        run, elapsed = closed_loop(f"{ts.inference_url}/predictions/{MODEL}", bodies,
                                   concurrency, warmup_s, seconds)  # fmt: skip
    latencies, batches = run.latencies_ms, run.batch_sizes
    return {"req_s": round(run.completed / elapsed, 2), "errors": run.errors,
            "p50_ms": percentile(latencies, .5, 1), "p95_ms": percentile(latencies, .95, 1),
            "p99_ms": percentile(latencies, .99, 1),
            "mean_batch": round(sum(batches) / len(batches), 2) if batches else 0.0}  # fmt: skip


def choose(points: list[dict[str, Any]], target_p95_ms: float) -> dict[str, Any] | None:
    """The highest-throughput point meeting the p95 target (ties: the lower p95)."""
    meeting = [p for p in points if p.get("p95_ms") is not None and not p["errors"]
               and p["p95_ms"] <= target_p95_ms]  # fmt: skip
    return max(meeting, key=lambda p: (p["req_s"], -p["p95_ms"]), default=None)


def snippet(point: dict[str, Any], target: float, concurrency: int) -> str:
    """The recommended settings as model-config.yaml lines, with the reason beside them."""
    return (f"# recommended for p95 <= {target:.0f} ms at {concurrency} in flight on this host: "
            f"{point['req_s']} req/s, p95 {point['p95_ms']} ms (measured)\n"
            f"minWorkers: {point['workers']}\nmaxWorkers: {point['workers']}\n"
            f"batchSize: {point['batch']}\nmaxBatchDelay: {point['delay_ms']}\n"
            f"# threads per worker: OMP_NUM_THREADS={point['threads']}\n")  # fmt: skip


def plot(points: list[dict[str, Any]], target: float, best: dict[str, Any] | None,
         path: Path) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    measured = [p for p in points if p.get("p95_ms") is not None]
    for workers in sorted({p["workers"] for p in measured}):
        mine = [p for p in measured if p["workers"] == workers]
        ax.scatter([p["p95_ms"] for p in mine], [p["req_s"] for p in mine],
                   label=f"{workers} worker(s)")  # fmt: skip
        for p in mine:
            ax.annotate(f"b{p['batch']}/d{p['delay_ms']}", (p["p95_ms"], p["req_s"]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.axvline(target, color="grey", linestyle="--", label=f"target p95 {target:.0f} ms")
    if best:
        ax.scatter([best["p95_ms"]], [best["req_s"]], s=160, facecolors="none",
                   edgecolors="red", label="recommended")  # fmt: skip
    ax.set_xlabel("p95 latency (ms)")
    ax.set_ylabel("throughput (req/s)")
    ax.set_title("batching settings: throughput vs p95")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mar", type=Path, default=ROOT / "model_store" / f"{MODEL}.mar")
    p.add_argument("--target-p95-ms", type=float, required=True)
    p.add_argument("--concurrency", type=int, default=24, help="requests in flight")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--delay", type=int, nargs="+", default=[5, 15, 30], help="maxBatchDelay ms")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seconds", type=float, default=15.0, help="measured window per point")
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument("--budget-min", type=float, default=30.0, help="stop the sweep after this")
    p.add_argument("--payload", default="both-small")
    p.add_argument("--smoke", action="store_true", help="two short points (CI): shape only")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.smoke:
        args.batch, args.delay, args.workers = [1, 4], [5], [1]
        args.seconds, args.warmup, args.concurrency = 2.0, 1.0, 4
    cores = os.cpu_count() or 1
    bodies = [x.json_body for x in make_payloads(16)[args.payload]]
    out = results_dir("recommend", args.out)
    deadline = time.monotonic() + args.budget_min * 60
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="recommend-") as tmp:
        unpacked, store = Path(tmp) / "unpacked", Path(tmp) / "store"
        store.mkdir()
        with zipfile.ZipFile(args.mar) as archive:
            archive.extractall(unpacked)
        for workers, batch, delay in itertools.product(args.workers, args.batch, args.delay):
            point = {"workers": workers, "threads": max(1, cores // workers), "batch": batch,
                     "delay_ms": delay}  # fmt: skip
            if time.monotonic() > deadline:
                points.append({**point, "skipped": "over --budget-min"})
                continue
            folder = point_folder(unpacked, store, batch, delay, workers)
            point.update(measure(store, folder, point["threads"], bodies, args.concurrency,
                                 args.warmup, args.seconds))  # fmt: skip
            print(f"[recommend] {point}", flush=True)
            points.append(point)
    best = choose(points, args.target_p95_ms)
    result = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "mar": str(args.mar), "payload": args.payload, "concurrency": args.concurrency,
              "target_p95_ms": args.target_p95_ms, "seconds_per_point": args.seconds,
              "points": points, "recommended": best,
              "snippet": snippet(best, args.target_p95_ms, args.concurrency) if best else None}
    (out / "recommend.json").write_text(json.dumps(result, indent=2))
    plot(points, args.target_p95_ms, best, out / "frontier.png")
    if best:
        (out / "model-config.snippet.yaml").write_text(result["snippet"])
        print(result["snippet"])
    else:
        print(f"[recommend] no setting met p95 <= {args.target_p95_ms:.0f} ms at "
              f"{args.concurrency} in flight: lower the concurrency or add capacity")
    print(f"[recommend] wrote {out}/recommend.json, frontier.png")
    return 0 if all(p.get("skipped") or p["req_s"] > 0 for p in points) else 1
