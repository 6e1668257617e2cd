"""The KServe pod as it now runs, rehearsed for real: TorchServe started from the bundle (tiny
archive) with KServe's command line, then our gateway (``python -m mmsent.gateway``, a kserve
ModelServer) in front of it on free loopback ports, called with clients nobody here wrote
(tritonclient.http in process, tritonclient.grpc in a subprocess: it cannot share a process with
kserve's protobufs). Answers are compared with TorchServe's own ``/predictions``."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.http as triton_http

from conftest import MODEL_NAME, b64, jpeg_bytes
from mmsent.config import LABELS
from mmsent.harness.kserve_pod import GATEWAY_ADDRESS_OPTIONS, KServeGatewayPod
from mmsent.packaging import kserve_manifests as km
from mmsent.packaging.kserve import RUNTIME_ARGS, build_bundle, gateway_args

pytestmark = pytest.mark.server

TEXTS = ["the staff were friendly", "terrible service, never again"]
IMAGES = [jpeg_bytes((160, 120), (40, 120, 200)), jpeg_bytes((200, 300), (20, 160, 40))]
DECLARED_INPUTS = [{"name": "text", "datatype": "BYTES", "shape": [-1]},
                   {"name": "image", "datatype": "BYTES", "shape": [-1]}]  # fmt: skip
DECLARED_OUTPUTS = [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
                    {"name": "contributions", "datatype": "FP32", "shape": [-1, 2]}]  # fmt: skip


@pytest.fixture(scope="module")
def pod(tiny_build: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[KServeGatewayPod]:  # fmt: skip
    store, _ = tiny_build
    bundle = build_bundle(tmp_path_factory.mktemp("kserve-gw") / "bundle",
                          store / f"{MODEL_NAME}.mar")  # fmt: skip
    with KServeGatewayPod(bundle) as running:
        yield running


@pytest.fixture(scope="module")
def expected(pod: KServeGatewayPod) -> list[dict[str, Any]]:
    """TorchServe's own /predictions answers for TEXTS x IMAGES, item by item."""
    answers = []
    for text, image in zip(TEXTS, IMAGES, strict=True):
        resp = requests.post(f"{pod.inference_url}/predictions/{MODEL_NAME}",
                             json={"text": text, "image": b64(image)}, timeout=120)  # fmt: skip
        assert resp.status_code == 200, resp.text
        answers.append(resp.json())
    return answers


def _client(pod: KServeGatewayPod) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(pod.http_url.removeprefix("http://"),
                                             network_timeout=120.0)  # fmt: skip


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _assert_equals_predictions(labels: Any, probs: Any, contribs: Any, expected: list) -> None:
    assert [_text(v) for v in labels] == [e["label"] for e in expected]
    for row, want in zip(np.asarray(probs).tolist(), expected, strict=True):
        assert row == pytest.approx([want["probabilities"][k] for k in LABELS], abs=1e-5)
    for row, want in zip(np.asarray(contribs).tolist(), expected, strict=True):
        assert row == pytest.approx([want["contributions"][m] for m in ("text", "image")],
                                    abs=1e-4)  # fmt: skip


def _v2_json(texts: list[str], images: list[str], **extra: Any) -> dict[str, Any]:
    n = len(texts)
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [n], "data": texts},
                       {"name": "image", "datatype": "BYTES", "shape": [n], "data": images}],
            **extra}  # fmt: skip


# -- how it is started ------------------------------------------------------------------------
def test_gateway_runs_with_the_pods_command_line_only_addresses_remapped(
    pod: KServeGatewayPod,
) -> None:
    pod_args, ours = gateway_args(pod.response_timeout), pod.gateway_command()
    assert ours[1:3] == ["-m", "mmsent.gateway"] and len(ours) == len(pod_args)
    differing = {pod_args[i - 1] for i, (a, b) in enumerate(zip(pod_args, ours, strict=True))
                 if i and a != b}  # fmt: skip
    assert differing <= set(GATEWAY_ADDRESS_OPTIONS)
    # the runtime's container line: TorchServe exactly as KServe starts it, then the gateway
    script = km.pod_script(False)
    assert script.startswith(" ".join(RUNTIME_ARGS) + " && exec ")
    assert script.endswith(" ".join(gateway_args(120)))


# -- the protocol's routes, which TorchServe 0.12 alone does not serve ------------------------
def test_health_ready_and_model_metadata_over_tritonclient_http(pod: KServeGatewayPod) -> None:
    client = _client(pod)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL_NAME)
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata(MODEL_NAME)
    assert meta["name"] == MODEL_NAME
    assert meta["inputs"] == DECLARED_INPUTS and meta["outputs"] == DECLARED_OUTPUTS
    assert client.get_server_metadata()["name"] == "kserve"
    client.close()
    # why the gateway exists: TorchServe itself 404s both routes
    for route in ("", "/ready"):
        resp = requests.get(f"{pod.inference_url}/v2/models/{MODEL_NAME}{route}", timeout=10)
        assert resp.status_code == 404, (route, resp.text)


# -- inference --------------------------------------------------------------------------------
@pytest.mark.parametrize("binary", [True, False], ids=["binary-raw-image-bytes", "json-base64"])
def test_tritonclient_http_text_and_image_equals_predictions(
    pod: KServeGatewayPod, expected: list, binary: bool
) -> None:
    client = _client(pod)
    text, image = (triton_http.InferInput("text", [2], "BYTES"),
                   triton_http.InferInput("image", [2], "BYTES"))  # fmt: skip
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object),
                             binary_data=binary)  # fmt: skip
    images = IMAGES if binary else [b64(i).encode() for i in IMAGES]
    image.set_data_from_numpy(np.array(images, dtype=object), binary_data=binary)
    result = client.infer(MODEL_NAME, [text, image], request_id="gw-1")
    assert result.get_response()["id"] == "gw-1"
    assert result.get_response()["model_name"] == MODEL_NAME
    _assert_equals_predictions(result.as_numpy("label"), result.as_numpy("probabilities"),
                               result.as_numpy("contributions"), expected)  # fmt: skip
    client.close()


def test_requested_outputs_subset_is_forwarded(pod: KServeGatewayPod, expected: list) -> None:
    body = _v2_json(TEXTS, [b64(i) for i in IMAGES], outputs=[{"name": "label"}])
    resp = requests.post(f"{pod.http_url}/v2/models/{MODEL_NAME}/infer", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    outputs = resp.json()["outputs"]
    assert [o["name"] for o in outputs] == ["label"]
    assert outputs[0]["data"] == [e["label"] for e in expected]


def test_v1_is_refused_with_the_v2_route(pod: KServeGatewayPod) -> None:
    resp = requests.post(f"{pod.http_url}/v1/models/{MODEL_NAME}:predict",
                         json={"instances": [{"text": "fine"}]}, timeout=60)  # fmt: skip
    assert resp.status_code == 400
    assert f"POST /v2/models/{MODEL_NAME}/infer" in resp.json()["error"]


def test_concurrent_infers_through_the_gateway_form_torchserve_batches(
    pod: KServeGatewayPod,
) -> None:
    url = f"{pod.http_url}/v2/models/{MODEL_NAME}/infer"
    body = _v2_json(["a fine example"], [b64(IMAGES[0])])
    with cf.ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda _: requests.post(url, json=body, timeout=120), range(48)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers][:3]
    sizes = [a.json()["parameters"]["batch_size"] for a in answers]
    assert max(sizes) > 1, f"no dynamic batching through the gateway: {sizes}"
    assert max(sizes) <= 8  # the snapshot's batchSize (handlers/model-config.yaml)


def test_bad_request_gets_torchserves_4xx_and_message_while_mates_are_answered(
    pod: KServeGatewayPod, expected: list
) -> None:
    url = f"{pod.http_url}/v2/models/{MODEL_NAME}/infer"
    good = _v2_json(TEXTS, [b64(i) for i in IMAGES])
    bad_b64 = _v2_json(["a", "b"], ["", "not b64!!"])
    too_many = _v2_json(["a"] * 33, [""] * 33)
    jobs = [good] * 6 + [bad_b64, too_many]
    with cf.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda b: requests.post(url, json=b, timeout=120), jobs))
    for resp in answers[:6]:
        assert resp.status_code == 200, resp.text
        assert resp.json()["outputs"][0]["data"] == [e["label"] for e in expected]
    assert answers[6].status_code == 400
    assert answers[6].json() == {"error": answers[6].json()["error"]}
    assert answers[6].json()["error"].startswith('item 1: "image" is not valid base64')
    assert answers[7].status_code == 413
    assert "at most 32 per request" in answers[7].json()["error"]


STOCK_GRPC = """
import json, sys
import numpy as np
import tritonclient.grpc as tg
client = tg.InferenceServerClient(sys.argv[1])
name = sys.argv[2]
texts, images = json.loads(sys.argv[3]), [bytes.fromhex(h) for h in json.loads(sys.argv[4])]
text = tg.InferInput("text", [len(texts)], "BYTES")
text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
image = tg.InferInput("image", [len(images)], "BYTES")
image.set_data_from_numpy(np.array(images, dtype=object))
result = client.infer(name, [text, image], request_id="stock-grpc-1")
meta = client.get_model_metadata(name, as_json=True)
response = result.get_response(as_json=True)
out = {"live": client.is_server_live(), "ready": client.is_server_ready(),
       "model_ready": client.is_model_ready(name),
       "inputs": meta["inputs"], "outputs": meta["outputs"], "id": response["id"],
       "parameters": response.get("parameters", {}),
       "label": [v.decode() for v in result.as_numpy("label")],
       "probabilities": result.as_numpy("probabilities").tolist(),
       "contributions": result.as_numpy("contributions").tolist()}
bad = tg.InferInput("image", [2], "BYTES")
bad.set_data_from_numpy(np.array([images[0], b"no pixels here"], dtype=object))
try:
    client.infer(name, [bad])
except tg.InferenceServerException as err:
    out["error"] = [err.status(), err.message()]
print(json.dumps(out))
"""


def test_stock_tritonclient_grpc_against_the_gateways_grpc_port(
    pod: KServeGatewayPod, expected: list
) -> None:
    """What the kfs wrapper could not do: both inputs and every item reach the handler."""
    args = [pod.grpc_target, MODEL_NAME, json.dumps(TEXTS), json.dumps([i.hex() for i in IMAGES])]
    run = subprocess.run([sys.executable, "-c", STOCK_GRPC, *args], capture_output=True,
                         text=True, timeout=180)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["live"] and out["ready"] and out["model_ready"] and out["id"] == "stock-grpc-1"
    def as_protocol(tensors: list[dict]) -> list[dict]:  # gRPC JSON: int64 shapes as strings
        return [{"name": t["name"], "datatype": t["datatype"],
                 "shape": [int(d) for d in t["shape"]]} for t in tensors]  # fmt: skip

    assert as_protocol(out["inputs"]) == DECLARED_INPUTS
    assert as_protocol(out["outputs"]) == DECLARED_OUTPUTS
    _assert_equals_predictions(out["label"], out["probabilities"], out["contributions"], expected)
    assert int(out["parameters"]["batch_size"]["int64_param"]) >= 1  # survives, unlike TS's gRPC
    status, message = out["error"]
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert message.startswith("item 1:") and "not a recognised image format" in message


# -- readiness follows TorchServe's worker (last: it kills the worker) -----------------------
def test_ready_routes_follow_torchserves_worker(pod: KServeGatewayPod) -> None:
    ready_url = f"{pod.http_url}/v2/models/{MODEL_NAME}/ready"
    assert requests.get(ready_url, timeout=10).status_code == 200
    pids = [w["pid"] for w in (pod.describe() or {}).get("workers", [])]
    assert pids
    for pid in pids:  # every worker of the TorchServe this test started: none is READY
        os.kill(pid, signal.SIGKILL)
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        model = requests.get(ready_url, timeout=10).status_code
        server = requests.get(f"{pod.http_url}/v2/health/ready", timeout=10).status_code
        seen.append((model, server))
        if (503, 503) in seen and seen[-1] == (200, 200):
            break
        time.sleep(0.1)
    assert (503, 503) in seen, f"never reported not ready while the worker restarted: {seen}"
    assert seen[-1] == (200, 200), f"not ready again after TorchServe restarted it: {seen[-5:]}"
    assert requests.get(f"{pod.http_url}/v2/health/live", timeout=10).status_code == 200
