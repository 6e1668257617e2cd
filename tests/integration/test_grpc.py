"""gRPC against a real TorchServe: same answers as REST, clear errors, batching, big images."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from PIL import Image

from conftest import MODEL_NAME, SERVED_BATCHING, b64, jpeg_bytes
from mmsent.clients.grpc import GrpcClient, PredictionError
from mmsent.clients.grpc_codegen import generate_stubs, is_current
from mmsent.clients.grpc_stubs import inference_pb2

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(server) -> GrpcClient:
    with GrpcClient(server.grpc_target, server.grpc_management_target, timeout=120) as c:
        yield c


def noise_jpeg(min_bytes: int, seed: int = 0) -> bytes:
    """A JPEG of at least ``min_bytes`` (noise barely compresses, so size tracks pixels)."""
    rng = np.random.default_rng(seed)
    side = 1024
    while True:
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=95)
        if buf.tell() >= min_bytes:
            return buf.getvalue()
        side = int(side * 1.3)


def rest_predict(server, text: str | None, image: bytes | None) -> dict:
    body = {k: v for k, v in {"text": text, "image": b64(image) if image else None}.items() if v}
    resp = requests.post(f"{server.inference_url}/predictions/{MODEL_NAME}", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.mark.parametrize(
    ("text", "image"),
    [("what a lovely day", jpeg_bytes()), ("terrible service, never again", None),
     (None, jpeg_bytes((200, 300), (20, 160, 40)))],
    ids=["text+image", "text-only", "image-only"],
)  # fmt: skip
def test_grpc_prediction_equals_rest(server, client, text, image) -> None:
    over_grpc = client.predict(MODEL_NAME, text=text, image=image)
    over_rest = rest_predict(server, text, image)
    assert over_grpc["label"] == over_rest["label"]
    assert over_grpc["modalities"] == over_rest["modalities"]
    assert set(over_grpc["probabilities"]) == {"negative", "neutral", "positive"}
    for name, p in over_rest["probabilities"].items():
        assert over_grpc["probabilities"][name] == pytest.approx(p, abs=1e-5)


def test_bad_item_is_a_clear_error(client) -> None:
    with pytest.raises(PredictionError) as info:
        client.predict(MODEL_NAME, image=b"definitely not an image")
    err = info.value
    assert err.status == 400
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a recognised image format" in err.message
    assert "INVALID_ARGUMENT" in str(err) and "HTTP 400" in str(err)


def test_torchserve_grpc_drops_the_per_item_status(client) -> None:
    """Pins TorchServe 0.12's behaviour the client works around: a per-item 400 from the handler
    arrives as gRPC OK with the handler's error JSON as the prediction bytes."""
    request = inference_pb2.PredictionsRequest(model_name=MODEL_NAME, input={"text": b"   "})
    response = client.inference.Predictions(request, timeout=120)
    body = json.loads(response.prediction)
    assert body["code"] == 400 and "non-empty" in body["error"]


def test_unknown_model_is_a_grpc_error(client) -> None:
    with pytest.raises(PredictionError) as info:
        client.predict("no_such_model", text="hi")
    assert info.value.grpc_code != grpc.StatusCode.OK
    assert "no_such_model" in info.value.message


def test_concurrent_grpc_calls_form_batches(client) -> None:
    images = [jpeg_bytes((160, 120), (i * 15 % 256, 80, 200)) for i in range(16)]

    def call(i: int) -> int:
        return client.predict(MODEL_NAME, text=f"request number {i}", image=images[i])["batch_size"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        sizes = list(pool.map(call, range(16)))
    assert max(sizes) > 1, f"no batch formed: {sizes}"


@pytest.mark.parametrize("megabytes", [3, 6], ids=["3MB", "6MB-over-grpc-default-4MB"])
def test_large_image_over_grpc(client, megabytes: int) -> None:
    image = noise_jpeg(megabytes * 1_000_000)
    assert len(image) >= megabytes * 1_000_000
    answer = client.predict(MODEL_NAME, text="a big photo", image=image)
    assert answer["modalities"] == ["text", "image"]
    assert abs(sum(answer["probabilities"].values()) - 1.0) < 1e-4


def test_management_over_grpc(client) -> None:
    names = [m["modelName"] for m in client.list_models()["models"]]
    assert MODEL_NAME in names
    described = client.describe_model(MODEL_NAME)[0]
    assert described["batchSize"] == SERVED_BATCHING["batchSize"]
    assert described["maxBatchDelay"] == SERVED_BATCHING["maxBatchDelay"]
    assert json.loads(client.ping())["status"] == "Healthy"


def test_cli_predict_and_error(server, tmp_path, capsys) -> None:
    from mmsent.clients.grpc_cli import main as cli_main

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_bytes())
    targets = ["--target", server.grpc_target, "--management-target",
               server.grpc_management_target]  # fmt: skip
    assert cli_main([*targets, "predict", "--text", "nice", "--image", str(photo)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["modalities"] == ["text", "image"]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    assert cli_main([*targets, "predict", "--image", str(bad)]) == 1
    err = json.loads(capsys.readouterr().err)
    assert err["code"] == 400 and err["grpc_code"] == "INVALID_ARGUMENT"


def test_stub_generation_is_reproducible(tmp_path) -> None:
    out = generate_stubs(tmp_path / "stubs")
    assert is_current(out)
    code = (out / "inference_pb2_grpc.py").read_text()
    assert "from . import inference_pb2" in code and "\nimport inference_pb2" not in code
