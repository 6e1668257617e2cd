"""Per-batch budgets on a real TorchServe: no cheap request buys seconds of worker time.

- amplification: one Open Inference request of 32 solid-colour 39 MP PNGs (~4 MB on the wire,
  every item under the per-image limits) held a batch for 9 s and grew the worker by 0.6 GB;
  now it is refused unread (413 naming the budget) while its batch mate is answered;
- abandoned REST requests: TorchServe cannot see a REST client leave, so our clients send a
  deadline; a storm of requests from clients that gave up is answered 408 without running;
- explanations: two worst-case explanations in one batch are not run back to back: the second
  is answered 503 with Retry-After (in process, where the batch is exactly what we send);
- client errors: each malformed body logs one line, no traceback.

Times are recorded, not asserted (speed is measured in benchmarks); docs/reliability.md
"Budgets" has the measured table.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from PIL import Image

from conftest import MODEL_NAME, b64
from mmsent.clients.rest import predict
from mmsent.harness.torchserve import TorchServe
from mmsent.serving.exchange import Exchange
from mmsent.serving.limits import RequestLimits
from mmsent.serving.messages import Request
from mmsent.serving.pipeline import SentimentPipeline

pytestmark = pytest.mark.server
LIMITS = RequestLimits()


@functools.cache
def _solid_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def _v2(images: list[bytes]) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(images)],
                        "data": [b64(im) for im in images]}]}  # fmt: skip


def _worker_rss(server: TorchServe) -> int:
    return sum(psutil.Process(pid).memory_info().rss for pid in server.worker_pids(MODEL_NAME))


def _post(server: TorchServe, route: str, **kwargs: Any) -> tuple[requests.Response, float]:
    start = time.perf_counter()
    resp = requests.post(f"{server.inference_url}/{route}", timeout=120, **kwargs)
    return resp, time.perf_counter() - start


def test_amplification_through_v2_is_refused_unread(server: TorchServe) -> None:
    side = 6245  # 39 MP: under the 40 MP per-image limit
    assert side * side <= LIMITS.max_image_pixels < (side + 100) ** 2
    heavy = _v2([_solid_png(side)] * 32)
    assert len(json.dumps(heavy)) < 8 << 20
    mate = {"json": {"text": "a quiet afternoon"}}
    rss_before = _worker_rss(server)
    pids = server.worker_pids(MODEL_NAME)
    with ThreadPoolExecutor(max_workers=2) as pool:
        big = pool.submit(_post, server, f"v2/models/{MODEL_NAME}/infer", json=heavy)
        time.sleep(0.005)  # the mate arrives within maxBatchDelay: the same batch, usually
        other = pool.submit(_post, server, f"predictions/{MODEL_NAME}", **mate)
        (resp, heavy_s), (mate_resp, mate_s) = big.result(), other.result()
    assert resp.status_code == 413, resp.text
    assert "max_decode_pixels_per_request" in resp.json()["error"]
    assert mate_resp.status_code == 200 and mate_resp.json()["label"]
    grown = _worker_rss(server) - rss_before
    print(f"amplification: refused in {heavy_s:.3f} s, mate {mate_s:.3f} s, RSS +{grown >> 20} MB")
    assert grown < 200 << 20, f"the worker grew by {grown >> 20} MB on a refused request"
    assert server.worker_pids(MODEL_NAME) == pids


def test_a_request_at_the_decode_budget_is_served(server: TorchServe) -> None:
    """A 4K-frame PNG (8.3 MP, the budget) is decoded and answered, as is its batch mate."""
    at_limit = {"json": {"image": b64(_solid_png(2880))}}  # 8.29 MP
    with ThreadPoolExecutor(max_workers=2) as pool:
        big = pool.submit(_post, server, f"predictions/{MODEL_NAME}", **at_limit)
        other = pool.submit(_post, server, f"predictions/{MODEL_NAME}", json={"text": "fine"})
        (resp, big_s), (mate, mate_s) = big.result(), other.result()
    assert resp.status_code == 200 and resp.json()["modalities"] == ["image"], resp.text
    assert mate.status_code == 200
    print(f"at the budget: {big_s:.3f} s, mate {mate_s:.3f} s")


def test_abandoned_rest_storm_through_our_client_is_skipped(server: TorchServe,
                                                          tmp_path: Path) -> None:  # fmt: skip
    """64 clients that give up after 50 ms: our REST client sent each a deadline, so of those
    that reached the server, the ones still queued when their deadline passed are answered 408
    without running (those served inside their 50 ms run: a few, at ~25 ms of decoding each)."""
    access = server.log_dir / "access_log.log"
    start = len(access.read_text(errors="replace").splitlines())
    # a 2 MP PNG: ~25 ms of decoding each, so 64 of them are seconds of work whatever the model
    image = tmp_path / "storm.png"
    image.write_bytes(_solid_png(1400))

    def abandoned(_: int) -> None:
        with contextlib.suppress(requests.RequestException):  # the client goes away
            predict(f"{server.inference_url}/predictions/{MODEL_NAME}", "gone", image,
                    timeout=0.05)  # fmt: skip

    with ThreadPoolExecutor(max_workers=64) as pool:  # all at once: a queue deeper than 50 ms
        list(pool.map(abandoned, range(64)))
    lines: list[str] = []
    for _ in range(60):  # the storm drains in the background: wait until the log settles
        time.sleep(0.5)
        now = [ln for ln in access.read_text(errors="replace").splitlines()[start:]
               if "POST /predictions/" in ln]  # fmt: skip
        if now and len(now) == len(lines):
            break
        lines = now
    skipped = sum(1 for ln in lines if '" 408 ' in ln)
    ran = sum(1 for ln in lines if '" 200 ' in ln)
    print(f"storm: {len(lines)} of 64 reached the server, {skipped} skipped (408), {ran} ran")
    assert skipped + ran >= 16, f"too few abandoned requests reached the server: {lines[-5:]}"
    assert skipped >= ran, f"{ran} abandoned requests ran, only {skipped} were skipped"
    good = predict(f"{server.inference_url}/predictions/{MODEL_NAME}", "still here", None)
    assert good.status_code == 200, good.text


def test_malformed_bodies_log_one_line_each_and_no_traceback(server: TorchServe) -> None:
    log = server.log_dir / "model_log.log"
    start = len(log.read_text(errors="replace").splitlines())
    bodies = [b'{"text": "x", "n": 1' + b"0" * 5000 + b"}", b'{"n": ' + b"[" * 100_000,
              "\ufeff{}".encode(), b'{"text": "\xff\xfe"}']  # fmt: skip
    for body in bodies * 3:
        resp = requests.post(f"{server.inference_url}/predictions/{MODEL_NAME}", data=body,
                             headers={"Content-Type": "application/json"}, timeout=60)  # fmt: skip
        assert resp.status_code == 400, resp.text
    time.sleep(1.0)  # the worker's log is flushed by TorchServe's log thread
    added = log.read_text(errors="replace").splitlines()[start:]
    assert not [line for line in added if "Traceback" in line], "\n".join(added[-40:])
    refusals = [line for line in added if "answered 400" in line]
    assert len(refusals) == len(bodies) * 3, "\n".join(added[-40:])
    print(f"log lines per refused request: {len(added) / (len(bodies) * 3):.1f}")


def test_two_worst_explanations_in_one_batch(tiny_build: tuple[Path, Path]) -> None:
    """The explanation budget fits one worst-case explanation per batch: the second in the
    same batch is answered 503 with Retry-After; the prediction mate is answered."""
    exchange = Exchange(SentimentPipeline.from_dir(tiny_build[1]))
    worst = {"body": {"text": " ".join(f"w{i}" for i in range(62)),
                      "image": b64(_solid_png(64))}, "x-explain-grid": "10"}  # fmt: skip
    requests_ = [Request(dict(worst), explain=True), Request(dict(worst), explain=True),
                 Request({"body": {"text": "a prediction"}})]  # fmt: skip
    first, second, mate = exchange.run(requests_).replies
    assert first.status == 200 and first.body["explanation"]["forward_passes"] > 1
    assert second.status == 503 and second.headers == {"Retry-After": "1"}
    assert "max_explain_rows_per_batch" in second.body["error"]
    assert mate.status == 200 and mate.body["label"]
