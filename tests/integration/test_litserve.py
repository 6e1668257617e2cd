"""The same archive on a second engine: a real LitServe process serving it through the exchange.

Started the way users start it (``scripts/serve_litserve.py --mar``), next to the session's real
TorchServe: answers must equal TorchServe's on every route, a bad item must get its own 4xx
while its batch mates are answered (LitServe itself would fail the whole batch on an exception,
LitServe #340: the exchange's per-request replies get around that), batches must really form,
and the worker must survive the hostile inputs of test_bad_input.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from test_bad_input import CASES, GOOD_IMAGE, GOOD_TEXT, Case, _check_case

from conftest import MODEL_NAME, b64, jpeg_bytes
from mmsent.harness.serve_litserve import LitServeProcess
from mmsent.harness.torchserve import TorchServe
from mmsent.wire.v2_bytes import pack_bytes

pytestmark = pytest.mark.server

TOL = 1e-5
IMAGE = jpeg_bytes((96, 72), (30, 160, 90))
# Cases whose answer comes from TorchServe's Java frontend, not from the exchange: its form
# decoder's 500s and its max_request_size refusal. LitServe's own layer answers these.
FRONTEND_CASES = {"urlencoded-bad-escape", "bare-image-as-urlencoded"}
LITSERVE_CASES = [c for c in CASES if c.id not in FRONTEND_CASES]


@pytest.fixture(scope="module")
def litserve(tiny_build: tuple[Path, Path]) -> Iterator[LitServeProcess]:
    store, _ = tiny_build
    args = ["--max-batch-size", "8", "--batch-timeout", "0.05"]
    with LitServeProcess(store / f"{MODEL_NAME}.mar", extra_args=args) as server:
        yield server


def _post(base: str, route: str, **kwargs: Any) -> requests.Response:
    return requests.post(f"{base}/{route}", timeout=120, **kwargs)


def _routes() -> dict[str, dict[str, Any]]:
    """One request per route and body form, as a client sends it."""
    v2_json = {"id": "r1", "inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["lovely", "awful"]},
        {"name": "image", "datatype": "BYTES", "shape": [2], "data": [b64(IMAGE), ""]}]}
    header = json.dumps({"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {
            "binary_data_size": len(pack_bytes([b"lovely"]))}},
        {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {
            "binary_data_size": len(pack_bytes([IMAGE]))}}]}).encode()
    return {
        "json": {"json": {"text": "what a day", "image": b64(IMAGE)}},
        "multipart": {"files": {"text": (None, "what a day"), "image": ("i.jpg", IMAGE)}},
        "bare-image": {"data": IMAGE, "headers": {"Content-Type": "image/jpeg"}},
        "v2-json": {"json": v2_json, "route": f"v2/models/{MODEL_NAME}/infer"},
        "v2-binary": {"data": header + pack_bytes([b"lovely"]) + pack_bytes([IMAGE]),
                      "headers": {"Inference-Header-Content-Length": str(len(header))},
                      "route": f"v2/models/{MODEL_NAME}/infer"},
        "explanations": {"json": {"text": "what a day"}, "route": f"explanations/{MODEL_NAME}"},
    }  # fmt: skip


def _numbers(body: dict[str, Any]) -> list[float]:
    """Every probability / contribution in an answer (plain or v2), in order."""
    if "outputs" in body:
        return [v for o in body["outputs"] if o["datatype"] == "FP32" for v in o["data"]]
    return [*body["probabilities"].values(), *body["contributions"].values()]


@pytest.mark.parametrize("form", list(_routes()))
def test_answers_equal_torchserves(server: TorchServe, litserve: LitServeProcess,
                                   form: str) -> None:  # fmt: skip
    kwargs = dict(_routes()[form])
    route = kwargs.pop("route", f"predictions/{MODEL_NAME}")
    ts = _post(server.inference_url, route, **kwargs)
    ls = _post(litserve.inference_url, route, **kwargs)
    assert ts.status_code == ls.status_code == 200, (ts.text, ls.text)
    a, b = ts.json(), ls.json()
    assert _numbers(a) == pytest.approx(_numbers(b), abs=TOL)
    assert a.get("label") == b.get("label") and a.get("id") == b.get("id")
    if form == "explanations":
        words = [w["score"] for w in b["explanation"]["words"]]
        assert words == pytest.approx([w["score"] for w in a["explanation"]["words"]], abs=1e-4)


@pytest.mark.parametrize("case", LITSERVE_CASES, ids=[c.id for c in LITSERVE_CASES])
def test_bad_input_in_a_live_batch(litserve: LitServeProcess, case: Case) -> None:
    """Each hostile input gets its own status and message, its batch mates their answers, a
    batch larger than 1 forms, and the worker process is the same afterwards."""

    def send(kwargs: dict[str, Any]) -> tuple[int, dict[str, Any], None]:
        resp = _post(litserve.inference_url, f"predictions/{MODEL_NAME}", **kwargs)
        try:
            return resp.status_code, resp.json(), None
        except ValueError:
            return resp.status_code, {"raw": resp.text}, None

    good = {"json": {"text": GOOD_TEXT, "image": b64(GOOD_IMAGE)}}
    _check_case(case, send, good, case.rest(), litserve.worker_pids, grpc_transport=False)


def test_health_and_ping(litserve: LitServeProcess) -> None:
    assert requests.get(f"{litserve.inference_url}/health", timeout=10).text == "ok"
    assert requests.get(f"{litserve.inference_url}/ping", timeout=10).json() == {
        "status": "Healthy"}
