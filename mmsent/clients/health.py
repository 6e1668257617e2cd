"""A readiness check that fails when inference cannot run (TorchServe's own checks do not).

Measured on TorchServe 0.12 (docs/reliability.md "Health and readiness"): ``GET /ping`` answers
``Healthy`` as long as every model has at least ``minWorkers`` live workers, so a model scaled to
``min_worker=0`` is "Healthy" with no worker at all; the management API reports a worker
``READY`` whose process is stopped or wedged; the KServe ``/v2/health/ready`` route is not
served on the TorchServe REST port (404). The only truthful signal is a real inference, so this
check asks the management API for a READY worker (cheap, names the problem) and then sends one
tiny real request with a short deadline.

    python -m mmsent.clients.health --inference-url http://127.0.0.1:8080 \\
        --management-url http://127.0.0.1:8081 --model fusion_sentiment   # exit 0 = ready

Under token authorization pass ``--key-file key_file.json`` (the inference and management keys
are read from it). Use it as the Kubernetes/KServe readiness probe (an ``exec`` probe) or from a
load balancer's health script; keep ``/ping`` for liveness of the frontend process only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from mmsent.clients.auth import bearer
from mmsent.clients.bodies import deadline_header
from mmsent.config import DEFAULT_MODEL_NAME, DEFAULT_PORTS
from mmsent.wire.workers import ready_workers as wire_ready_workers

PROBE_BODY = {"text": "readiness probe"}


@dataclass(frozen=True)
class Readiness:
    """The verdict and what it is based on (printed as JSON by the CLI)."""

    ready: bool
    model: str
    ready_workers: int
    probe_status: int | None  # HTTP status of the probe inference; None = not sent / no answer
    probe_ms: float | None
    reason: str


def ready_workers(management_url: str, model: str, timeout: float,
                  headers: dict[str, str] | None = None) -> int:  # fmt: skip
    """Workers the management API calls READY (0 when the model or the API is unreachable)."""
    try:
        resp = requests.get(f"{management_url}/models/{model}", headers=headers or {},
                            timeout=timeout)  # fmt: skip
        return wire_ready_workers(resp.json()) if resp.status_code == 200 else 0
    except (requests.RequestException, ValueError):
        return 0


def probe_inference(
    inference_url: str, model: str, timeout: float, headers: dict[str, str] | None = None
) -> tuple[int | None, float, str]:
    """(status, ms, problem) of one tiny real prediction.

    It carries a deadline of ``timeout`` so that, if the worker is wedged, the queued probe is
    skipped (408, no model run) when the worker comes back instead of adding to its backlog.
    """
    start = time.perf_counter()
    try:
        resp = requests.post(
            f"{inference_url}/predictions/{model}", json=PROBE_BODY, timeout=timeout,
            headers={**(headers or {}), **deadline_header(timeout)},
        )  # fmt: skip
    except requests.RequestException as exc:
        return None, (time.perf_counter() - start) * 1000, f"no answer: {type(exc).__name__}"
    ms = (time.perf_counter() - start) * 1000
    try:
        answered = resp.status_code == 200 and "label" in resp.json()
    except ValueError:
        answered = False
    problem = "" if answered else f"probe answered {resp.status_code}: {resp.text[:200]}"
    return resp.status_code, ms, problem


def check_readiness(
    inference_url: str,
    management_url: str,
    model: str,
    timeout: float = 5.0,
    key_file: str | Path | None = None,
) -> Readiness:
    """Ready = at least one READY worker AND a real inference answered 200 within ``timeout``."""
    auth_inf = bearer(key_file, "inference") if key_file else {}
    auth_mgmt = bearer(key_file, "management") if key_file else {}
    workers = ready_workers(management_url, model, timeout, auth_mgmt)
    if workers == 0:
        return Readiness(False, model, 0, None, None, "no READY worker for the model")
    status, ms, problem = probe_inference(inference_url, model, timeout, auth_inf)
    return Readiness(not problem, model, workers, status, round(ms, 1), problem or "ok")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--inference-url", default=f"http://127.0.0.1:{DEFAULT_PORTS['inference']}")
    p.add_argument("--management-url",
                   default=f"http://127.0.0.1:{DEFAULT_PORTS['management']}")
    p.add_argument("--model", default=DEFAULT_MODEL_NAME)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds for each call")
    p.add_argument("--key-file", type=Path, default=None,
                   help="TorchServe key_file.json (token authorization on)")  # fmt: skip
    args = p.parse_args(argv)
    verdict = check_readiness(args.inference_url, args.management_url, args.model,
                              args.timeout, args.key_file)  # fmt: skip
    print(json.dumps(asdict(verdict)))
    return 0 if verdict.ready else 1


if __name__ == "__main__":
    sys.exit(main())
