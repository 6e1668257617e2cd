"""Readiness that tells the truth (issue 9, item 2), on a separate real TorchServe.

Pins what TorchServe 0.12 itself says (``/ping`` stays ``Healthy`` with zero workers and with a
stopped worker; ``/v2/health/ready`` is not served) and proves :mod:`mmsent.clients.health` fails in
both cases and passes again once inference works.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import MODEL_NAME, SERVED_BATCHING
from mmsent.clients.health import check_readiness
from mmsent.clients.health import main as health_main
from mmsent.harness.torchserve import TorchServe

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def own_server(tiny_build: tuple[Path, Path]) -> Iterator[TorchServe]:
    store, _ = tiny_build
    with TorchServe(store, {MODEL_NAME: f"{MODEL_NAME}.mar"}) as ts:
        yield ts


def _ready(ts: TorchServe, timeout: float = 5.0):  # noqa: ANN202
    return check_readiness(ts.inference_url, ts.management_url, MODEL_NAME, timeout=timeout)


def _scale(ts: TorchServe, workers: int) -> None:
    resp = requests.put(f"{ts.management_url}/models/{MODEL_NAME}",
                        params={"min_worker": workers, "max_worker": workers,
                                "synchronous": "true"}, timeout=180)  # fmt: skip
    assert resp.status_code == 200, resp.text


def _ping(ts: TorchServe) -> tuple[int, str]:
    resp = requests.get(f"{ts.inference_url}/ping", timeout=10)
    return resp.status_code, resp.json()["status"]


def test_readiness_passes_on_a_working_server(own_server: TorchServe) -> None:
    verdict = _ready(own_server)
    workers = SERVED_BATCHING["maxWorkers"]  # the archive's model-config.yaml
    assert verdict.ready and verdict.ready_workers == workers and verdict.probe_status == 200
    args = ["--inference-url", own_server.inference_url, "--management-url",
            own_server.management_url, "--model", MODEL_NAME]  # fmt: skip
    assert health_main(args) == 0
    resp = requests.get(f"{own_server.inference_url}/v2/health/ready", timeout=10)
    assert resp.status_code == 404  # no KServe v2 readiness route on TorchServe's REST port


def test_readiness_fails_when_workers_are_scaled_to_zero(own_server: TorchServe) -> None:
    _scale(own_server, 0)
    try:
        assert _ping(own_server) == (200, "Healthy")  # TorchServe's own check: a lie
        verdict = _ready(own_server)
        assert not verdict.ready and verdict.ready_workers == 0, verdict
        assert "no READY worker" in verdict.reason
        args = ["--inference-url", own_server.inference_url, "--management-url",
                own_server.management_url, "--model", MODEL_NAME]  # fmt: skip
        assert health_main(args) == 1
    finally:
        _scale(own_server, 1)
    assert _ready(own_server).ready


def test_readiness_fails_when_the_worker_is_wedged(own_server: TorchServe) -> None:
    """A stopped worker is still READY to the management API and ``/ping`` says Healthy; only
    a real inference notices. SIGSTOP stands in for a wedged worker (no restart is triggered)."""
    pid = own_server.worker_pids(MODEL_NAME)[0]
    os.kill(pid, signal.SIGSTOP)
    try:
        assert own_server.ready_workers(MODEL_NAME) == 1
        assert _ping(own_server) == (200, "Healthy")
        verdict = _ready(own_server, timeout=3.0)
        assert not verdict.ready and verdict.ready_workers == 1, verdict
        assert verdict.probe_status is None and "no answer" in verdict.reason
    finally:
        os.kill(pid, signal.SIGCONT)
    verdict = _ready(own_server, timeout=30.0)
    assert verdict.ready, verdict
    assert own_server.worker_pids(MODEL_NAME) == [pid]
