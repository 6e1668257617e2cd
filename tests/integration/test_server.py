"""A real TorchServe serving the tiny archive: REST JSON, multipart, batching, bad input."""

from __future__ import annotations

import concurrent.futures as cf
import io
import random
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from conftest import MODEL_NAME, SERVED_BATCHING, b64, jpeg_bytes
from mmsent.harness.torchserve import TorchServe
from mmsent.serving.exchange import Exchange
from mmsent.serving.pipeline import SentimentPipeline

pytestmark = pytest.mark.server


def _predict(server: TorchServe, **kwargs: Any) -> requests.Response:
    return requests.post(f"{server.inference_url}/predictions/{MODEL_NAME}", timeout=60, **kwargs)


def _close(a: dict[str, float], b: dict[str, float], tol: float = 1e-5) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= tol for k in a)


def test_json_and_multipart_agree_with_in_process_pipeline(
    server: TorchServe, tiny_build: tuple[Path, Path]
) -> None:
    image = jpeg_bytes((320, 200), (30, 160, 90))
    text = "the service was wonderful"
    as_json = _predict(server, json={"text": text, "image": b64(image)})
    form = {"text": (None, text), "image": ("p.jpg", image, "image/jpeg")}
    as_form = _predict(server, files=form)
    assert as_json.status_code == 200 and as_form.status_code == 200
    a, b = as_json.json(), as_form.json()
    expected = Exchange(SentimentPipeline.from_dir(tiny_build[1])).predict(
        [{"body": {"text": text, "image": b64(image)}}]
    )[0]
    assert _close(a["probabilities"], expected["probabilities"])
    assert _close(b["probabilities"], expected["probabilities"])
    assert a["label"] == expected["label"]
    assert sum(a["contributions"].values()) == pytest.approx(1.0, abs=1e-3)


def test_bare_image_body_is_an_image_only_request(server: TorchServe) -> None:
    resp = _predict(server, data=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["modalities"] == ["image"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": b'{"text": ', "headers": {"Content-Type": "application/json"}}, "malformed"),
        ({"json": {"text": 42}}, "must be a string"),
        ({"json": {}}, "needs non-empty"),
        ({"json": {"image": "@@@"}}, "base64"),
    ],
)
def test_bad_request_gets_4xx_and_worker_stays_up(
    server: TorchServe, kwargs: dict[str, Any], message: str
) -> None:
    pids = server.worker_pids(MODEL_NAME)
    resp = _predict(server, **kwargs)
    assert resp.status_code == 400
    assert message in resp.json()["error"]
    assert _predict(server, json={"text": "still serving"}).status_code == 200
    assert server.worker_pids(MODEL_NAME) == pids


def test_concurrent_requests_form_batches_and_bad_ones_harm_nobody(server: TorchServe) -> None:
    """32 concurrent requests, every 4th malformed: batches > 1 form, good answers are right."""
    good = {"text": "a fine example", "image": b64(jpeg_bytes((120, 90)))}
    reference = _predict(server, json=good).json()["probabilities"]

    def call(i: int) -> tuple[int, requests.Response]:
        if i % 4 == 3:
            return i, _predict(server, data=b"{oops", headers={"Content-Type": "application/json"})
        return i, _predict(server, json=good)

    with cf.ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(32)))
    sizes = []
    for i, resp in results:
        if i % 4 == 3:
            assert resp.status_code == 400 and "malformed JSON" in resp.json()["error"]
        else:
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert _close(body["probabilities"], reference)
            sizes.append(body["batch_size"])
    assert max(sizes) > 1, f"no dynamic batching happened: batch sizes {sizes}"
    assert max(sizes) <= 8


def test_normal_photo_passes_request_size_limits(server: TorchServe) -> None:
    """A 12 MP noisy JPEG (> 4 MB, ~6+ MB as base64 JSON) must pass the configured limits.

    Such photos trip TorchServe's 6.5 MB default request limit and gRPC's 4 MB default.
    """
    rng = random.Random(0)
    img = Image.frombytes("RGB", (4000, 3000), rng.randbytes(4000 * 3000 * 3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    assert len(buf.getvalue()) > 4 * 1024 * 1024
    resp = _predict(server, json={"text": "holiday photo", "image": b64(buf.getvalue())})
    assert resp.status_code == 200, resp.text[:300]


def test_enormous_body_is_refused_by_the_server_limit(server: TorchServe) -> None:
    resp = _predict(server, data=b"0" * (21 * 1024 * 1024),
                    headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 413
    assert _predict(server, json={"text": "fine"}).status_code == 200


def test_management_api_is_loopback_and_read_only(server: TorchServe) -> None:
    models = requests.get(f"{server.management_url}/models", timeout=10).json()
    assert [m["modelName"] for m in models["models"]] == [MODEL_NAME]
    desc = requests.get(f"{server.management_url}/models/{MODEL_NAME}", timeout=10).json()[0]
    assert desc["batchSize"] == SERVED_BATCHING["batchSize"]
    assert desc["maxBatchDelay"] == SERVED_BATCHING["maxBatchDelay"]
    register = requests.post(f"{server.management_url}/models",
                             params={"url": "https://example.com/evil.mar"}, timeout=10)
    assert register.status_code in (400, 403, 405), register.text


def test_stop_leaves_no_process_behind(tiny_build: tuple[Path, Path]) -> None:
    import subprocess

    store, _ = tiny_build
    ts = TorchServe(store, {MODEL_NAME: f"{MODEL_NAME}.mar"}).start()
    marker = str(ts.workdir)
    pids = ts.worker_pids(MODEL_NAME)
    ts.stop()
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert marker not in ps
    assert not any(line.split()[0] == str(p) for p in pids for line in ps.splitlines()[1:])
