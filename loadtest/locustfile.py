"""Locust load test for the fusion sentiment model over REST and gRPC.

Users (pick by class name, e.g. ``locust ... RestUser``, or by tag ``--tags grpc``):
- ``RestUser``: FastHttpUser POSTing JSON ``{"text", "image": base64}`` to ``/predictions/<m>``;
- ``GrpcUser``: TorchServe's gRPC ``Predictions`` with ``{"text", "image": raw bytes}``.
Both are closed-loop (no think time): N users = N requests in flight, which is what fills
TorchServe's dynamic batches.

Options (custom Locust arguments; each defaults to an env var so ``run_loadtest.py`` and CI can
set them without touching the command line):
- ``--payload-mix`` / ``MMSENT_PAYLOAD_MIX``: weights per kind, e.g.
  ``text=1,image-small=1,both-small=4,image-large=1,both-large=1``
  (kinds: mmsent/harness/workload.py);
- ``--grpc-target`` / ``MMSENT_GRPC_TARGET`` (host:port), ``--model-name`` / ``MMSENT_MODEL``;
- ``--response-log`` / ``MMSENT_RESPONSE_LOG``: CSV of every answer's batch_size and handler
  timings (for the batch-size-over-time plot and the time split);
- step ramp: ``MMSENT_STEP_SHAPE=1`` enables :class:`StepShape` (``MMSENT_STEP_USERS`` users
  added every ``MMSENT_STEP_SECONDS`` s for ``MMSENT_STEP_COUNT`` steps). It is an env var, not
  an argument, because Locust picks the shape class at import time, before arguments are parsed.
"""

from __future__ import annotations

import csv
import json
import os
import random
import threading
import time
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent

# grpc's C core must cooperate with gevent, or one blocking call freezes every Locust user.
# This has to run before any channel exists, hence at import time.
grpc_gevent.init_gevent()

from locust import FastHttpUser, LoadTestShape, User, constant, events, tag, task  # noqa: E402

from mmsent.clients.grpc import DEFAULT_TARGET as DEFAULT_GRPC_TARGET  # noqa: E402
from mmsent.clients.grpc import GrpcClient, PredictionError  # noqa: E402
from mmsent.config import DEFAULT_MODEL_NAME  # noqa: E402
from mmsent.harness.workload import DEFAULT_MIX, KINDS, Payload, make_payloads, parse_mix  # noqa: E402

PAYLOADS = make_payloads()
LOG_FIELDS = ("time", "protocol", "kind", "ok", "latency_ms", "batch_size", "preprocess_ms",
              "inference_ms", "postprocess_ms")  # fmt: skip


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("mmsent")
    group.add_argument("--payload-mix", default=DEFAULT_MIX,
                       help=f"weights per payload kind ({', '.join(KINDS)})")
    group.add_argument("--grpc-target", default=os.environ.get("MMSENT_GRPC_TARGET",
                                                               DEFAULT_GRPC_TARGET))
    group.add_argument("--model-name", default=os.environ.get("MMSENT_MODEL", DEFAULT_MODEL_NAME))
    group.add_argument("--response-log", default=os.environ.get("MMSENT_RESPONSE_LOG", ""),
                       help="CSV file for per-answer batch_size / handler timings")


class ResponseLog:
    """Appends one row per answer; shared by all users of this process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._file: Any = None
        self._writer: Any = None

    def open(self, path: str) -> None:
        if path:
            self._file = open(path, "w", newline="")  # noqa: SIM115 - closed on test stop
            self._writer = csv.writer(self._file)
            self._writer.writerow(LOG_FIELDS)

    def record(self, protocol: str, kind: str, latency_ms: float, answer: dict | None) -> None:
        if self._writer is None:
            return
        timings = (answer or {}).get("timings_ms", {})
        row = (f"{time.time():.3f}", protocol, kind, int(answer is not None),
               f"{latency_ms:.2f}", (answer or {}).get("batch_size", ""),
               timings.get("preprocess", ""), timings.get("inference", ""),
               timings.get("postprocess", ""))  # fmt: skip
        with self._lock:
            self._writer.writerow(row)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


RESPONSES = ResponseLog()


@events.test_start.add_listener
def _on_start(environment: Any, **_: Any) -> None:
    RESPONSES.open(environment.parsed_options.response_log if environment.parsed_options else "")


@events.test_stop.add_listener
def _on_stop(environment: Any, **_: Any) -> None:
    RESPONSES.close()


class _Mix:
    """Weighted choice of payloads, seeded per user so runs are repeatable."""

    def __init__(self, spec: str, seed: int) -> None:
        weights = parse_mix(spec)
        self.kinds = list(weights)
        self.weights = [weights[k] for k in self.kinds]
        self.rng = random.Random(seed)

    def pick(self) -> Payload:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        return self.rng.choice(PAYLOADS[kind])


_user_seq = iter(range(1_000_000))


def _options(user: User) -> Any:
    opts = user.environment.parsed_options
    return opts if opts is not None else _Defaults()


class _Defaults:
    payload_mix = DEFAULT_MIX
    grpc_target = os.environ.get("MMSENT_GRPC_TARGET", DEFAULT_GRPC_TARGET)
    model_name = os.environ.get("MMSENT_MODEL", DEFAULT_MODEL_NAME)


class RestUser(FastHttpUser):
    """REST JSON predictions (base64 image), closed loop."""

    wait_time = constant(0)
    network_timeout = 120.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        opts = _options(self)
        self.mix = _Mix(opts.payload_mix, seed=next(_user_seq))
        self.path = f"/predictions/{opts.model_name}"

    @tag("rest")
    @task
    def predict(self) -> None:
        payload = self.mix.pick()
        start = time.perf_counter()
        with self.client.post(
            self.path, data=payload.json_body, headers={"Content-Type": "application/json"},
            name=f"REST {payload.kind}", catch_response=True,
        ) as resp:  # fmt: skip
            latency = (time.perf_counter() - start) * 1000
            answer = None
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
            else:
                try:
                    answer = json.loads(resp.content)
                    if "label" not in answer:
                        raise ValueError(f"no label in {answer}")
                except ValueError as exc:
                    answer = None
                    resp.failure(f"bad answer: {exc}")
            RESPONSES.record("rest", payload.kind, latency, answer)


class GrpcUser(User):
    """gRPC Predictions; every call reported to Locust via ``events.request``."""

    wait_time = constant(0)

    def on_start(self) -> None:
        opts = _options(self)
        self.mix = _Mix(opts.payload_mix, seed=10_000 + next(_user_seq))
        self.model = opts.model_name
        self.client = GrpcClient(opts.grpc_target, opts.grpc_target, timeout=120.0)

    def on_stop(self) -> None:
        self.client.close()

    @tag("grpc")
    @task
    def predict(self) -> None:
        payload = self.mix.pick()
        start = time.perf_counter()
        answer, exception, length = None, None, 0
        try:
            raw = self.client.predict_raw(self.model, payload.grpc_input)
            length = len(raw)
            answer = json.loads(raw)
            if "error" in answer:  # TorchServe delivers per-item errors with gRPC OK
                raise PredictionError(grpc.StatusCode.OK, str(answer["error"]), answer.get("code"))
        except Exception as exc:  # reported to Locust as a failure, never raised into it
            exception, answer = exc, None
        latency = (time.perf_counter() - start) * 1000
        self.environment.events.request.fire(
            request_type="grpc", name=f"gRPC {payload.kind}", response_time=latency,
            response_length=length, exception=exception, context={},
        )  # fmt: skip
        RESPONSES.record("grpc", payload.kind, latency, answer)


if os.environ.get("MMSENT_STEP_SHAPE") == "1":

    class StepShape(LoadTestShape):
        """Step ramp: +``MMSENT_STEP_USERS`` users every ``MMSENT_STEP_SECONDS`` s, then stop.

        Shows where latency starts to climb as batches fill and the queue grows.
        """

        step_users = int(os.environ.get("MMSENT_STEP_USERS", "4"))
        step_seconds = float(os.environ.get("MMSENT_STEP_SECONDS", "15"))
        steps = int(os.environ.get("MMSENT_STEP_COUNT", "4"))

        def tick(self) -> tuple[int, float] | None:
            step = int(self.get_run_time() // self.step_seconds)
            if step >= self.steps:
                return None
            return (step + 1) * self.step_users, float(self.step_users)
