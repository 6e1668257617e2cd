"""A real, short headless Locust run (REST + gRPC users) against the test server."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import MODEL_NAME
from mmsent.harness.loadtest import main as run_loadtest

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]


def test_short_locust_run_rest_and_grpc(server, tmp_path: Path) -> None:
    out = tmp_path / "loadtest"
    summary = run_loadtest([
        "--host", server.inference_url, "--grpc-target", server.grpc_target,
        "--metrics-url", server.metrics_url,
        "--model-name", MODEL_NAME, "--users", "4", "--spawn-rate", "4", "--run-time", "12s",
        "--payload-mix", "text=1,both-small=1", "--results", str(out),
    ])  # fmt: skip
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv",
                 "report.html", "loadtest.png", "responses.csv", "summary.json"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    with open(out / "locust_stats.csv", newline="") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    assert set(rows) == {"REST text", "REST both-small", "gRPC text", "gRPC both-small",
                         "Aggregated"}  # fmt: skip
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0, (out / "locust_failures.csv").read_text()
    assert summary["locust_exit_code"] == 0
    assert summary["batch_size_max"] >= 1
    # the server's side of the same run, scraped from its Prometheus port before and after
    server_side = summary["server_metrics"]
    assert server_side["requests"] >= int(total["Request Count"]) > 0
    assert server_side["batches"] >= 1 and server_side["batch_size_mean"] >= 1
    assert server_side["handler_ms_per_batch"]["inference"] > 0
    assert json.loads((out / "summary.json").read_text())["by_name"]
    assert (out / "report.html").read_text(errors="replace").lstrip().lower().startswith(
        "<!doctype html"
    )
