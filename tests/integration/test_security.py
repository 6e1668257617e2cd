"""Safe defaults, proven on real servers: loopback only, tokens in production, no remote models,
and no tampered archive ever started.

Measured on TorchServe 0.12 (docs/serving.md "Security"): a call without (or with the
wrong) token is refused with HTTP **400** ``InvalidKeyException`` (not 401) and gRPC
``PERMISSION_DENIED``; the keys are in ``key_file.json`` (mode 0600) in the server's working
directory; with the model API off, registering anything is 405; with it on, a URL outside
``allowed_urls`` is 404 "does not match any allowed URL(s)", refused before any fetch.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
import pytest
import requests

from conftest import MODEL_NAME
from mmsent.clients.auth import api_key
from mmsent.clients.grpc import GrpcClient
from mmsent.clients.grpc_stubs import inference_pb2, inference_pb2_grpc
from mmsent.config import read_properties
from mmsent.harness.torchserve import TorchServe
from mmsent.packaging.archive import sha256_of

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "config.properties"
PROD = ROOT / "config.production.properties"
AUTH_REFUSED = "Token Authorization failed"


def _properties(path: Path) -> dict[str, str]:
    return read_properties(path.read_text())


@pytest.fixture(scope="module")
def prod_server(tiny_build: tuple[Path, Path]) -> Iterator[TorchServe]:
    store, _ = tiny_build
    with TorchServe(store, {MODEL_NAME: f"{MODEL_NAME}.mar"}, base_config=PROD) as ts:
        yield ts


# -- static: the config files ------------------------------------------------------------------
@pytest.mark.parametrize("path", [DEV, PROD], ids=["dev", "production"])
def test_every_address_is_loopback(path: Path) -> None:
    props = _properties(path)
    addresses = {k: v for k, v in props.items() if k.endswith("_address")}
    assert {"inference_address", "management_address", "metrics_address",
            "grpc_inference_address", "grpc_management_address"} <= set(addresses)  # fmt: skip
    for key, value in addresses.items():
        host = urlparse(value).hostname if "://" in value else value
        assert host is not None
        assert host == "localhost" or ipaddress.ip_address(host).is_loopback, (key, value)


def test_production_config_is_dev_config_plus_tokens() -> None:
    dev, prod = _properties(DEV), _properties(PROD)
    assert dev["disable_token_authorization"] == "true"
    assert prod.get("disable_token_authorization", "false") == "false"
    for props in (dev, prod):
        assert props["enable_model_api"] == "false"
        assert props["allowed_urls"] == "file://.*\\\\.mar"  # local .mar files only
    token_keys = {"disable_token_authorization", "token_expiration_min"}
    same = {k: v for k, v in dev.items() if k not in token_keys}
    assert same == {k: v for k, v in prod.items() if k not in token_keys}


# -- production config on a real server --------------------------------------------------------
def test_key_file_is_private_and_in_the_working_directory(prod_server: TorchServe) -> None:
    path = prod_server.workdir / "key_file.json"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {"inference", "management", "API"} <= set(json.loads(path.read_text()))


@pytest.mark.parametrize(
    ("api", "method", "route"),
    [("inference", "POST", f"/predictions/{MODEL_NAME}"), ("inference", "GET", "/ping"),
     ("management", "GET", "/models"), ("management", "GET", f"/models/{MODEL_NAME}")],
)  # fmt: skip
def test_production_refuses_calls_without_the_right_token(
    prod_server: TorchServe, api: str, method: str, route: str
) -> None:
    base = prod_server.inference_url if api == "inference" else prod_server.management_url
    other = "management" if api == "inference" else "inference"
    body: dict[str, Any] = {"json": {"text": "hello"}} if method == "POST" else {}
    for headers in ({}, {"Authorization": "Bearer not-the-key"}, prod_server.bearer(other)):
        resp = requests.request(method, base + route, headers=headers, timeout=60, **body)
        assert resp.status_code == 400, (headers, resp.text)
        assert resp.json()["type"] == "InvalidKeyException"
        assert AUTH_REFUSED in resp.json()["message"]
    ok = requests.request(method, base + route, headers=prod_server.bearer(api), timeout=60,
                          **body)  # fmt: skip
    assert ok.status_code == 200, ok.text


def test_production_grpc_needs_the_inference_token(prod_server: TorchServe) -> None:
    request = inference_pb2.PredictionsRequest(model_name=MODEL_NAME, input={"text": b"hello"})
    with grpc.insecure_channel(prod_server.grpc_target) as channel:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Predictions(request, timeout=60)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert AUTH_REFUSED in (info.value.details() or "")
        header = prod_server.bearer("inference")["Authorization"]
        reply = stub.Predictions(request, timeout=60, metadata=(("authorization", header),))
        assert json.loads(reply.prediction)["label"]
    key_file = prod_server.workdir / "key_file.json"
    with GrpcClient(prod_server.grpc_target, prod_server.grpc_management_target,
                    inference_key=api_key(key_file, "inference"),
                    management_key=api_key(key_file, "management")) as client:
        assert client.predict(MODEL_NAME, text="hello")["label"]
        assert client.describe_model(MODEL_NAME)[0]["modelName"] == MODEL_NAME


# -- remote model registration is refused, and nothing is fetched ------------------------------
@pytest.fixture()
def trap() -> Iterator[tuple[str, socket.socket]]:
    """A listening loopback socket: a URL pointing at it proves no fetch was even attempted."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.setblocking(False)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/x.mar", sock
    sock.close()


def _assert_untouched(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        sock.accept()  # nobody connected


def _register(ts: TorchServe, url: str, headers: dict[str, str] | None = None) -> Any:
    return requests.post(f"{ts.management_url}/models", params={"url": url},
                         headers=headers or {}, timeout=30)  # fmt: skip


def test_register_is_refused_with_the_model_api_off(
    server: TorchServe, prod_server: TorchServe, trap: tuple[str, socket.socket]
) -> None:
    url, sock = trap
    for ts, headers in ((server, {}), (prod_server, prod_server.bearer("management"))):
        for target in (url, "http://example.invalid/x.mar"):
            resp = _register(ts, target, headers)
            assert resp.status_code == 405, resp.text
            assert resp.json()["type"] == "MethodNotAllowedException"
    _assert_untouched(sock)


def test_allowed_urls_refuses_outside_urls_even_with_the_model_api_on(
    tiny_build: tuple[Path, Path], trap: tuple[str, socket.socket]
) -> None:
    url, sock = trap
    store, _ = tiny_build
    with TorchServe(store, {MODEL_NAME: f"{MODEL_NAME}.mar"},
                    overrides={"enable_model_api": "true"}) as ts:  # fmt: skip
        for target in (url, "http://example.invalid/x.mar", "https://example.invalid/x.mar",
                       "file:///etc/passwd"):  # fmt: skip
            resp = _register(ts, target)
            assert resp.status_code == 404, resp.text
            assert "does not match any allowed URL(s)" in resp.json()["message"]
        names = [m["modelName"] for m in requests.get(f"{ts.management_url}/models",
                                                      timeout=10).json()["models"]]  # fmt: skip
        assert names == [MODEL_NAME]
    _assert_untouched(sock)


# -- what the management API leaves open ------------------------------------------------------
def test_management_api_blocks_register_and_delete_but_not_scaling(
    server: TorchServe, prod_server: TorchServe
) -> None:
    """``enable_model_api=false`` blocks only register/unregister (REST 405, gRPC
    PERMISSION_DENIED). Scaling workers and setting the default version stay open to whoever can
    reach the management port (dev: any local process; production: holders of the management
    key), over REST and gRPC: TorchServe 0.12 has no switch for them. Scaled to the value it
    already has, so the shared server is not disturbed."""
    from mmsent.clients.grpc_stubs import management_pb2

    mgmt = f"{server.management_url}/models/{MODEL_NAME}"
    assert requests.delete(mgmt, timeout=30).status_code == 405
    scale = {"min_worker": 1, "max_worker": 1, "synchronous": "true"}
    assert requests.put(mgmt, params=scale, timeout=120).status_code == 200
    assert requests.put(f"{mgmt}/1.0/set-default", timeout=30).status_code == 200
    with GrpcClient(server.grpc_target, server.grpc_management_target) as client:
        reply = client.management.ScaleWorker(management_pb2.ScaleWorkerRequest(
            model_name=MODEL_NAME, min_worker=1, max_worker=1), timeout=60)  # fmt: skip
        assert "worker" in reply.msg.lower()
        with pytest.raises(grpc.RpcError) as info:
            client.management.UnregisterModel(
                management_pb2.UnregisterModelRequest(model_name=MODEL_NAME), timeout=60)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    prod_mgmt = f"{prod_server.management_url}/models/{MODEL_NAME}"
    refused = requests.put(prod_mgmt, params=scale, timeout=60)
    assert refused.status_code == 400 and refused.json()["type"] == "InvalidKeyException"
    allowed = requests.put(prod_mgmt, params=scale, headers=prod_server.bearer("management"),
                           timeout=120)  # fmt: skip
    assert allowed.status_code == 200, allowed.text
    assert server.ready_workers(MODEL_NAME) == 1


# -- a tampered archive is never started -------------------------------------------------------
@pytest.mark.parametrize("sidecar", ["stale", "missing"])
def test_serve_start_refuses_a_tampered_archive(
    tiny_build: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sidecar: str
) -> None:
    from mmsent.harness import serve

    store, _ = tiny_build
    mar = store / f"{MODEL_NAME}.mar"
    (tmp_path / "model_store").mkdir()
    copy = tmp_path / "model_store" / mar.name
    copy.write_bytes(mar.read_bytes() + b"tampered")
    if sidecar == "stale":
        copy.with_name(mar.name + ".sha256").write_text(f"{sha256_of(mar)}  {mar.name}\n")
    started: list[Any] = []

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        started.append(args)
        raise AssertionError(f"serve.py went on after a failed sha256 check: {args}")

    monkeypatch.setattr(serve, "ROOT", tmp_path)
    monkeypatch.setattr(serve.subprocess, "run", forbidden)
    monkeypatch.setattr(serve.subprocess, "call", forbidden)
    monkeypatch.setattr(serve.requests, "get", forbidden)
    expected = RuntimeError if sidecar == "stale" else FileNotFoundError
    with pytest.raises(expected, match="does not match" if sidecar == "stale" else "missing"):
        serve.main(["start", "--model-name", MODEL_NAME])
    assert not started
