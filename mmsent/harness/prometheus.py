"""Read TorchServe's Prometheus metrics port (``metrics_mode=prometheus``, ``GET /metrics``).

The benchmark and the load test scrape the port before and after a run and report the
difference, so the numbers cover exactly that run and come from the same place a cluster's
Prometheus reads (no regex over log files)::

    before = scrape(server.metrics_url)
    ...drive traffic...
    window = server_window(before, scrape(server.metrics_url))
    window["batch_size_mean"], window["handler_s_per_batch"]["inference"]

Names are the ones declared in metrics.yaml (the handler's histograms and error counter,
TorchServe's request counters). Every value is summed over label sets (workers, hosts), which is
what a per-run mean needs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import requests
from prometheus_client.parser import text_string_to_metric_families

# handler stage histograms (seconds per batch) by the name used in reports
STAGES = {
    "preprocess": "HandlerPreprocessSeconds",
    "inference": "HandlerInferenceSeconds",
    "postprocess": "HandlerPostprocessSeconds",
    "explain": "HandlerExplainSeconds",
}


@dataclass
class Scrape:
    """Sample values from one scrape: ``values[sample name]`` summed over label sets, and the
    error counter split by its ``Status`` label."""

    values: dict[str, float] = field(default_factory=dict)
    errors_by_status: dict[str, float] = field(default_factory=dict)

    def get(self, name: str) -> float:
        return self.values.get(name, 0.0)


def parse(text: str) -> Scrape:
    """A Prometheus text exposition as a :class:`Scrape`."""
    values: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] += sample.value
            if family.type == "counter" and sample.name != family.name:
                # the parser names counter samples "<family>_total"; TorchServe's wire names
                # are either ("ts_inference_requests_total", "RequestErrors"): keep both keys
                values[family.name] += sample.value
            if family.name == "RequestErrors":
                errors[sample.labels.get("Status", "?")] += sample.value
    return Scrape(dict(values), dict(errors))


def scrape(metrics_url: str, timeout: float = 10.0) -> Scrape:
    """``GET <metrics_url>/metrics``; raises for anything but 200."""
    resp = requests.get(f"{metrics_url.rstrip('/')}/metrics", timeout=timeout)
    resp.raise_for_status()
    return parse(resp.text)


def _mean(total: float, count: float, scale: float = 1.0) -> float | None:
    return round(total / count * scale, 4) if count > 0 else None


def server_window(before: Scrape, after: Scrape) -> dict[str, object]:
    """What the server did between two scrapes: requests, batches, mean batch size, mean
    per-batch handler stage times (ms), mean per-request frontend latency and queue time (ms),
    and refused items by HTTP status."""

    def delta(name: str) -> float:
        return after.get(name) - before.get(name)

    requests_total = delta("ts_inference_requests_total")
    batches = delta("BatchSize_count")
    stages = {
        stage: _mean(delta(f"{metric}_sum"), delta(f"{metric}_count"), 1000.0)
        for stage, metric in STAGES.items()
    }
    errors = {
        status: after.errors_by_status.get(status, 0.0) - before.errors_by_status.get(status, 0.0)
        for status in sorted(after.errors_by_status)
    }
    return {
        "requests": requests_total,
        "batches": batches,
        "batch_size_mean": _mean(delta("BatchSize_sum"), batches),
        "handler_ms_per_batch": {k: v for k, v in stages.items() if v is not None},
        "inference_latency_ms_per_request": _mean(
            delta("ts_inference_latency_microseconds"), requests_total, 1e-3
        ),
        "queue_latency_ms_per_request": _mean(
            delta("ts_queue_latency_microseconds"), requests_total, 1e-3
        ),
        "errors_by_status": {k: v for k, v in errors.items() if v},
    }
