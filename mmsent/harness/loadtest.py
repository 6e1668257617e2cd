"""One command for a bounded, headless Locust run (REST and/or gRPC) with reports.

Against a running server::

    python loadtest/run_loadtest.py --host http://127.0.0.1:8080 --grpc-target 127.0.0.1:7070 \
        --users 16 --spawn-rate 4 --run-time 60s

Or let it start (and always stop) TorchServe itself::

    python loadtest/run_loadtest.py --start-server --users 16 --run-time 60s

Writes into ``results/loadtest-<timestamp>/``: Locust's CSVs (with full history), its HTML
report, ``responses.csv`` (batch size + handler timings per answer), ``loadtest.png``
(throughput, p50/p95/p99 latency and batch size over time) and ``summary.json``; prints a
one-screen table. Only loopback targets are accepted, and the run always ends by itself.

Exit status (``main``), so a CI job or script can trust it: 0 when Locust exited 0, at least one
request was answered and none failed; 1 when any request failed or none was answered; Locust's own
non-zero status (124 if it overran and was killed) when it failed without a failed request. The
rule that decided is printed and stored in ``summary.json`` under ``verdict``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from mmsent.config import DEFAULT_MODEL_NAME, DEFAULT_PORTS
from mmsent.harness.locust_report import format_summary, plot, summarize
from mmsent.harness.machine import results_dir
from mmsent.harness.prometheus import Scrape, scrape, server_window

ROOT = Path(__file__).resolve().parents[2]  # the repository
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"

USER_CLASSES = ("RestUser", "GrpcUser")


def parse_duration(text: str) -> float:
    """Locust-style duration ('90', '90s', '2m', '1m30s') in seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (use e.g. 30s, 2m, 1m30s)")
    return float(sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts))


def require_loopback(host: str) -> None:
    """Refuse anything but loopback: a load test must never hit a shared or remote server."""
    name = host.split(":")[0].strip("[]") if "//" not in host else (urlparse(host).hostname or "")
    if name == "localhost":
        return
    try:
        if ipaddress.ip_address(name).is_loopback:
            return
    except ValueError:
        pass
    raise SystemExit(f"refusing non-loopback target {host!r}: load tests run against loopback only")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--host",
        default=f"http://127.0.0.1:{DEFAULT_PORTS['inference']}",
        help="REST inference base URL",
    )
    p.add_argument(
        "--grpc-target",
        default=f"127.0.0.1:{DEFAULT_PORTS['grpc_inference']}",
        help="gRPC inference host:port",
    )
    p.add_argument("--users", "-u", type=int, default=8, help="concurrent users (in flight)")
    p.add_argument("--spawn-rate", "-r", type=float, default=4.0, help="users started per second")
    p.add_argument("--run-time", "-t", type=parse_duration, default=parse_duration("30s"))
    p.add_argument("--user-classes", nargs="+", choices=USER_CLASSES, default=list(USER_CLASSES))
    p.add_argument(
        "--payload-mix",
        default=None,
        help="e.g. 'text=1,image-small=1,both-small=4,image-large=1,both-large=1'",
    )
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    p.add_argument(
        "--metrics-url",
        default=f"http://127.0.0.1:{DEFAULT_PORTS['metrics']}",
        help="TorchServe's Prometheus port, scraped before and after the run",
    )
    p.add_argument(
        "--step-shape",
        action="store_true",
        help="step ramp (+--step-users every --step-seconds, --steps steps) instead "
        "of constant users",
    )
    p.add_argument("--step-users", type=int, default=4)
    p.add_argument("--step-seconds", type=float, default=15.0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help="output folder (default results/loadtest-<timestamp>)",
    )
    srv = p.add_argument_group("--start-server: run against a TorchServe started here")
    srv.add_argument("--start-server", action="store_true")
    srv.add_argument(
        "--model-store",
        type=Path,
        default=None,
        help="store holding <model-name>.mar (default: build one under build/)",
    )
    srv.add_argument(
        "--tiny",
        action="store_true",
        help="build the tiny test model instead of the full default one (fast)",
    )
    return p.parse_args(argv)


def ensure_archive(model_name: str, tiny: bool) -> Path:
    """A model store with ``<model_name>.mar``, built once under build/ and then reused."""
    store = ROOT / "build" / ("loadtest-store-tiny" if tiny else "loadtest-store")
    if (store / f"{model_name}.mar").exists():
        return store
    from mmsent.packaging.build import main as build_main

    args = ["--untrained", "--out", str(store), "--model-name", model_name]
    if tiny:
        args += ["--text-encoder", "tiny", "--image-backbone", "mobilenet_v3_small",
                 "--image-weights", "random", "--image-size", "64"]  # fmt: skip
    build_main(args)
    return store


@contextmanager
def maybe_server(args: argparse.Namespace) -> Iterator[None]:
    if not args.start_server:
        yield
        return
    from mmsent.harness.torchserve import TorchServe

    store = args.model_store or ensure_archive(args.model_name, args.tiny)
    with TorchServe(store, {args.model_name: f"{args.model_name}.mar"}) as server:
        args.host, args.grpc_target = server.inference_url, server.grpc_target
        args.metrics_url = server.metrics_url
        print(f"[loadtest] TorchServe up: {args.host} / grpc {args.grpc_target}")
        yield


def try_scrape(metrics_url: str) -> Scrape | None:
    """The Prometheus port's metrics, or None (with a note) when it cannot be read: a server
    started without ``metrics_mode=prometheus`` still gets its Locust report."""
    try:
        return scrape(metrics_url)
    except (requests.RequestException, ValueError) as err:
        print(f"[loadtest] no server metrics from {metrics_url}: {err}", file=sys.stderr)
        return None


def run_locust(args: argparse.Namespace, out: Path) -> int:
    """Run Locust headless in a subprocess; killed if it overruns its own --run-time."""
    prefix = out / "locust"
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", args.host, "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
        "--run-time", f"{int(args.run_time)}s", "--stop-timeout", "30",
        "--csv", str(prefix), "--csv-full-history", "--html", str(out / "report.html"),
        "--only-summary", "--loglevel", "WARNING",
        "--grpc-target", args.grpc_target, "--model-name", args.model_name,
        "--response-log", str(out / "responses.csv"), *args.user_classes,
    ]  # fmt: skip
    if args.payload_mix:
        cmd += ["--payload-mix", args.payload_mix]
    env = dict(os.environ)
    if args.step_shape:
        env.update(
            MMSENT_STEP_SHAPE="1",
            MMSENT_STEP_USERS=str(args.step_users),
            MMSENT_STEP_SECONDS=str(args.step_seconds),
            MMSENT_STEP_COUNT=str(args.steps),
        )
    with open(out / "locust.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            return proc.wait(timeout=args.run_time + 90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            print("[loadtest] locust overran its run time and was killed", file=sys.stderr)
            return 124


def verdict(summary: dict[str, Any], locust_rc: int) -> tuple[int, str]:
    """The run's exit status and the rule that chose it.

    Failed requests decide first: Locust itself exits 1 on any failure, but a run where every
    request failed must say so rather than "locust exit 1". No answered request at all (nothing
    reached the server, or Locust died before its first request) is a failure too: a clean
    exit of an empty run would let a broken setup pass in CI.
    """
    total = summary["by_name"].get("Aggregated") or {}
    # the larger of Locust's count and the users' own log (Locust's CSV can lag: summarize())
    requests = max(total.get("requests", 0), summary.get("responses_logged", 0))
    failures = max(total.get("failures", 0), summary.get("responses_failed", 0))
    if failures:
        return 1, f"{failures} of {requests} requests failed (reasons: locust.log)"
    if requests == 0:
        return 1, "no request was answered (see locust.log)"
    if locust_rc != 0:
        return locust_rc, f"locust exited {locust_rc} (see locust.log)"
    return 0, f"{requests} requests, none failed"


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the load test; returns the summary (also written to ``summary.json``), including
    ``verdict`` = {"exit_code", "reason"}. :func:`main` is the CLI around it."""
    args = parse_args(argv)
    if args.step_shape:  # the shape decides the length; --run-time still bounds it
        args.run_time = min(args.run_time, args.steps * args.step_seconds)
    out = results_dir("loadtest", args.results)
    with maybe_server(args):
        require_loopback(args.host)
        require_loopback(args.grpc_target)
        require_loopback(args.metrics_url)
        before = try_scrape(args.metrics_url)
        start = time.perf_counter()
        rc = run_locust(args, out)
        wall = time.perf_counter() - start
        after = try_scrape(args.metrics_url)
    prefix = out / "locust"
    summary = summarize(prefix, out / "responses.csv")
    summary.update(locust_exit_code=rc, wall_s=round(wall, 1), users=args.users,
                   run_time_s=args.run_time, user_classes=args.user_classes,
                   payload_mix=args.payload_mix, step_shape=args.step_shape)  # fmt: skip
    if before is not None and after is not None:
        summary["server_metrics"] = server_window(before, after)
    plot(
        prefix,
        out / "responses.csv",
        out / "loadtest.png",
        title=f"{'+'.join(args.user_classes)}, {args.users} users",
    )
    code, reason = verdict(summary, rc)
    summary["verdict"] = {"exit_code": code, "reason": reason}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(format_summary(summary))
    print(f"[loadtest] {'ok' if code == 0 else 'FAILED'}: {reason}; {wall:.0f}s; "
          f"summary in {out / 'summary.json'}")  # fmt: skip
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: the exit status of :func:`verdict` (never the summary itself, which
    ``sys.exit`` would print as a raw dict and turn into status 1)."""
    return int(run(argv)["verdict"]["exit_code"])
