"""``POST /explanations/<model>`` on a real TorchServe (tiny archive): the same request forms as
/predictions, options as headers or form fields, bad items refused alone inside live batches."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from conftest import MODEL_NAME, b64, jpeg_bytes
from mmsent.clients.grpc_stubs import inference_pb2
from mmsent.harness.torchserve import TorchServe
from mmsent.serving.explain import CLASSES_FIELD as CLASSES
from mmsent.serving.explain import GRID_FIELD as GRID

pytestmark = pytest.mark.server

TEXT = "the staff were friendly 🎉 and the food was great"
IMAGE = jpeg_bytes((160, 120), (40, 120, 200))
TOL = 1e-4  # batch mates are padded to the longest text in the batch: float noise only


def _post(server: TorchServe, route: str, options: dict[str, str] | None = None,
          **kwargs: Any) -> requests.Response:  # fmt: skip
    """POST to /<route>/<model>; ``options`` become request headers (kept with the caller's)."""
    headers = {**kwargs.pop("headers", {}), **(options or {})}
    return requests.post(f"{server.inference_url}/{route}/{MODEL_NAME}", headers=headers,
                         timeout=120, **kwargs)  # fmt: skip


def _close(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= TOL for k in a)


@pytest.mark.parametrize("form", ["json", "multipart", "bare-image"])
def test_explanations_accept_every_predictions_form(server: TorchServe, form: str) -> None:
    kwargs: dict[str, Any] = {
        "json": {"json": {"text": TEXT, "image": b64(IMAGE)}},
        "multipart": {"files": {"text": (None, TEXT), "image": ("p.jpg", IMAGE, "image/jpeg")}},
        "bare-image": {"data": IMAGE, "headers": {"Content-Type": "image/jpeg"}},
    }[form]
    explained = _post(server, "explanations", **kwargs)
    predicted = _post(server, "predictions", **kwargs)
    assert explained.status_code == 200, explained.text
    answer, reference = explained.json(), predicted.json()
    assert answer["label"] == reference["label"]
    assert _close(answer["probabilities"], reference["probabilities"])
    assert "explanation" not in reference
    explanation = answer["explanation"]
    assert explanation["target"] == answer["label"]
    assert explanation["image"]["grid"] == [7, 7]
    assert len(explanation["image"]["scores"]) == 7
    if form == "bare-image":
        assert explanation["words"] == []
    else:
        assert [w["word"] for w in explanation["words"]] == TEXT.split()
        assert all(TEXT[w["start"] : w["end"]] == w["word"] for w in explanation["words"])


def test_options_travel_as_headers_or_form_fields(server: TorchServe) -> None:
    resp = _post(server, "explanations", {GRID: "4", CLASSES: "all"},
                 json={"text": TEXT, "image": b64(IMAGE)})  # fmt: skip
    assert resp.status_code == 200, resp.text
    explanation = resp.json()["explanation"]
    assert explanation["image"]["grid"] == [4, 4]
    assert set(explanation["classes"]) == {"negative", "neutral", "positive"}
    form = {"text": (None, TEXT), "image": ("p.jpg", IMAGE, "image/jpeg"), GRID: (None, "2")}
    resp = _post(server, "explanations", files=form)
    assert resp.status_code == 200, resp.text
    assert resp.json()["explanation"]["image"]["grid"] == [2, 2]
    # TorchServe 0.12 drops the query string of /explanations: a parameter there does nothing
    resp = _post(server, "explanations", json={"image": b64(IMAGE)}, params={"x-explain-grid": "3"})
    assert resp.json()["explanation"]["image"]["grid"] == [7, 7]
    # the form field on /predictions is an unknown field, as any other would be
    refused = _post(server, "predictions", files={"text": (None, TEXT), GRID: (None, "2")})
    assert refused.status_code == 400 and GRID in refused.json()["error"]


BAD = [
    ("malformed-json", {"data": b'{"text": ', "headers": {"Content-Type": "application/json"}},
     None, 400, "malformed JSON"),
    ("grid-over-limit", {"json": {"image": b64(IMAGE)}}, {GRID: "15"}, 413, "at most 100"),
    ("grid-not-a-number", {"json": {"text": TEXT}}, {GRID: "big"}, 400, "positive integer"),
    ("no-input", {"json": {}}, None, 400, "needs non-empty"),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "options", "status", "message"),
                         [b[1:] for b in BAD], ids=[b[0] for b in BAD])  # fmt: skip
def test_bad_explanation_in_a_live_batch_harms_nobody(
    server: TorchServe, kwargs: dict[str, Any], options: dict[str, str] | None, status: int,
    message: str,
) -> None:
    """A bad /explanations item among good explanations and predictions released together:
    its own 4xx; every good explanation is exactly the one it gets alone; worker unchanged."""
    good = {"json": {"text": TEXT, "image": b64(IMAGE)}}
    reference = _post(server, "explanations", **good).json()
    reference_prediction = _post(server, "predictions", **good).json()
    pids = server.worker_pids(MODEL_NAME)
    jobs: list[tuple[str, dict[str, str] | None, dict[str, Any]]] = [
        ("explanations", None, good), ("predictions", None, good),
        ("explanations", None, good), ("explanations", options, kwargs),
        ("explanations", None, good), ("predictions", None, good),
    ]  # fmt: skip
    sizes: list[int] = []
    for _ in range(3):  # a busy shared CPU can split a burst; three tries to see a real batch
        barrier = threading.Barrier(len(jobs))

        def one(job: tuple[str, dict[str, str] | None, dict[str, Any]],
                barrier: threading.Barrier = barrier) -> requests.Response:  # fmt: skip
            barrier.wait(timeout=60)
            return _post(server, job[0], job[1], **job[2])

        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            replies = list(pool.map(one, jobs))
        for (route, _, payload), resp in zip(jobs, replies, strict=True):
            if payload is kwargs:
                assert resp.status_code == status, resp.text
                assert message in resp.json()["error"]
                continue
            assert resp.status_code == 200, resp.text
            body = resp.json()
            sizes.append(body["batch_size"])
            assert _close(body["probabilities"], reference_prediction["probabilities"])
            if route == "explanations":
                got, want = dict(body["explanation"]), dict(reference["explanation"])
                got.pop("ms"), want.pop("ms")
                assert got == want  # explained alone, whatever the batch
            else:
                assert "explanation" not in body
        if max(sizes) > 1:
            break
    assert max(sizes) > 1, f"no batch formed: {sizes}"
    assert server.worker_pids(MODEL_NAME) == pids


def test_grpc_has_no_explanations_rpc() -> None:
    """TorchServe 0.12's inference.proto (stubs generated from the installed jar) has no
    explanation call, and gRPC items carry no ``explain`` header: /explanations is REST only.
    If a TorchServe release adds one, this fails and the handler should learn it."""
    service = inference_pb2.DESCRIPTOR.services_by_name["InferenceAPIsService"]
    assert {m.name for m in service.methods} == {
        "Ping", "Predictions", "StreamPredictions", "StreamPredictions2"
    }
