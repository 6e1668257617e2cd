"""Turn a Locust run's CSVs (+ the users' response log) into a PNG plot and a short summary.

Kept apart from ``run_loadtest.py`` so a finished run can be re-plotted without re-running it.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any


def _float(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def batch_size_series(
    response_log: Path, t0: float | None = None, bin_s: float = 1.0
) -> tuple[list[float], list[float]]:
    """Mean answered batch size per ``bin_s`` seconds since ``t0`` (epoch s; default: the
    first answer), from the users' response log."""
    bins: dict[int, list[float]] = defaultdict(list)
    rows = read_rows(response_log)
    if not rows:
        return [], []
    if t0 is None:
        t0 = min(_float(r["time"]) for r in rows)
    for r in rows:
        size = _float(r["batch_size"])
        if not math.isnan(size):
            bins[int((_float(r["time"]) - t0) // bin_s)].append(size)
    keys = sorted(bins)
    return [k * bin_s for k in keys], [mean(bins[k]) for k in keys]


def plot(prefix: Path, response_log: Path, out_png: Path, title: str = "") -> Path:
    """Throughput, p50/p95/p99 latency and achieved batch size over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_rows(Path(f"{prefix}_stats_history.csv")) if r["Name"] == "Aggregated"]
    t0 = _float(rows[0]["Timestamp"]) if rows else 0.0
    t = [_float(r["Timestamp"]) - t0 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    ax = axes[0]
    ax.plot(t, [_float(r["Requests/s"]) for r in rows], label="requests/s")
    ax.plot(t, [_float(r["Failures/s"]) for r in rows], label="failures/s", color="tab:red")
    ax.set_ylabel("throughput (req/s)")
    users = ax.twinx()
    users.plot(t, [_float(r["User Count"]) for r in rows], color="gray", ls=":", label="users")
    users.set_ylabel("users")
    ax.legend(loc="upper left")
    ax = axes[1]
    for pct in ("50%", "95%", "99%"):
        ax.plot(t, [_float(r[pct]) for r in rows], label=f"p{pct[:-1]}")
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper left")
    ax = axes[2]
    bt, bs = batch_size_series(response_log, t0 if rows else None)
    if bt:
        ax.plot(bt, bs, marker=".", label="mean batch size of answers")
        ax.legend(loc="upper left")
    else:
        ax.text(0.5, 0.5, "no batch sizes recorded", ha="center", transform=ax.transAxes)
    ax.set_ylabel("batch size")
    ax.set_xlabel("time (s)")
    fig.suptitle(title or "load test")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


def summarize(prefix: Path, response_log: Path) -> dict[str, Any]:
    """Per request name: count, failures, rps, p50/p95/p99; plus batch size, time split and the
    users' own count of responses and failures."""
    stats = read_rows(Path(f"{prefix}_stats.csv"))
    names = {}
    for r in stats:
        names[f"{r['Type']} {r['Name']}".strip()] = {
            "requests": int(_float(r["Request Count"])),
            "failures": int(_float(r["Failure Count"])),
            "rps": round(_float(r["Requests/s"]), 2),
            "p50_ms": _float(r["50%"]),
            "p95_ms": _float(r["95%"]),
            "p99_ms": _float(r["99%"]),
        }
    logged = read_rows(response_log)
    log = [r for r in logged if r["ok"] == "1"]
    split: dict[str, float] = {}
    if log:
        for stage in ("preprocess_ms", "inference_ms", "postprocess_ms", "latency_ms"):
            values = [_float(r[stage]) for r in log if r[stage] != ""]
            if values:  # answers carry preprocess/inference; postprocess: server_metrics
                split[stage] = round(mean(values), 2)
    sizes = [_float(r["batch_size"]) for r in log if r["batch_size"] != ""]
    return {
        "by_name": names,
        "batch_size_mean": round(mean(sizes), 2) if sizes else None,
        "batch_size_max": max(sizes) if sizes else None,
        "time_split_ms": split,
        # every answer or failure as the users saw it, written as it happens: Locust's
        # _stats.csv is a snapshot taken once a second with no final write, so a short run (or
        # users failing in a tight loop, which starves its writer) can leave it behind
        "responses_logged": len(logged),
        "responses_failed": len(logged) - len(log),
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'request':34} {'reqs':>6} {'fail':>5} {'rps':>7} {'p50':>7} {'p95':>7} {'p99':>7}"]
    for name, s in summary["by_name"].items():
        lines.append(
            f"{name[:34]:34} {s['requests']:>6} {s['failures']:>5} {s['rps']:>7.2f} "
            f"{s['p50_ms']:>7.0f} {s['p95_ms']:>7.0f} {s['p99_ms']:>7.0f}"
        )
    lines.append(
        f"batch size of answers: mean {summary['batch_size_mean']}, max {summary['batch_size_max']}"
    )
    if "responses_logged" in summary:
        lines.append(f"responses logged by the users: {summary['responses_logged']} "
                     f"({summary['responses_failed']} failed)")  # fmt: skip
    server = summary.get("server_metrics")
    if server:  # scraped from TorchServe's Prometheus port before and after the run
        stages = ", ".join(f"{k} {v} ms" for k, v in server["handler_ms_per_batch"].items())
        lines.append(
            f"server (Prometheus): {server['requests']:.0f} requests in {server['batches']:.0f} "
            f"batches, mean batch {server['batch_size_mean']}; per batch: {stages}; "
            f"refused by status: {server['errors_by_status'] or 'none'}"
        )
    if summary["time_split_ms"]:
        split = ", ".join(f"{k[:-3]} {v} ms" for k, v in summary["time_split_ms"].items())
        lines.append(f"mean per request (handler timings are per batch): {split}")
    return "\n".join(lines)
