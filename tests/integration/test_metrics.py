"""Prometheus metrics: metrics.yaml declares the handler's metrics with the right types, and a
real TorchServe serves them (and its own request counters) on the metrics port after traffic."""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util
import time
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import MODEL_NAME
from mmsent.config import read_properties
from mmsent.harness.prometheus import STAGES, parse, scrape, server_window
from mmsent.harness.torchserve import TorchServe

ROOT = Path(__file__).resolve().parents[2]
METRICS_YAML = ROOT / "metrics.yaml"
HANDLER = "fusion_handler.py"


def handler_metrics() -> dict[str, tuple[str, str]]:
    """HANDLER_METRICS from handlers/fusion_handler.py (a file TorchServe loads, not a package)."""
    spec = importlib.util.spec_from_file_location("fusion_handler", ROOT / "handlers" / HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HANDLER_METRICS


def declared_model_metrics() -> dict[str, tuple[str, str]]:
    spec = yaml.safe_load(METRICS_YAML.read_text())["model_metrics"]
    return {m["name"]: (kind, m["unit"]) for kind, items in spec.items() for m in items}


def test_metrics_yaml_declares_exactly_the_handlers_metrics_with_their_types() -> None:
    declared = declared_model_metrics()
    emitted = handler_metrics()
    # PredictionTime is BaseHandler's own gauge (kept so TorchServe's default dashboards work)
    assert {k: v for k, v in declared.items() if k != "PredictionTime"} == emitted
    # the rule: batch size is a distribution, never a counter that sums batch sizes
    assert emitted["BatchSize"][0] == "histogram"
    assert emitted["RequestErrors"][0] == "counter"
    assert set(STAGES.values()) <= set(emitted)


def test_metrics_yaml_keeps_torchserves_own_request_counters() -> None:
    """Our file replaces TorchServe's default one: its frontend metrics must still be there."""
    default = yaml.safe_load(
        (Path(__import__("ts").__file__).parent / "configs" / "metrics.yaml").read_text()
    )["ts_metrics"]
    ours = yaml.safe_load(METRICS_YAML.read_text())["ts_metrics"]
    for kind, items in default.items():
        assert {m["name"] for m in items} <= {m["name"] for m in ours.get(kind, [])}, kind


@pytest.mark.parametrize("name", ["config.properties", "config.production.properties"])
def test_configs_serve_prometheus_from_metrics_yaml(name: str) -> None:
    props = read_properties((ROOT / name).read_text())
    assert props["metrics_mode"] == "prometheus"
    assert (ROOT / name).parent.joinpath(props["metrics_config"]).resolve() == METRICS_YAML


def test_server_window_reads_histograms_counters_and_errors() -> None:
    def text(batches: int, size_sum: int, errors: int, infer_s: float) -> str:
        return (
            "# TYPE BatchSize histogram\n"
            f'BatchSize_bucket{{ModelName="m",Level="Model",le="+Inf"}} {batches}\n'
            f'BatchSize_count{{ModelName="m",Level="Model"}} {batches}\n'
            f'BatchSize_sum{{ModelName="m",Level="Model"}} {size_sum}\n'
            "# TYPE HandlerInferenceSeconds histogram\n"
            f'HandlerInferenceSeconds_count{{ModelName="m"}} {batches}\n'
            f'HandlerInferenceSeconds_sum{{ModelName="m"}} {infer_s}\n'
            "# TYPE RequestErrors counter\n"
            f'RequestErrors{{ModelName="m",Status="400"}} {errors}\n'
            "# TYPE ts_inference_requests_total counter\n"
            f'ts_inference_requests_total{{model_name="m"}} {size_sum}\n'
        )

    window = server_window(parse(text(2, 5, 1, 0.1)), parse(text(6, 25, 4, 0.5)))
    assert window["batches"] == 4 and window["requests"] == 20
    assert window["batch_size_mean"] == 5.0
    assert window["handler_ms_per_batch"] == {"inference": 100.0}
    assert window["errors_by_status"] == {"400": 3.0}


@pytest.mark.server
def test_metrics_port_serves_request_counters_and_handler_metrics(server: TorchServe) -> None:
    url = f"{server.inference_url}/predictions/{MODEL_NAME}"
    before = scrape(server.metrics_url)

    def call(i: int) -> int:
        body = {"imgae": "x"} if i % 6 == 0 else {"text": f"metrics test {i}"}
        return requests.post(url, json=body, timeout=120).status_code

    with cf.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(call, range(24)))
    assert codes.count(400) == 4 and codes.count(200) == 20, codes

    deadline = time.monotonic() + 10  # the frontend updates metrics as the worker logs them
    while True:
        text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
        window = server_window(before, parse(text))
        if window["errors_by_status"].get("400") == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    for name, (kind, _unit) in handler_metrics().items():
        if name != "HandlerExplainSeconds":  # emitted only when /explanations ran
            assert types.get(name) == kind, (name, types.get(name))
    assert types.get("ts_inference_requests") == "counter"  # the parser drops "_total"

    assert window["requests"] == 24
    assert window["errors_by_status"] == {"400": 4.0}
    assert window["batches"] >= 1
    assert 1 < window["batch_size_mean"] <= 8  # concurrent requests formed real batches
    for stage in ("preprocess", "inference", "postprocess"):
        assert window["handler_ms_per_batch"][stage] > 0, stage
    assert window["inference_latency_ms_per_request"] > 0
