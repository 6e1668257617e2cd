"""Start and stop a real TorchServe on chosen (or free) loopback ports, fully isolated.

Used by the tests, the load tests and the benchmarks. Each instance gets its own temp dir
(TorchServe keeps its pid file in ``$TMPDIR`` and unpacks archives under ``java.io.tmpdir``), its
own logs and a config derived from the project's ``config.properties``, so several servers can
run side by side and none leaks: the whole process group is terminated on stop.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import requests

from mmsent.clients.auth import KEY_FILE, bearer
from mmsent.config import DEFAULT_PORTS, WORKER_ENV, read_properties
from mmsent.wire.workers import count_ready

ROOT = Path(__file__).resolve().parents[2]  # the repository
BASE_CONFIG = ROOT / "config.properties"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Ports:
    inference: int = DEFAULT_PORTS["inference"]
    management: int = DEFAULT_PORTS["management"]
    metrics: int = DEFAULT_PORTS["metrics"]
    grpc_inference: int = DEFAULT_PORTS["grpc_inference"]
    grpc_management: int = DEFAULT_PORTS["grpc_management"]

    @classmethod
    def free(cls) -> Ports:
        return cls(*(free_port() for _ in range(5)))

    def as_properties(self) -> dict[str, str]:
        return {
            "inference_address": f"http://127.0.0.1:{self.inference}",
            "management_address": f"http://127.0.0.1:{self.management}",
            "metrics_address": f"http://127.0.0.1:{self.metrics}",
            "grpc_inference_port": str(self.grpc_inference),
            "grpc_management_port": str(self.grpc_management),
        }


def render_config(base: Path, overrides: Mapping[str, str]) -> str:
    """``base`` with each ``key=value`` in overrides replaced (or appended)."""
    lines = base.read_text().splitlines()
    pending = dict(overrides)
    out = []
    for line in lines:
        match = re.match(r"\s*([A-Za-z_.]+)\s*=", line)
        if match and match.group(1) in pending:
            key = match.group(1)
            out.append(f"{key}={pending.pop(key)}")
        else:
            out.append(line)
    out.extend(f"{k}={v}" for k, v in pending.items())
    return "\n".join(out) + "\n"


# config keys naming a file: relative to the folder torchserve starts in, which for the
# project's configs is the folder they live in (scripts/serve.py starts it in the repository)
PATH_KEYS = ("metrics_config",)


def describe_workers(
    management_url: str, model: str, headers: Mapping[str, str] | None = None
) -> list[dict] | None:
    """The model's workers from ``GET /models/<model>``, or None when TorchServe can't say."""
    try:
        resp = requests.get(f"{management_url}/models/{model}", headers=dict(headers or {}),
                            timeout=5)  # fmt: skip
        return resp.json()[0].get("workers", []) if resp.status_code == 200 else None
    except (requests.RequestException, ValueError, IndexError):
        return None


class ServerProcess:
    """What every TorchServe this harness starts shares: a workdir with ``logs/``, one process
    group, ``stop()`` that ends the whole group, ``with``-support. Subclasses set ``process``
    in ``start()`` and name their logs in ``LOGS``."""

    LOGS: tuple[str, ...] = ("console.log", "model_log.log", "ts_log.log")
    workdir: Path
    process: subprocess.Popen[bytes] | None
    _own_workdir: bool = True

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def start(self, timeout: float = 240.0) -> ServerProcess:
        raise NotImplementedError

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_dir, self.LOGS, lines)

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate the whole process group (launcher, Java frontend, Python workers)."""
        if self.process is None:
            return
        stop_group(self.process, timeout)
        self.process.wait(timeout=5)
        self.process = None
        if self._own_workdir and os.environ.get("MMSENT_KEEP_SERVER_LOGS") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class TorchServe(ServerProcess):
    """A TorchServe process serving ``models`` ({name: mar file}) from ``model_store``."""

    def __init__(
        self,
        model_store: str | Path,
        models: Mapping[str, str],
        ports: Ports | None = None,
        base_config: str | Path = BASE_CONFIG,
        overrides: Mapping[str, str] | None = None,
        workdir: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.model_store = Path(model_store).resolve()
        self.models = dict(models)
        self.ports = ports or Ports.free()
        self.base_config = Path(base_config)
        self.overrides = dict(overrides or {})
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="torchserve-"))
        self.process: subprocess.Popen[bytes] | None = None
        # the shipped worker environment (config.WORKER_ENV), then the caller's additions
        self.env = {**WORKER_ENV, **(env or {})}

    # -- addresses ---------------------------------------------------------------------------
    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports.grpc_inference}"

    @property
    def grpc_management_target(self) -> str:
        return f"127.0.0.1:{self.ports.grpc_management}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.properties"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 240.0) -> TorchServe:
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        props = {**self.ports.as_properties(), "model_store": str(self.model_store)}
        base = read_properties(self.base_config.read_text())
        for key in PATH_KEYS:  # this server starts in its own workdir: make them absolute
            if key in base and not Path(base[key]).is_absolute():
                props[key] = str((self.base_config.parent / base[key]).resolve())
        props.update(self.overrides)
        self.config_path.write_text(render_config(self.base_config, props))
        env = dict(os.environ, TMPDIR=str(tmp), TEMP=str(tmp), LOG_LOCATION=str(self.log_dir),
                   METRICS_LOCATION=str(self.log_dir), **self.env)
        torchserve = shutil.which("torchserve", path=os.path.dirname(sys.executable)) or (
            "torchserve"
        )
        cmd = [
            torchserve, "--start", "--foreground", "--ncs",
            "--model-store", str(self.model_store),
            "--ts-config", str(self.config_path),
            "--models", *[f"{name}={mar}" for name, mar in self.models.items()],
        ]  # fmt: skip
        with open(self.log_dir / "console.log", "ab") as console:
            self.process = subprocess.Popen(
                cmd, cwd=self.workdir, env=env, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Block until every model has a READY worker (or raise with the log tail)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"TorchServe exited early:\n{self.log_tail()}")
            if all(self.ready_workers(name) > 0 for name in self.models):
                return
            time.sleep(0.5)
        raise TimeoutError(f"TorchServe not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def bearer(self, kind: str) -> dict[str, str]:
        """Auth header for ``kind`` under token authorization (TorchServe writes the keys into
        its working directory); {} when tokens are disabled."""
        return bearer(self.workdir / KEY_FILE, kind)

    def _workers(self, model: str) -> list[dict] | None:
        return describe_workers(self.management_url, model, self.bearer("management"))

    def ready_workers(self, model: str) -> int:
        return count_ready(self._workers(model))

    def worker_pids(self, model: str) -> list[int]:
        workers = self._workers(model)
        if workers is None:
            raise RuntimeError(f"could not describe model {model}")
        return [int(w["pid"]) for w in workers if w.get("pid")]


def group_alive(pgid: int) -> bool:
    """Whether any living (non-zombie) process is left in group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # zombies still count for killpg; ask ps for living members
    out = subprocess.run(["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True, text=True)
    return any(s and not s.startswith("Z") for s in out.stdout.split())


def log_tail(log_dir: Path, names: tuple[str, ...], lines: int) -> str:
    """The last ``lines`` of each named log in ``log_dir`` that exists, headed by its name."""
    chunks = []
    for name in names:
        path = log_dir / name
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {name}\n" + "\n".join(tail))
    return "\n".join(chunks)


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group ``process`` leads (TorchServe's launcher exits early, its Java
    frontend and workers stay in the group), SIGKILL what is left after ``timeout``."""
    pgid = process.pid
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and group_alive(pgid):
            time.sleep(0.2)
        if not group_alive(pgid):
            break
