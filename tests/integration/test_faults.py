"""Worker faults and overload on a real, *separate* TorchServe per test (never the shared one).

Uses the same drill functions as scripts/fault_drill.py (which measures them on the full model),
here on the tiny model so each test stays well under a minute. Measured on TorchServe 0.12:
requests in the batch of a SIGKILLed worker get 507 "Worker died."; queued ones wait for the
restarted worker; a full job queue answers 503 at once (REST) / INTERNAL (gRPC).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from conftest import MODEL_NAME, b64, jpeg_bytes
from mmsent.clients.grpc_stubs import inference_pb2, inference_pb2_grpc
from mmsent.harness.drills import LOST, kill_drill, overload_drill
from mmsent.harness.torchserve import TorchServe

pytestmark = pytest.mark.server

PAYLOAD = {"text": "the hotel was lovely", "image": b64(jpeg_bytes((160, 120)))}
RECOVERY_BOUND_S = 90.0  # generous: a cold worker on a loaded 2-core box
BATCH_SIZE = 8  # handlers/model-config.yaml


def test_sigkilled_worker_is_restarted_and_answers_again(tiny_build: tuple[Path, Path]) -> None:
    store, _ = tiny_build
    with TorchServe(store, {MODEL_NAME: f"{MODEL_NAME}.mar"}) as ts:
        result = kill_drill(ts, MODEL_NAME, PAYLOAD, threads=4, warmup_s=2.0, after_s=2.0,
                            timeout_s=RECOVERY_BOUND_S)  # fmt: skip
        print(f"\nworker answering again {result['recovery_s']}s after SIGKILL; "
              f"{result['failed']}/{result['requests']} requests failed "
              f"{result['failed_statuses']}")  # fmt: skip
        assert result["recovery_s"] is not None, "no answer within the bound after SIGKILL"
        assert result["recovery_s"] < RECOVERY_BOUND_S
        assert result["new_pids"] and result["new_pids"] != [result["killed_pid"]]
        assert ts.ready_workers(MODEL_NAME) == 1
        # Only the batch in the dead worker fails, at most 4 callers' worth (measured: exactly 4;
        # 0 is possible if the kill lands between batches): answered 507 "Worker died.", or, when
        # the kill lands while TorchServe 0.12 is still collecting that batch, never answered
        # ("lost": the caller's own timeout; see kill_drill). Requests queued meanwhile are kept
        # and served by the new worker.
        assert result["failed"] <= 4, result["failed_statuses"]
        assert set(result["failed_statuses"]) <= {507, LOST}, result["failure_messages"]
        lost = [m for m in result["failure_messages"] if not m.startswith("{")]
        assert all("Timeout" in m for m in lost), lost
        assert result["ok_after_recovery"]


def test_overload_is_shed_with_fast_503s_and_recovers(tiny_build: tuple[Path, Path]) -> None:
    store, _ = tiny_build
    with TorchServe(store, {MODEL_NAME: f"{MODEL_NAME}.mar"},
                    overrides={"job_queue_size": "4"}) as ts:  # fmt: skip
        result = overload_drill(ts, MODEL_NAME, PAYLOAD, threads=32, seconds=4.0,
                                recovery_requests=12)  # fmt: skip
        statuses = {int(k): v for k, v in result["statuses"].items()}
        print(f"\noverload: {statuses}, 503 share {result['share_503']:.1%}, "
              f"latency {result['latency_s']}")  # fmt: skip
        assert set(statuses) <= {200, 503}, result["statuses"]  # no timeouts, no 500s
        assert statuses.get(503, 0) > 0 and statuses.get(200, 0) > 0
        assert result["latency_s"]["503"]["p95"] < 2.0, "shedding must be quick, not a timeout"
        assert "no worker to serve inference request" in result["shed_message"][0]
        assert result["recovered"], result["recovery_statuses"]

        # gRPC under the same overload: the full queue is a gRPC INTERNAL (not UNAVAILABLE).
        channel = grpc.insecure_channel(ts.grpc_target)
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        request = inference_pb2.PredictionsRequest(model_name=MODEL_NAME,
                                                   input={"text": b"hello there " * 20})

        def call(_: int) -> tuple[str, str]:
            try:
                stub.Predictions(request, timeout=60)
                return "OK", ""
            except grpc.RpcError as err:
                return err.code().name, err.details() or ""

        try:
            with ThreadPoolExecutor(max_workers=32) as pool:
                replies = list(pool.map(call, range(96)))
            codes = Counter(code for code, _ in replies)
            assert set(codes) <= {"OK", "INTERNAL"}, codes
            assert codes["OK"] > 0
            if codes["INTERNAL"]:
                assert any("no worker to serve" in msg for code, msg in replies
                           if code == "INTERNAL")  # fmt: skip
            assert stub.Predictions(request, timeout=60).prediction
        finally:
            channel.close()
