"""The worker serves with the archive's OWN copy of the serving code, as on a stock TorchServe
image where the mmsent package is not installed.

The test venv has mmsent installed (editable), so the server runs with a ``sitecustomize`` on
PYTHONPATH that removes that install from every worker before anything is imported: mmsent is
then importable only from the unpacked archive. A module missing from the archive would fail
the model load. (A PYTHONPATH entry would also win over the archive: TorchServe 0.12 puts the
environment's PYTHONPATH before the model directory, so never ship an mmsent on it.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from conftest import MODEL_NAME, b64, jpeg_bytes
from mmsent.harness.torchserve import TorchServe
from mmsent.serving.exchange import Exchange
from mmsent.serving.pipeline import SentimentPipeline

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[2]

HIDE_INSTALLED_MMSENT = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in type(f).__module__]
"""


def test_worker_runs_the_archives_own_serving_code(
    tiny_build: tuple[Path, Path], tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDE_INSTALLED_MMSENT)
    store, export_dir = tiny_build
    body = {"text": "the archive is self-contained", "image": b64(jpeg_bytes())}
    expected = Exchange(SentimentPipeline.from_dir(export_dir)).predict([{"body": body}])[0]
    env = {"PYTHONPATH": str(site)}
    with TorchServe(store, {MODEL_NAME: f"{MODEL_NAME}.mar"}, env=env) as ts:
        resp = requests.post(f"{ts.inference_url}/predictions/{MODEL_NAME}", json=body,
                             timeout=60)  # fmt: skip
        log = (ts.log_dir / "model_log.log").read_text(errors="replace")
    assert resp.status_code == 200, resp.text
    got = resp.json()["probabilities"]
    assert all(abs(got[k] - v) < 1e-5 for k, v in expected["probabilities"].items())
    served_from = re.search(r"serving code from (\S+)", log)
    assert served_from, "the handler logs where its serving code came from"
    assert not Path(served_from.group(1)).is_relative_to(ROOT), served_from.group(1)
