"""The engine comparison and the batching recommendation, run as users run them, in smoke mode.

They measure speed, which tests must not assert; these check that each command exits 0 and
writes its JSON (and plot) with the documented shape, on the tiny archive.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODEL_NAME

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, f"scripts/{script}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_compare_engines_smoke(tiny_build: tuple[Path, Path], tmp_path: Path) -> None:
    mar = tiny_build[0] / f"{MODEL_NAME}.mar"
    done = _run("compare_engines.py", "--smoke", "--mar", str(mar), "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "engines.json").read_text())
    assert set(result["points"]) == {"torchserve@4", "litserve@4"}
    for point in result["points"].values():
        assert point["req_s"] > 0 and point["latency_ms"]["p99"] >= point["latency_ms"]["p50"]
        assert point["server_cpu_ms_per_request"]["worker"] > 0
    assert result["points"]["torchserve@4"]["server_cpu_ms_per_request"]["frontend"] > 0
    assert result["in_process_req_s"] > 0 and result["machine"]["cpu_model"]
    assert "torchserve p99 / litserve p99" in (tmp_path / "engines.md").read_text()


def test_recommend_batching_smoke(tiny_build: tuple[Path, Path], tmp_path: Path) -> None:
    mar = tiny_build[0] / f"{MODEL_NAME}.mar"
    done = _run("recommend_batching.py", "--smoke", "--target-p95-ms", "60000", "--mar", str(mar),
                "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "recommend.json").read_text())
    assert [(p["batch"], p["delay_ms"]) for p in result["points"]] == [(1, 5), (4, 5)]
    assert result["recommended"] in result["points"]
    snippet = (tmp_path / "model-config.snippet.yaml").read_text()
    assert f"batchSize: {result['recommended']['batch']}" in snippet
    assert (tmp_path / "frontier.png").stat().st_size > 1000
