"""The one closed-loop load generator: benchmarks, fault drills and the soak's capacity ramp.

Closed loop (each caller waits for its answer before sending the next request) is what real
clients with a connection pool do, and it bounds the load: at most ``threads`` requests are in
flight. Every request becomes a :class:`Sample`; callers slice the samples by time window.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass(frozen=True)
class Sample:
    """One request as the caller saw it (times: seconds since the load started)."""

    sent: float
    done: float
    status: int  # HTTP status; 0 = no HTTP answer (timeout / connection error)
    error: str = ""
    answer: dict[str, Any] = field(default_factory=dict)  # the 200's JSON, if kept

    @property
    def latency(self) -> float:
        return self.done - self.sent


class ClosedLoop:
    """``threads`` closed-loop callers POSTing until stopped (a context manager).

    ``payload`` is one JSON-able request, or a list of pre-encoded JSON bodies (caller i sends
    bodies i, i + threads, ...). ``keep_answers`` stores each 200's JSON: benchmarks read the
    ``batch_size`` and ``timings_ms`` the handler puts there.

        with ClosedLoop(url, {"text": "hi"}, threads=4) as load:
            time.sleep(10)
        ok = [s for s in load.snapshot() if s.status == 200]
    """

    def __init__(
        self,
        url: str,
        payload: dict[str, Any] | list[bytes],
        threads: int,
        timeout: float = 60.0,
        headers: dict[str, str] | None = None,
        backoff_s: float = 0.0,
        keep_answers: bool = False,
    ) -> None:
        self.url = url
        self.bodies = payload if isinstance(payload, list) else [json.dumps(payload).encode()]
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.threads = threads
        self.timeout = timeout
        self.backoff_s = backoff_s  # pause after a non-200, as a polite client would
        self.keep_answers = keep_answers
        self.samples: list[Sample] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _call(self, session: requests.Session, body: bytes) -> Sample:
        sent = self.now()
        try:
            resp = session.post(self.url, data=body, headers=self.headers, timeout=self.timeout)
        except requests.RequestException as exc:
            return Sample(sent, self.now(), 0, f"{type(exc).__name__}: {exc}"[:200])
        done = self.now()
        if not resp.ok:
            return Sample(sent, done, resp.status_code, resp.text[:200])
        try:
            answer = resp.json() if self.keep_answers else {}
        except ValueError:
            return Sample(sent, done, 0, "200 with a body that is not JSON")
        return Sample(sent, done, resp.status_code, "", answer)

    def _run(self, index: int) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                sample = self._call(session, self.bodies[index % len(self.bodies)])
                index += self.threads
                with self._lock:
                    self.samples.append(sample)
                if sample.status != 200 and self.backoff_s:
                    self._stop.wait(self.backoff_s)

    def __enter__(self) -> ClosedLoop:
        self.t0 = time.monotonic()
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(self.threads)]  # fmt: skip
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 5)

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)
