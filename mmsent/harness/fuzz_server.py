"""Byte-level fuzzing of a live TorchServe: raw HTTP on every inference route, and gRPC.

Each round fires a few hostile requests together with known-good batch mates (one REST, one
gRPC), released by a barrier so they share a TorchServe batch, then checks:

- no 5xx for any hostile request, except an explicit 503 when the queue is full and the entries
  of :data:`ALLOWED_5XX` (an entry must name the exact frontend class and reason);
- over gRPC: no ``INTERNAL``/``UNKNOWN`` beyond the same two exceptions, and no per-item error
  body with a 5xx ``code``;
- every good batch mate's answer equals its reference answer (probabilities within 1e-4);
- the worker pid never changes (nothing crashed) and the server keeps answering (no wedge).

Used by ``tests/test_fuzz_server.py`` (~25 s in CI) and ``scripts/fuzz_server.py --minutes N``
(writes a JSON summary). Everything is seeded: a violation is reproducible from ``seed`` and
``round``, and the summary keeps the first bytes of each offending request.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import re
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from PIL import Image

from mmsent.clients.grpc import CHANNEL_OPTIONS
from mmsent.clients.grpc_stubs import inference_pb2, inference_pb2_grpc
from mmsent.config import DEFAULT_MODEL_NAME
from mmsent.harness.machine import results_dir
from mmsent.harness.torchserve import TorchServe
from mmsent.packaging.build import build_tiny_store

QUEUE_FULL = "no worker to serve inference request"
# Frontend 5xx answers to client mistakes that no handler or config change can fix, each with the
# exact class and reason. Keep it empty unless a run proves one; never widen it to a status.
ALLOWED_5XX: dict[str, str] = {
    "ErrorDataDecoderException": (
        "a urlencoded or multipart body Netty's HttpPostRequestDecoder cannot parse (e.g. an empty"
        " field name '=x' -> IllegalArgumentException('empty name'), a malformed multipart part)"
        " throws inside TorchServe's InferenceRequestHandler.parseRequest, which answers 500"
        " before any handler or config setting is involved; the worker is not touched"
    ),
    "StringIndexOutOfBoundsException": (
        "a multipart/form-data body sent with an EMPTY boundary parameter ('boundary=') makes"
        " TorchServe's frontend multipart decoding index the empty boundary string ('String index"
        " out of range: 0'), answered 500 before any handler is involved; measured with"
        " scripts/fuzz_server.py --seed 11 (4 of 4 cases had 'boundary='); the worker is not"
        " touched"
    ),
}
# Malformed HTTP framing that TorchServe 0.12's Netty frontend leaves without any answer: it
# holds the connection open until the client gives up (RFC 9112 says 400 and close). Measured by
# this fuzzer; it touches no worker and no other connection (the mates check proves it). Put a
# reverse proxy in front (docs/serving.md) and it answers 400 for the frontend.
UNANSWERED_FRAMING: dict[str, str] = {
    "invalid Content-Length": "a non-numeric, negative, overflowing or listed Content-Length",
    "request line over 4096 bytes": "Netty's HttpObjectDecoder default maxInitialLineLength",
}
# gRPC INTERNAL answers to client mistakes, hard-coded in TorchServe 0.12's
# InferenceImpl.prediction (it sends Status.INTERNAL for these before any worker is involved).
ALLOWED_GRPC_INTERNAL: dict[str, str] = {
    "ModelNotFoundException": "unknown model_name",
    "ModelVersionNotFoundException": "unknown model_version",
    "BadRequestException": "empty model_name ('Parameter model_name is required.')",
}
TOL = 1e-4
GOOD_TEXT = "the staff were friendly and the food was great"
READ_TIMEOUT_S = 20.0  # a complete request unanswered this long is a wedge
INCOMPLETE_TIMEOUT_S = 1.0  # a request promising more bytes than it sends: no answer expected


def _png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


GOOD_IMAGE = _jpeg((96, 72), (40, 120, 200))
SEED_IMAGES = (GOOD_IMAGE, _png((40, 30), (200, 30, 30)))


# -- hostile input generators ------------------------------------------------------------------
@dataclass
class HttpCase:
    """One raw HTTP request. ``incomplete``: it promises more body than it sends.
    ``unanswerable``: invalid framing TorchServe's Netty frontend is known not to answer (see
    :data:`UNANSWERED_FRAMING`); it may go unanswered, but must harm nobody else."""

    kind: str
    raw: bytes
    incomplete: bool = False
    unanswerable: str = ""


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """Flip, insert, delete or truncate a few bytes."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        pos = rng.randrange(len(buf) + 1)
        if op < 0.4 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op < 0.6:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op < 0.8 and buf:
            del buf[pos : pos + rng.randint(1, 16)]
        else:
            del buf[pos:]
    return bytes(buf)


def _json_body(rng: random.Random) -> bytes:
    image = base64.b64encode(rng.choice(SEED_IMAGES)).decode()
    choices: list[Callable[[], Any]] = [
        lambda: {"text": GOOD_TEXT, "image": image},
        lambda: {"text": rng.choice(["", " ", "\u202e", "\ud800x", "😀" * 50, "a" * 30000])},
        lambda: {"text": 10 ** rng.randint(20, 400)},
        lambda: {"image": image[: rng.randint(0, len(image))]},
        lambda: {"text": "x", "extra": {"nested": [1, 2, {"deep": None}]}},
        lambda: [{"text": "hi"}] * rng.randint(0, 3),
        lambda: {"image": "data:image/png;base64," + image},
        lambda: rng.choice([None, True, 1.5, "str", -(2**70)]),
        # Open Inference (v2) bodies: valid, and each field of a tensor wrong in turn
        lambda: {"id": "f", "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [2], "data": [GOOD_TEXT, ""]},
            {"name": "image", "datatype": "BYTES", "shape": [2], "data": [image, image]}]},
        lambda: {"inputs": [{
            "name": rng.choice(["text", "image", "imgae", "", None]),
            "datatype": rng.choice(["BYTES", "FP32", "", None, 7]),
            "shape": rng.choice([[1], [2], [-1], [10**12], [], "x", [1, 1, 1]]),
            "data": rng.choice([[GOOD_TEXT], [], [None], [1.5], "str", [[GOOD_TEXT]], [image]]),
        }], "outputs": rng.choice([None, [], [{"name": "label"}], [{"name": "nope"}], "x"])},
        lambda: {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [n], "data":
                             [GOOD_TEXT] * n} for n in [rng.choice([0, 32, 33, 1000])]]},
        lambda: {"id": 10**30, "inputs": rng.choice(["x", {}, [None], [[]], [{}]])},
    ]  # fmt: skip
    body = json.dumps(rng.choice(choices)()).encode()
    roll = rng.random()
    if roll < 0.3:
        return _mutate(rng, body)
    if roll < 0.4:
        depth = rng.choice([100, 1000, 20000])
        return b'{"text": ' + b"[" * depth + b"]" * depth + b"}"
    if roll < 0.5:
        return b'{"text": ' + b"9" * rng.choice([400, 5000, 100000]) + b"}"
    if roll < 0.6:
        return rng.choice([b'{"text": "\\ud800"}', b'{"text": "\\x41"}', b'{"text": "\\u12"}',
                           b'{"text": 1e99999}', b'{"text": NaN}', b"\xef\xbb\xbf{}"])  # fmt: skip
    return body


def _multipart(rng: random.Random) -> tuple[bytes, str]:
    boundary = rng.choice(["b0undary", "x" * 70, "", "a b", "--", "é"])
    parts = []
    for _ in range(rng.randint(0, 4)):
        name = rng.choice(["text", "image", "data", "body", "other", "", 'te"xt'])
        value = rng.choice([
            GOOD_TEXT.encode(), rng.choice(SEED_IMAGES), b"",
            _mutate(rng, rng.choice(SEED_IMAGES)), bytes(rng.randbytes(64)),
        ])  # fmt: skip
        filename = rng.choice(["", '; filename="a.jpg"', '; filename="../../x"'])
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n'
                     f"\r\n".encode() + value + b"\r\n")  # fmt: skip
    body = b"".join(parts) + (f"--{boundary}--\r\n".encode() if rng.random() < 0.8 else b"")
    if rng.random() < 0.3:
        body = _mutate(rng, body)
    ctype = rng.choice([
        f"multipart/form-data; boundary={boundary}", "multipart/form-data",
        f'multipart/form-data; boundary="{boundary}"', "multipart/mixed",
    ])  # fmt: skip
    return body, ctype


def _urlencoded(rng: random.Random) -> bytes:
    return rng.choice([b"text=hello+there", b"text=%zz&image=%%", b"text=%E2%82", b"=&&==",
                       b"image=" + base64.b64encode(rng.choice(SEED_IMAGES)),
                       b"text=" + b"%41" * 3000])  # fmt: skip


def _routes(model: str) -> list[str]:
    return [
        f"/predictions/{model}", f"/predictions/{model}", f"/predictions/{model}",
        f"/predictions/{model}/1.0", f"/predictions/{model}/9.9", "/predictions/no_such_model",
        f"/invocations?model_name={model}", f"/models/{model}/invoke",
        f"/v1/models/{model}:predict", f"/v2/models/{model}/infer", f"/explanations/{model}",
        f"/predictions/{model}?text=%zz", f"/predictions/{model}?text=" + "9" * 400,
        f"/predictions/{model}/%", "/predictions/%00", "/" + "a" * 5000, "/ping", "/%zz",
    ]  # fmt: skip


def http_case(rng: random.Random, model: str) -> HttpCase:
    """A random, usually malformed, raw HTTP/1.x request to the inference port."""
    kind = rng.choice(["json", "json", "multipart", "urlencoded", "image", "bytes", "empty"])
    ctype: str | None = "application/json"
    if kind == "json":
        body = _json_body(rng)
    elif kind == "multipart":
        body, ctype = _multipart(rng)
    elif kind == "urlencoded":
        body, ctype = _urlencoded(rng), "application/x-www-form-urlencoded"
    elif kind == "image":
        body = _mutate(rng, rng.choice(SEED_IMAGES)) if rng.random() < 0.7 else GOOD_IMAGE
        ctype = rng.choice(["image/jpeg", "application/octet-stream", None])
    elif kind == "bytes":
        body, ctype = bytes(rng.randbytes(rng.randint(1, 2048))), rng.choice([None, "x/y", "\x01"])
    else:
        body = b""
    if rng.random() < 0.15:
        ctype = rng.choice(["", "application/json; charset=utf-16", "text/plain", ";;;", "a" * 300])
    method = rng.choices(["POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW", "post"],
                         weights=[20, 2, 1, 1, 1, 1, 1, 1])[0]  # fmt: skip
    return _frame(rng, kind, method, rng.choice(_routes(model)), ctype, body)


def _frame(rng: random.Random, kind: str, method: str, path: str, ctype: str | None,
           body: bytes) -> HttpCase:  # fmt: skip
    """Headers + body, with framing variants: chunked (valid or not), wrong lengths, junk."""
    version = rng.choice(["HTTP/1.1"] * 8 + ["HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x"])
    headers = ["Host: 127.0.0.1", "Connection: close"]
    if ctype is not None:
        headers.append(f"Content-Type: {ctype}")
    if rng.random() < 0.2:
        headers.append(rng.choice([
            f"X-Request-Deadline: {rng.choice(['soon', '-1', '1e400', '0', 'nan', '9' * 40])}",
            "Expect: 100-continue", "Content-Encoding: gzip", "X-Junk: \x7f\x01",
            "Accept: */*" * 200, ": no-name", "Authorization: Bearer nope",
        ]))  # fmt: skip
    incomplete, unanswerable = False, ""
    if len(f"{method} {path} {version}") > 4096:
        unanswerable = "request line over 4096 bytes"
    framing = rng.random()
    if framing < 0.12:  # chunked, sometimes broken
        headers.append("Transfer-Encoding: chunked")
        size = f"{len(body):x}" if rng.random() < 0.7 else rng.choice(["zz", "-1", "f" * 20])
        payload = f"{size}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    elif framing < 0.17:  # claims more than it sends: the server must wait, not crash
        headers.append(f"Content-Length: {len(body) + rng.randint(1, 100)}")
        payload, incomplete = body, True
    elif framing < 0.22:  # claims less: the rest is read as a (garbage, partial) next request
        headers.append(f"Content-Length: {max(0, len(body) - rng.randint(1, 50))}")
        payload, incomplete = body, True
    elif framing < 0.25:
        headers.append(f"Content-Length: {rng.choice(['abc', '-5', '9' * 30, '1, 2'])}")
        payload, unanswerable = body, "invalid Content-Length"
    else:
        headers.append(f"Content-Length: {len(body)}")
        payload = body
    head = f"{method} {path} {version}\r\n" + "\r\n".join(headers) + "\r\n\r\n"
    raw = head.encode("utf-8", errors="surrogateescape") + payload
    if rng.random() < 0.03:  # mangled framing: the lengths no longer hold, no answer is owed
        raw, incomplete = _mutate(rng, raw), True
    return HttpCase(kind, raw, incomplete, unanswerable)


def grpc_case(rng: random.Random, model: str) -> tuple[str, dict[str, Any]]:
    """(method, request kwargs): random input maps over Predictions and StreamPredictions."""
    fields: dict[str, bytes] = {}
    for _ in range(rng.randint(0, 4)):
        key = rng.choice(["text", "image", "data", "body", "x-request-deadline", "", "ünï", "k"])
        fields[key] = rng.choice([
            GOOD_TEXT.encode(), b"", b"   ", b"\xff\xfe", rng.choice(SEED_IMAGES),
            _mutate(rng, rng.choice(SEED_IMAGES)), _json_body(rng), bytes(rng.randbytes(300)),
            str(int(time.time() * 1000) + rng.randint(-5000, 5000)).encode(),
        ])  # fmt: skip
    name = rng.choices([model, "", "no_such_model", model + "\x00"], weights=[12, 1, 1, 1])[0]
    version = rng.choice(["", "", "", "1.0", "9.9"])
    method = rng.choice(["Predictions", "StreamPredictions"])
    return method, {"model_name": name, "model_version": version, "input": fields}


# -- sending and judging ------------------------------------------------------------------------
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


def send_raw(port: int, case: HttpCase) -> tuple[list[int], bytes, str]:
    """(statuses seen, response bytes, how it ended: closed / timeout / reset)."""
    timeout = INCOMPLETE_TIMEOUT_S if case.incomplete or case.unanswerable else READ_TIMEOUT_S
    out = bytearray()
    ended = "closed"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(case.raw)
            while not _complete(out) and (chunk := sock.recv(65536)):
                out += chunk
        except TimeoutError:
            ended = "timeout"
        except (ConnectionResetError, BrokenPipeError):
            ended = "reset"
    statuses = [int(m.group(1)) for m in _STATUS.finditer(bytes(out)) if m.start() == 0
                or out[m.start() - 2 : m.start()] == b"\r\n"]  # fmt: skip
    return statuses, bytes(out), ended


def _complete(out: bytearray) -> bool:
    """A full response (status line, headers and Content-Length bytes of body) has arrived:
    stop there instead of waiting for the server to close a kept-alive connection."""
    start = 0
    while out.startswith(b"HTTP/1.1 1", start):  # interim 1xx (100 Continue): skip it
        start = out.find(b"\r\n\r\n", start) + 4
        if start < 4:
            return False
    head_end = out.find(b"\r\n\r\n", start)
    if head_end < 0:
        return False
    match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", bytes(out[start:head_end]))
    return match is not None and len(out) >= head_end + 4 + int(match.group(1))


def http_violation(case: HttpCase, statuses: list[int], body: bytes, ended: str) -> str | None:
    """Why this answer breaks the rules, or None."""
    if ended == "timeout" and not case.incomplete and not statuses and not case.unanswerable:
        return "no answer to a complete request within the read timeout (wedge?)"
    for status in statuses:
        if status < 500:
            continue
        if status == 503 and QUEUE_FULL.encode() in body:
            continue
        if any(key.encode() in body for key in ALLOWED_5XX):
            continue
        return f"HTTP {status}"
    return None


def grpc_violation(code: grpc.StatusCode, details: str, predictions: list[bytes]) -> str | None:
    """Why this gRPC outcome breaks the rules, or None."""
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        if QUEUE_FULL in details or any(key in details for key in ALLOWED_GRPC_INTERNAL):
            return None
        return f"gRPC {code.name}: {details[:200]}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "gRPC call not answered within the read timeout (wedge?)"
    for message in predictions:
        try:
            body = json.loads(message)
        except ValueError:
            continue
        if isinstance(body, dict) and isinstance(body.get("code"), int) and body["code"] >= 500:
            return f"per-item error body with code {body['code']}: {str(body)[:200]}"
    return None


@dataclass
class Summary:
    """Counts and violations of one fuzz run (JSON-ready via :meth:`as_dict`)."""

    seed: int
    seconds: float = 0.0
    rounds: int = 0
    http: Counter = field(default_factory=Counter)  # "kind status" / "kind ended"
    grpc: Counter = field(default_factory=Counter)  # "method code"
    mates_checked: int = 0
    mates_wrong: int = 0
    batch_sizes: Counter = field(default_factory=Counter)
    pids: list[list[int]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and self.mates_wrong == 0 and len(self.pids) <= 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "seed": self.seed, "seconds": round(self.seconds, 1),
            "rounds": self.rounds, "http_requests": sum(self.http.values()),
            "grpc_requests": sum(self.grpc.values()), "http": dict(sorted(self.http.items())),
            "grpc": dict(sorted(self.grpc.items())), "mates_checked": self.mates_checked,
            "mates_wrong": self.mates_wrong, "batch_sizes": dict(sorted(self.batch_sizes.items())),
            "worker_pids_seen": self.pids, "violations": self.violations[:50],
            "allowed_5xx": ALLOWED_5XX, "allowed_grpc_internal": ALLOWED_GRPC_INTERNAL,
        }  # fmt: skip


class ServerFuzzer:
    """Fuzz one model on one TorchServe (addresses from a ``TorchServe`` or given directly)."""

    def __init__(self, inference_port: int, grpc_target: str, model: str,
                 worker_pids: Callable[[], list[int]], seed: int = 0,
                 hostile_per_round: int = 4) -> None:  # fmt: skip
        self.port = inference_port
        self.model = model
        self.worker_pids = worker_pids
        self.rng = random.Random(seed)
        self.hostile_per_round = hostile_per_round
        self.summary = Summary(seed)
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(grpc_target, options=CHANNEL_OPTIONS)
        self.stub = inference_pb2_grpc.InferenceAPIsServiceStub(self._channel)
        self.reference: dict[str, Any] = {}

    def close(self) -> None:
        self._channel.close()

    # -- good batch mates ------------------------------------------------------------------
    def _good_http(self) -> dict[str, Any]:
        body = json.dumps({"text": GOOD_TEXT, "image": base64.b64encode(GOOD_IMAGE).decode()})
        raw = (
            f"POST /predictions/{self.model} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        )
        statuses, out, _ = send_raw(self.port, HttpCase("good", raw.encode()))
        if statuses != [200]:
            return {"error": f"good REST mate got {statuses}: {out[:300]!r}"}
        return json.loads(out.split(b"\r\n\r\n", 1)[1])

    def _good_grpc(self) -> dict[str, Any]:
        request = inference_pb2.PredictionsRequest(
            model_name=self.model, input={"text": GOOD_TEXT.encode(), "image": GOOD_IMAGE}
        )
        try:
            return json.loads(self.stub.Predictions(request, timeout=READ_TIMEOUT_S).prediction)
        except grpc.RpcError as err:
            return {"error": f"good gRPC mate got {err.code().name}: {err.details()}"}

    def _check_mate(self, answer: dict[str, Any]) -> None:
        ref = self.reference
        good = "label" in answer and answer["label"] == ref["label"] and all(
            abs(answer["probabilities"][k] - v) <= TOL for k, v in ref["probabilities"].items()
        )
        with self._lock:
            self.summary.mates_checked += 1
            if good:
                self.summary.batch_sizes[answer["batch_size"]] += 1
            else:
                self.summary.mates_wrong += 1
                self._violate("mate", "good batch mate answer differs", str(answer)[:300])

    # -- hostile requests --------------------------------------------------------------------
    def _violate(self, transport: str, why: str, sample: Any) -> None:
        self.summary.violations.append({"round": self.summary.rounds, "transport": transport,
                                        "why": why, "sample": sample})  # fmt: skip

    def _hostile_http(self, case: HttpCase) -> None:
        statuses, out, ended = send_raw(self.port, case)
        why = http_violation(case, statuses, out, ended)
        with self._lock:
            label = (",".join(map(str, statuses)) or "no-status") + (
                "" if ended == "closed" else f"/{ended}"
            )
            self.summary.http[f"{case.kind} {label}"] += 1
            if why:
                self._violate("http", why, {"request": case.raw[:600].decode("latin-1"),
                                            "response": out[:400].decode("latin-1")})  # fmt: skip

    def _hostile_grpc(self, method: str, kwargs: dict[str, Any]) -> None:
        request = inference_pb2.PredictionsRequest(**kwargs)
        predictions: list[bytes] = []
        code, details = grpc.StatusCode.OK, ""
        try:
            if method == "Predictions":
                predictions = [self.stub.Predictions(request, timeout=READ_TIMEOUT_S).prediction]
            else:
                stream = self.stub.StreamPredictions(request, timeout=READ_TIMEOUT_S)
                predictions = [reply.prediction for reply in stream]
                if len(predictions) != 1:
                    details = f"stream gave {len(predictions)} messages"
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
        why = grpc_violation(code, details, predictions) or (details if predictions else None)
        with self._lock:
            self.summary.grpc[f"{method} {code.name}"] += 1
            if why:
                sample = {k: (v if k != "input" else {n: b[:80].hex() for n, b in v.items()})
                          for k, v in kwargs.items()}  # fmt: skip
                self._violate("grpc", why, sample)

    # -- the loop ----------------------------------------------------------------------------
    def _round(self, pool: ThreadPoolExecutor) -> None:
        calls: list[Callable[[], Any]] = []
        for _ in range(self.hostile_per_round):
            if self.rng.random() < 0.65:
                case = http_case(self.rng, self.model)
                calls.append(lambda c=case: self._hostile_http(c))
            else:
                method, kwargs = grpc_case(self.rng, self.model)
                calls.append(lambda m=method, k=kwargs: self._hostile_grpc(m, k))
        calls += [lambda: self._check_mate(self._good_http()),
                  lambda: self._check_mate(self._good_grpc())]  # fmt: skip
        barrier = threading.Barrier(len(calls))

        def run(call: Callable[[], Any]) -> None:
            barrier.wait()
            call()

        list(pool.map(run, calls))

    def _record_pids(self) -> None:
        pids = sorted(self.worker_pids())
        if not self.summary.pids or self.summary.pids[-1] != pids:
            self.summary.pids.append(pids)
            if len(self.summary.pids) > 1:
                self._violate("worker", "worker pid changed (a crash)", self.summary.pids[-2:])

    def run(
        self,
        seconds: float,
        on_round: Callable[[Summary], None] | None = None,
        max_rounds: int | None = None,
    ) -> Summary:
        """Fuzz for ``seconds`` or ``max_rounds`` rounds, whichever ends first (the round in
        flight finishes), then check pids once more. CI bounds both: the same seed then sends
        the same requests on a fast machine as on a slow one."""
        self.reference = self._good_grpc()
        if "label" not in self.reference:
            raise RuntimeError(f"server does not answer a good request: {self.reference}")
        start = time.monotonic()
        self._record_pids()
        with ThreadPoolExecutor(max_workers=self.hostile_per_round + 2) as pool:
            while time.monotonic() - start < seconds and (
                max_rounds is None or self.summary.rounds < max_rounds
            ):
                self._round(pool)
                self.summary.rounds += 1
                if self.summary.rounds % 10 == 0:
                    self._record_pids()
                    if on_round:
                        on_round(self.summary)
        self._record_pids()
        self._check_mate(self._good_grpc())  # still answering after the last round
        self.summary.seconds = time.monotonic() - start
        return self.summary


CLI_DOC = """Fuzz a real TorchServe for N minutes with hostile raw HTTP and gRPC; write a summary.

Starts its own TorchServe on free loopback ports (never touches a running one), serving the
archive in ``--store`` (default: builds the tiny test archive, which runs the same handler and
pipeline as the default model, in seconds). See mmsent/fuzz_server.py for what is sent and
checked, docs/reliability.md "Byte-level fuzzing of the server" for recorded runs.

    python scripts/fuzz_server.py --minutes 5 --seed 1      # -> results/fuzz-server-<ts>.json
    python scripts/fuzz_server.py --store /tmp/store --minutes 30

Exit status 1 when any rule was broken (5xx, a crash, a wrong batch-mate answer, a wedge).
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fuzz_server.py", description=CLI_DOC,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store", type=Path, default=None, help="folder holding <model>.mar")
    p.add_argument("--model", default=DEFAULT_MODEL_NAME)
    p.add_argument("--out", type=Path, default=None, help="summary JSON path")
    args = p.parse_args(argv)
    out = args.out or results_dir("fuzz-server") / "summary.json"
    with tempfile.TemporaryDirectory(prefix="fuzz-server-") as tmp:
        store = args.store or build_tiny_store(Path(tmp), args.model)
        with TorchServe(store, {args.model: f"{args.model}.mar"}) as ts:
            fuzzer = ServerFuzzer(ts.ports.inference, ts.grpc_target, args.model,
                                  lambda: ts.worker_pids(args.model), seed=args.seed)  # fmt: skip

            def progress(summary: Summary) -> None:
                if summary.rounds % 100 == 0:
                    print(f"[fuzz] {summary.rounds} rounds, {len(summary.violations)} violations",
                          flush=True)  # fmt: skip

            try:
                summary = fuzzer.run(args.minutes * 60, progress)
            finally:
                fuzzer.close()
    result = summary.as_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("ok", "seconds", "rounds", "http_requests",
                                             "grpc_requests", "mates_checked", "mates_wrong",
                                             "worker_pids_seen")}))  # fmt: skip
    print(f"[fuzz] summary: {out}")
    return 0 if summary.ok else 1

