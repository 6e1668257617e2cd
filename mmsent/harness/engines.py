"""TorchServe and LitServe on the same archive, the same client and the same exchange: one run.

``python scripts/compare_engines.py`` serves one ``.mar`` with each engine in turn (a fresh
server per run, the order rotated every round) and drives it with the same closed-loop client
at each concurrency. Per point it reports:

- req/s and p50 / p95 / p99 latency (client side);
- the p99/p50 of the exchange's inference time per batch (the answers' ``timings_ms``): a tail
  that sits inside the worker's forward pass shows here;
- server CPU ms per request, split by process (TorchServe: Java frontend, Python worker;
  LitServe: API server, inference worker), from the processes' own CPU counters;
- host CPU ms per request outside the model (server CPU minus the forward passes' time);
- served / in-process: req/s over the in-process ceiling of ``Exchange.run`` at the same batch.

Nothing is compared across runs: both engines are measured in the same run, on the same
machine, under the load recorded beside them. ``--smoke`` is a seconds-long run for CI that
checks the output's shape, not a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch
import yaml

from mmsent.config import DEFAULT_MODEL_NAME
from mmsent.harness.loadgen import ClosedLoop
from mmsent.harness.machine import machine_info, results_dir
from mmsent.harness.serve_litserve import LitServeProcess
from mmsent.harness.stats import percentile
from mmsent.harness.torchserve import TorchServe
from mmsent.harness.workload import make_payloads
from mmsent.serving.exchange import Exchange
from mmsent.serving.pipeline import SentimentPipeline, cpu_threads

ROOT = Path(__file__).resolve().parents[2]
MODEL = DEFAULT_MODEL_NAME
ENGINES = ("torchserve", "litserve")
# TorchServe configurations to measure against each other (--engines torchserve:<variant>):
# (worker environment, config.properties overrides). The shipped configs carry the winners.
VARIANTS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "omp-passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, {}),
    "1-thread": ({"OMP_NUM_THREADS": "1"}, {}),
    "quiet-frontend": ({}, {"async_logging": "true", "number_of_netty_threads": "1",
                            "netty_client_threads": "1"}),
    "passive-quiet": ({"OMP_WAIT_POLICY": "PASSIVE"},
                      {"async_logging": "true", "number_of_netty_threads": "1",
                       "netty_client_threads": "1"}),
}


@dataclass
class Engine:
    """A started server: where to send requests and which processes to charge CPU to."""

    name: str
    url: str
    roles: dict[str, list[psutil.Process]]  # role -> processes (CPU is summed per role)


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _is_java(proc: psutil.Process) -> bool:
    try:
        return "java" in proc.name()
    except psutil.Error:
        return False


@contextmanager
def serve(engine: str, mar: Path, env: dict[str, str] | None = None,
          ts_overrides: dict[str, str] | None = None) -> Iterator[Engine]:  # fmt: skip
    """Start ``engine`` (``torchserve``, ``torchserve:<variant>`` or ``litserve``) on ``mar``
    (its own model-config.yaml batching) and yield it."""
    if engine.startswith("torchserve"):
        variant_env, overrides = VARIANTS[engine.split(":", 1)[1]] if ":" in engine else ({}, {})
        env = {**variant_env, **(env or {})}
        overrides = {**overrides, **(ts_overrides or {})}
        with TorchServe(mar.parent, {MODEL: mar.name}, env=env, overrides=overrides) as ts:
            procs = _tree(ts.process.pid)
            roles = {"frontend": [p for p in procs if _is_java(p)],
                     "worker": [p for p in procs if not _is_java(p) and p.pid != ts.process.pid]}
            yield Engine(engine, f"{ts.inference_url}/predictions/{MODEL}", roles)  # fmt: skip
        return
    variant_env = VARIANTS[engine.split(":", 1)[1]][0] if ":" in engine else {}
    with LitServeProcess(mar, env={**variant_env, **(env or {})}) as ls:
        workers = ls.worker_pids()
        procs = _tree(ls.process.pid)
        roles = {"api": [p for p in procs if p.pid not in workers],
                 "worker": [p for p in procs if p.pid in workers]}
        yield Engine(engine, f"{ls.inference_url}/predictions/{MODEL}", roles)


def threads_of(engine: str, workers: int) -> int:
    """A worker's intra-op threads: OMP_NUM_THREADS where the variant sets it, else what both
    engines give each of ``workers`` CPU workers (``pipeline.cpu_threads``)."""
    variant_env = VARIANTS[engine.split(":", 1)[1]][0] if ":" in engine else {}
    return int(variant_env.get("OMP_NUM_THREADS", cpu_threads(workers)))


def _cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def thread_cpu(procs: list[psutil.Process]) -> dict[str, float]:
    """CPU seconds by thread name (trailing numbers folded: ``epollEventLoopGroup-3-1`` ->
    ``epollEventLoopGroup``), from /proc: where a Java frontend spends its CPU."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for proc in procs:
        for task in Path(f"/proc/{proc.pid}/task").glob("*"):
            try:
                comm = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            name = re.sub(r"[-_ ]?\d+(-\d+)*$", "", comm) or comm
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def drive(
    server: Engine,
    bodies: list[bytes],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    profile: Path | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Closed-loop load on ``server``; answers inside the window after ``warmup_s`` count.

    ``profile``: also record a py-spy flame graph of the worker (``<profile>.svg``) and the
    CPU of every server thread by name over the window (in the result). ``threads``: the
    worker's intra-op threads (its forward pass's CPU is estimated as wall time x threads).
    """
    every = [p for procs in server.roles.values() for p in procs]
    with ClosedLoop(server.url, bodies, concurrency, timeout=120, keep_answers=True) as load:
        time.sleep(warmup_s)
        cpu0 = {role: _cpu_s(procs) for role, procs in server.roles.items()}
        threads0 = thread_cpu(every)
        spy = None
        if profile is not None and server.roles["worker"]:
            spy = subprocess.Popen(
                ["py-spy", "record", "-p", str(server.roles["worker"][0].pid), "-o",
                 f"{profile}.svg", "-d", str(int(duration_s)), "-r", "50", "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        start = load.now()
        time.sleep(duration_s)
        end = load.now()
        cpu1 = {role: _cpu_s(procs) for role, procs in server.roles.items()}
        threads1 = thread_cpu(every)
        if spy is not None:
            spy.wait(timeout=60)
    done = [s for s in load.snapshot() if start <= s.done <= end]
    ok = [s for s in done if s.status == 200]
    latencies = [s.latency * 1000 for s in ok]
    stage = {name: [float(s.answer.get("timings_ms", {}).get(name, 0.0)) for s in ok]
             for name in ("preprocess", "inference", "postprocess")}  # fmt: skip
    inference = stage["inference"]
    batches = [int(s.answer.get("batch_size", 0)) for s in ok]
    n = max(len(ok), 1)
    cpu_ms = {role: round((cpu1[role] - cpu0[role]) * 1000 / n, 2) for role in cpu0}
    def per_request(values: list[float]) -> float:
        """Each answer carries its batch's stage time: per request, averaged over answers."""
        if not ok:
            return 0.0
        return statistics.fmean(v / max(b, 1) for v, b in zip(values, batches, strict=True))

    # the forward pass keeps every intra-op thread busy: its CPU is its wall time x threads
    model_ms = per_request(inference) * threads
    handler_ms = per_request(stage["preprocess"]) + per_request(stage["postprocess"])
    p50_inf = percentile(inference, 0.5) or 0.0
    return {
        "completed": len(ok), "errors": len(done) - len(ok), "window_s": round(end - start, 2),
        "req_s": round(len(ok) / (end - start), 2),
        "latency_ms": {q: percentile(latencies, v, 1)
                       for q, v in (("p50", .5), ("p95", .95), ("p99", .99))},
        "mean_batch": round(statistics.fmean(batches), 2) if batches else 0.0,
        "inference_ms": {"p50": round(p50_inf, 2), "p99": percentile(inference, .99, 2)},
        "inference_p99_over_p50": round((percentile(inference, .99) or 0) / p50_inf, 2)
        if p50_inf else None,
        "server_cpu_ms_per_request": {**cpu_ms, "total": round(sum(cpu_ms.values()), 2)},
        "host_cpu_ms_per_request_outside_model": round(sum(cpu_ms.values()) - model_ms, 2),
        "split_ms_per_request": {
            "frontend": cpu_ms.get("frontend", cpu_ms.get("api", 0.0)),
            "model (forward wall x threads)": round(model_ms, 2),
            "our handler (exchange outside the forward pass)": round(handler_ms, 2),
            "engine worker protocol and the rest": round(
                cpu_ms["worker"] - model_ms - handler_ms, 2)},
        "thread_cpu_ms_per_request": {
            name: round((threads1[name] - threads0.get(name, 0.0)) * 1000 / n, 2)
            for name in sorted(threads1, key=lambda k: threads0.get(k, 0.0) - threads1[k])
            if threads1[name] - threads0.get(name, 0.0) > 0} if profile is not None else None,
    }  # fmt: skip


def in_process_ceiling(mar: Path, bodies: list[bytes], batch: int, seconds: float,
                       workers: int = 1) -> float:  # fmt: skip
    """Requests/s of ``Exchange.run`` on batches of ``batch`` requests in this process, with one
    worker's share of the threads, times ``workers`` (independent workers on their own cores:
    the most ``workers`` served workers can do)."""
    torch.set_num_threads(cpu_threads(workers))
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(mar) as archive:
            archive.extractall(tmp)
        exchange = Exchange(SentimentPipeline.from_dir(tmp))
        exchange.pipeline.warmup()
        reqs = [{"body": bodies[i % len(bodies)]} for i in range(batch)]
        times = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline or len(times) < 3:
            start = time.perf_counter()
            exchange.predict(reqs)
            times.append(time.perf_counter() - start)
    return round(workers * batch / statistics.median(times), 2)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (engine, concurrency): medians over rounds, and each engine against TorchServe."""
    points: dict[str, dict[str, Any]] = {}
    for run in runs:
        key = f"{run['engine']}@{run['concurrency']}"
        points.setdefault(key, {"engine": run["engine"], "concurrency": run["concurrency"],
                                "rounds": []})["rounds"].append(run)  # fmt: skip
    for point in points.values():
        rounds = point["rounds"]
        point["req_s"] = round(statistics.median(r["req_s"] for r in rounds), 2)
        point["req_s_spread"] = [min(r["req_s"] for r in rounds), max(r["req_s"] for r in rounds)]
        point["latency_ms"] = {q: round(statistics.median(r["latency_ms"][q] or 0
                                                          for r in rounds), 1)
                               for q in ("p50", "p95", "p99")}  # fmt: skip
        point["inference_p99_over_p50"] = statistics.median(
            r["inference_p99_over_p50"] or 0 for r in rounds)
        roles = rounds[0]["server_cpu_ms_per_request"].keys()
        point["server_cpu_ms_per_request"] = {
            role: round(statistics.median(r["server_cpu_ms_per_request"][role] for r in rounds), 2)
            for role in roles}  # fmt: skip
        point["host_cpu_ms_per_request_outside_model"] = round(statistics.median(
            r["host_cpu_ms_per_request_outside_model"] for r in rounds), 2)  # fmt: skip
    return points


def markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [f"# Engines on one archive ({machine['cpu_model']}, {machine['logical_cores']} "
             f"cores, {result['date']})", "",
             f"{result['workers']} worker(s), batchSize {result['batch']}, maxBatchDelay "
             f"{result['delay_ms']} ms, payload "
             f"{result['payload']}, {result['rounds']} rounds of {result['seconds']} s, "
             f"in-process ceiling {result['in_process_req_s']} req/s; load average at start "
             f"{machine['loadavg'][0]}, at end {result['load_avg_end']}.", "",
             "| engine | in flight | req/s | p50 / p95 / p99 ms | inference p99/p50 | "
             "server CPU ms/request | outside model ms/request | served / in-process |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in result["points"].values():
        lat = p["latency_ms"]
        cpu = ", ".join(f"{k} {v}" for k, v in p["server_cpu_ms_per_request"].items())
        ratio = round(p["req_s"] / result["in_process_req_s"], 2) if p["concurrency"] > 1 else ""
        lines.append(f"| {p['engine']} | {p['concurrency']} | {p['req_s']} | {lat['p50']} / "
                     f"{lat['p95']} / {lat['p99']} | {p['inference_p99_over_p50']} | {cpu} | "
                     f"{p['host_cpu_ms_per_request_outside_model']} | {ratio} |")  # fmt: skip
    for c in sorted({p["concurrency"] for p in result["points"].values()}):
        ls = next((p for p in result["points"].values()
                   if p["engine"].startswith("litserve") and p["concurrency"] == c), None)
        for key, ts in result["points"].items():
            if not key.startswith("torchserve") or ts["concurrency"] != c:
                continue
            if ls and ls["latency_ms"]["p99"]:
                lines.append(f"\nAt {c} in flight: {ts['engine']} p99 / {ls['engine']} p99 = "
                             f"{ts['latency_ms']['p99'] / ls['latency_ms']['p99']:.2f}, req/s "
                             f"ratio {ts['req_s'] / max(ls['req_s'], 1e-9):.2f}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mar", type=Path, default=ROOT / "model_store" / f"{MODEL}.mar")
    p.add_argument("--concurrency", type=int, nargs="+", default=[24, 1])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20.0, help="measured window per run")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--payload", default="both-small")
    p.add_argument("--engines", nargs="+", default=list(ENGINES),
                   choices=[*ENGINES, *(f"{e}:{v}" for e in ENGINES for v in VARIANTS)])
    p.add_argument("--profile", action="store_true",
                   help="py-spy flame graph of each worker + CPU by server thread (needs py-spy)")
    p.add_argument("--smoke", action="store_true", help="seconds-long run (CI): shape only")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds, args.warmup, args.concurrency = 1, 2.0, 1.0, [4]
    settings = yaml.safe_load(zipfile.ZipFile(args.mar).read("model-config.yaml"))
    batch, delay = int(settings["batchSize"]), int(settings["maxBatchDelay"])
    workers = int(settings.get("maxWorkers", 1))
    bodies = [p.json_body for p in make_payloads(16)[args.payload]]
    out = results_dir("engines", args.out)
    result: dict[str, Any] = {
        "machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "mar": str(args.mar), "batch": batch, "delay_ms": delay, "payload": args.payload,
        "rounds": args.rounds, "seconds": args.seconds,
        "workers": workers,
        "in_process_req_s": in_process_ceiling(args.mar, bodies, batch, 3 if args.smoke else 15,
                                               workers),
    }  # fmt: skip
    runs = []
    for r in range(args.rounds):
        order = args.engines if r % 2 == 0 else list(reversed(args.engines))
        for engine in order:
            for concurrency in args.concurrency:
                profile = out / f"flame-{engine.replace(':', '-')}-c{concurrency}-r{r}" \
                    if args.profile else None  # fmt: skip
                with serve(engine, args.mar) as server:  # fresh server per run
                    run = drive(server, bodies, concurrency, args.warmup, args.seconds, profile,
                                threads_of(engine, workers))
                run.update(engine=engine, concurrency=concurrency, round=r)
                print(f"[engines] round {r} {engine} @{concurrency}: {run['req_s']} req/s, "
                      f"p99 {run['latency_ms']['p99']} ms", flush=True)  # fmt: skip
                runs.append(run)
    result["points"] = summarize(runs)
    result["load_avg_end"] = psutil.getloadavg()[0]
    (out / "engines.json").write_text(json.dumps(result, indent=2))
    (out / "engines.md").write_text(markdown(result))
    print(markdown(result))
    print(f"[engines] wrote {out / 'engines.json'} and engines.md")
    failed = [r for r in runs if r["completed"] == 0 or r["errors"]]
    return 1 if failed else 0
