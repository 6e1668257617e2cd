"""``scripts/serve_litserve.py``: serve one model archive with LitServe, the second engine.

The archive is the same ``.mar`` TorchServe serves (sha256 checked, unzipped to a temporary
folder) or an unpacked one; its ``model-config.yaml`` gives the default batching
(``batchSize``, ``maxBatchDelay``) and the request limits (``handler: limits:``), so both
engines apply the same policy. The adapter itself is ``mmsent.engines.litserve_engine``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml

from mmsent.config import DEFAULT_MODEL_NAME, WORKER_ENV
from mmsent.engines.litserve_engine import build_server
from mmsent.harness.torchserve import ROOT, ServerProcess, free_port
from mmsent.packaging.archive import verify_sha256
from mmsent.serving.limits import RequestLimits

SCRIPT = ROOT / "scripts" / "serve_litserve.py"


def archive_settings(model_dir: Path) -> dict[str, Any]:
    """The unpacked archive's model-config.yaml (TorchServe's batching and ``handler:``
    section), so LitServe batches and limits as the same archive does under TorchServe."""
    path = Path(model_dir) / "model-config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def unpack(mar: Path, into: Path) -> Path:
    """Verify ``mar``'s sha256 sidecar and unzip it (a .mar is a zip) into ``into``."""
    verify_sha256(mar)
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(into)
    return into


def main(argv: list[str] | None = None) -> None:
    """Serve one archive with LitServe until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model-dir", type=Path, help="an unpacked archive (or export folder)")
    where.add_argument("--mar", type=Path, help="a .mar file (sha256 checked, unpacked to tmp)")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch-size", type=int, default=None,
                        help="default: the archive's batchSize (model-config.yaml)")
    parser.add_argument("--batch-timeout", type=float, default=None,
                        help="seconds; default: the archive's maxBatchDelay")
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda", "gpu"])
    parser.add_argument("--devices", default="auto", help='"auto" or a count')
    parser.add_argument("--workers-per-device", type=int, default=None,
                        help="default: the archive's maxWorkers (model-config.yaml)")
    args = parser.parse_args(argv)
    model_dir = args.model_dir or unpack(args.mar, Path(tempfile.mkdtemp(prefix="mmsent-mar-")))
    settings = archive_settings(model_dir)
    handler = settings.get("handler") or {}
    max_batch = args.max_batch_size or int(settings.get("batchSize", 8))
    timeout = args.batch_timeout
    if timeout is None:
        timeout = float(settings.get("maxBatchDelay", 30)) / 1000
    devices = args.devices if args.devices == "auto" else int(args.devices)
    workers = args.workers_per_device or int(settings.get("maxWorkers", 1))
    for name, value in WORKER_ENV.items():  # inherited by the worker processes LitServe spawns
        os.environ.setdefault(name, value)
    server = build_server(model_dir, args.model_name, max_batch, timeout, args.accelerator,
                          devices, workers,
                          limits=RequestLimits.from_mapping(handler.get("limits")))  # fmt: skip
    print(f"[litserve] {args.model_name} from {model_dir}: batch <= {max_batch}, "
          f"wait <= {timeout * 1000:.0f} ms, http://{args.host}:{args.port}", flush=True)
    server.run(host=args.host, port=args.port, generate_client_file=False,
               api_server_worker_type="thread", num_api_servers=1)  # fmt: skip


class LitServeProcess(ServerProcess):
    """``scripts/serve_litserve.py`` as a managed process (tests, benchmarks): a free port,
    logs in a workdir, the whole process group stopped on exit."""

    LOGS = ("litserve.log",)

    def __init__(
        self,
        mar: str | Path,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.mar = Path(mar)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.workdir = Path(tempfile.mkdtemp(prefix="litserve-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> LitServeProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / "litserve.log").open("wb")
        cmd = [sys.executable, str(SCRIPT), "--mar", str(self.mar), "--port", str(self.port),
               *self.extra_args]  # fmt: skip
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **self.env}, cwd=self.workdir,
                                        start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"LitServe exited at start:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.inference_url}/health", timeout=2).text == "ok":
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"LitServe not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        """The inference worker processes (LitServe names them ``inference-worker``)."""
        if self.process is None:
            return []
        children = psutil.Process(self.process.pid).children(recursive=True)
        return sorted(p.pid for p in children if "multiprocessing" in " ".join(p.cmdline()))
