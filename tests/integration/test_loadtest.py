"""A real, short headless Locust run (REST + gRPC users) against the test server, and the
runner's exit status: 0 on a clean run, non-zero when requests fail (the documented commands
themselves run in test_readme_examples.py)."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import MODEL_NAME
from mmsent.harness.loadtest import run as run_loadtest
from mmsent.harness.loadtest import verdict
from mmsent.harness.torchserve import TorchServe

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
    assert summary["verdict"]["exit_code"] == 0, summary["verdict"]
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


def _runner(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    """``python loadtest/run_loadtest.py ARGS`` as a user runs it, into ``out``."""
    return subprocess.run(
        [sys.executable, "loadtest/run_loadtest.py", *args, "--spawn-rate", "4",
         "--run-time", "3s", "--results", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _failed(done: subprocess.CompletedProcess[str], out: Path) -> dict[str, Any]:
    """Checks shared by the failing runs; returns the written summary."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "{'" not in done.stdout  # a table, never the summary dict
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"]["exit_code"] == 1
    assert "FAILED: " + summary["verdict"]["reason"] in done.stdout
    return summary


def test_requests_refused_by_the_server_exit_1(server: TorchServe, tmp_path: Path) -> None:
    """A model name the server does not have: every REST call gets a 404, every gRPC call an
    error status; the run itself goes fine, the exit status says the requests failed."""
    out = tmp_path / "refused"
    done = _runner("--host", server.inference_url, "--grpc-target", server.grpc_target,
                   "--metrics-url", server.metrics_url, "--model-name", "no_such_model",
                   "--users", "2", out=out)  # fmt: skip
    summary = _failed(done, out)
    total = summary["by_name"]["Aggregated"]
    assert total["requests"] == total["failures"] > 0
    assert "404" in (out / "locust_failures.csv").read_text()


def test_a_dead_port_exits_1(tmp_path: Path) -> None:
    """Nothing listens: connections are refused, no request is answered, status 1."""
    out = tmp_path / "dead"
    port = _free_port()
    done = _runner("--host", f"http://127.0.0.1:{port}", "--metrics-url",
                   f"http://127.0.0.1:{port}", "--user-classes", "RestUser", "--users", "1",
                   out=out)  # fmt: skip
    summary = _failed(done, out)
    assert "failed" in summary["verdict"]["reason"]


@pytest.mark.parametrize(
    ("requests", "failures", "locust_rc", "code", "reason"),
    [
        (120, 0, 0, 0, "120 requests, none failed"),
        (120, 3, 1, 1, "3 of 120 requests failed"),
        (0, 0, 0, 1, "no request was answered"),
        (120, 0, 124, 124, "locust exited 124"),  # overran its run time and was killed
        (120, 0, 2, 2, "locust exited 2"),
    ],
)
def test_exit_status_rules(requests: int, failures: int, locust_rc: int, code: int,
                           reason: str) -> None:  # fmt: skip
    summary = {"by_name": {"Aggregated": {"requests": requests, "failures": failures}}}
    got_code, got_reason = verdict(summary, locust_rc)
    assert got_code == code and got_reason.startswith(reason), (got_code, got_reason)


def test_the_users_log_counts_when_locusts_csv_lags() -> None:
    """Locust writes _stats.csv once a second and not at exit: users failing in a tight loop
    (connection refused) can leave it at 0 requests; the users' own log still has them."""
    summary = {"by_name": {"Aggregated": {"requests": 0, "failures": 0}},
               "responses_logged": 629, "responses_failed": 629}  # fmt: skip
    assert verdict(summary, 1) == (1, "629 of 629 requests failed (reasons: locust.log)")


def test_no_stats_at_all_is_a_failure() -> None:
    """Locust died before writing its CSVs: no Aggregated row, still not a clean run."""
    assert verdict({"by_name": {}}, 0)[0] == 1
