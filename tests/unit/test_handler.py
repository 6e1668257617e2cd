"""The TorchServe handler contract without a server: real ts Context, real archive files."""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from conftest import MODEL_NAME, b64, jpeg_bytes

HANDLER_PATH = Path(__file__).resolve().parents[2] / "handlers" / "fusion_handler.py"
METRICS_YAML = HANDLER_PATH.parents[1] / "metrics.yaml"


def _load_handler_class() -> type:
    spec = importlib.util.spec_from_file_location("fusion_handler", HANDLER_PATH)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.FusionSentimentHandler


@pytest.fixture(scope="module")
def handler_and_context(tiny_build: tuple[Path, Path]) -> tuple[Any, Context]:
    context = Context(MODEL_NAME, str(tiny_build[1]), {}, 8, None, "0.12.0")
    handler = _load_handler_class()()
    handler.initialize(context)
    return handler, context


def _run(handler: Any, context: Context, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    context.request_processor = [RequestProcessor({}) for _ in data]
    return [json.loads(out) for out in handler.handle(data, context)]


def test_initialize_loads_on_cpu_without_gpu(handler_and_context: tuple[Any, Context]) -> None:
    handler, _ = handler_and_context
    assert handler.initialized
    assert str(handler.pipeline.device) == "cpu"


def test_per_item_status_in_a_mixed_batch(handler_and_context: tuple[Any, Context]) -> None:
    handler, context = handler_and_context
    data = [
        {"body": {"text": "great", "image": b64(jpeg_bytes())}},
        {"body": b"{not json"},
        {"text": b"fine words", "image": jpeg_bytes((50, 50))},  # multipart / gRPC form
        {"body": {"image": "%%%"}},
    ]
    answers = _run(handler, context, data)
    statuses = [context.get_response_status(i)[0] for i in range(len(data))]
    assert statuses == [200, 400, 200, 400]
    assert "malformed JSON" in context.get_response_status(1)[1]
    assert answers[0]["batch_size"] == 4 and answers[2]["modalities"] == ["text", "image"]
    assert answers[1]["code"] == 400 and answers[3]["code"] == 400
    assert all(context.get_response_content_type(i) == "application/json" for i in range(4))


def test_handler_survives_an_all_bad_batch(handler_and_context: tuple[Any, Context]) -> None:
    handler, context = handler_and_context
    answers = _run(handler, context, [{"body": b"]["}, {"nothing": b""}])
    assert [a["code"] for a in answers] == [400, 400]
    answers = _run(handler, context, [{"body": {"text": "still alive"}}])
    assert answers[0]["label"] in handler.pipeline.cfg.labels


def test_batch_size_counts_the_requests_torchserve_batched(
    handler_and_context: tuple[Any, Context], caplog: pytest.LogCaptureFixture
) -> None:
    """``batch_size`` (answers) and the BatchSize metric are the requests TorchServe batched,
    whatever became of them: here 5 requests, one refused, one past its deadline, one
    /explanations, one Open Inference request of 3 items. Rows are reported apart (6: the
    late request never became one)."""
    handler, context = handler_and_context
    cache = MetricsCacheYamlImpl(str(METRICS_YAML))
    cache.initialize_cache()
    context.metrics = cache
    rest = {"content-type": "application/json"}
    past = str(int(time.time() * 1000) - 60_000)
    v2 = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a", "b", "c"]}]}
    data = [{"body": {"text": "a good day"}}, {"body": b"{not json"},
            {"body": {"text": "too late"}}, {"body": {"text": "explain this"}}, {"body": v2}]
    headers = [rest, rest, {**rest, "x-request-deadline": past}, {**rest, "explain": "True"}, rest]
    context.request_processor = [RequestProcessor(h) for h in headers]
    with caplog.at_level(logging.INFO, logger="ts.metrics"):
        answers = [json.loads(out) for out in handler.handle(data, context)]
    assert [context.get_response_status(i)[0] for i in range(5)] == [200, 400, 408, 200, 200]
    assert answers[0]["batch_size"] == 5 and answers[0]["batch_rows"] == 6
    assert answers[3]["batch_size"] == 5 and "explanation" in answers[3]
    assert answers[4]["parameters"] == {"batch_size": 5, "batch_rows": 6}
    emitted = [r.getMessage() for r in caplog.records if "BatchSize" in r.getMessage()]
    assert len(emitted) == 1 and "BatchSize.Count:5|" in emitted[0], emitted
