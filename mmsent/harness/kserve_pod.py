"""A local rehearsal of the KServe pod's TorchServe: the bundle, started as KServe starts it.

KServe's TorchServe runtime runs ``torchserve --start --model-store=/mnt/models/model-store
--ts-config=/mnt/models/config/config.properties`` (no ``--foreground``, no ``--models``: the
config's ``model_snapshot`` decides what loads) with ``PROTOCOL_VERSION`` in the environment.
This starts exactly that command on a built bundle folder instead of ``/mnt/models``. The bundle's
config.properties is used UNTOUCHED: the only differences are TorchServe's own ``TS_<KEY>``
environment overrides (honoured because the bundle sets ``enable_envvars_config=true``), for
the addresses (free loopback ports, so runs can sit side by side) and for the one file path under
``/mnt/models`` that TorchServe opens itself (``metrics_config``). :func:`env_overrides` is the
whole list; tests/integration/test_kserve_pod.py pins it.

Not rehearsed: KServe's wrapper (REST 8080 / gRPC 8081 in front of TorchServe; it lives in the
kfs image only), the storage initializer, Knative. Readiness is polled the way the wrapper polls
it (``GET <management>/models/<name>?customized=false`` until a worker is READY).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import requests

from mmsent.harness.torchserve import Ports
from mmsent.packaging.kserve import (
    CONFIG_REL,
    MODEL_NAME,
    MOUNT,
    POD_ENV,
    RUNTIME_ARGS,
    TS_ADDRESSES,
    read_properties,
)

PATH_KEYS = ("metrics_config",)  # keys naming files under /mnt/models that TorchServe opens


def pod_ports() -> Ports:
    """Free loopback ports; management shares the inference port, as 8085 does in the pod."""
    free = Ports.free()
    return Ports(free.inference, free.inference, free.metrics, free.grpc_inference,
                 free.grpc_management)  # fmt: skip


def env_overrides(bundle: Path, ports: Ports) -> dict[str, str]:
    """``TS_<KEY>`` variables remapping the bundle's addresses and /mnt/models file paths."""
    props = read_properties((bundle / CONFIG_REL).read_text())
    values = {
        "inference_address": f"http://127.0.0.1:{ports.inference}",
        "management_address": f"http://127.0.0.1:{ports.management}",
        "metrics_address": f"http://127.0.0.1:{ports.metrics}",
        "grpc_inference_address": "127.0.0.1",
        "grpc_inference_port": str(ports.grpc_inference),
        "grpc_management_address": "127.0.0.1",
        "grpc_management_port": str(ports.grpc_management),
    }
    assert values.keys() == TS_ADDRESSES.keys(), "remap every address the bundle sets"
    for key in PATH_KEYS:
        values[key] = props[key].replace(str(MOUNT), str(bundle.resolve()))
    return {f"TS_{key.upper()}": value for key, value in values.items()}


def pod_command(bundle: Path) -> list[str]:
    """KServe's container args with /mnt/models replaced by ``bundle``."""
    exe = shutil.which("torchserve", path=os.path.dirname(sys.executable)) or "torchserve"
    args = [arg.replace(str(MOUNT), str(bundle.resolve())) for arg in RUNTIME_ARGS]
    return [exe, *args[1:]]


class KServePod:
    """TorchServe serving ``bundle`` as in the pod; stop() ends its whole process group."""

    def __init__(self, bundle: str | Path, ports: Ports | None = None) -> None:
        self.bundle = Path(bundle)
        self.ports = ports or pod_ports()
        self.workdir = Path(tempfile.mkdtemp(prefix="kserve-pod-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.environment: dict[str, str] = {**POD_ENV, **env_overrides(self.bundle, self.ports)}

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.inference}"

    management_url = inference_url  # one port in the pod (8085)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def start(self, timeout: float = 240.0) -> KServePod:
        tmp = self.workdir / "tmp"  # TorchServe's pid file lives in $TMPDIR: one per pod
        tmp.mkdir(parents=True)
        self.log_dir.mkdir()
        env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp),
               "LOG_LOCATION": str(self.log_dir), "METRICS_LOCATION": str(self.log_dir),
               **self.environment}  # fmt: skip
        for key in [k for k in env if k.startswith("TS_") and k not in self.environment]:
            env.pop(key)  # a stray TS_* in the caller's shell would change the rehearsal
        with open(self.log_dir / "console.log", "ab") as console:
            # new session: the launcher exits after spawning java, whose process group stays
            self.process = subprocess.Popen(pod_command(self.bundle), cwd=self.workdir, env=env,
                                            stdout=console, stderr=subprocess.STDOUT,
                                            start_new_session=True)  # fmt: skip
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def describe(self) -> dict | None:
        """``GET /models/<name>?customized=false``: what KServe's wrapper polls for readiness."""
        try:
            resp = requests.get(f"{self.management_url}/models/{MODEL_NAME}",
                                params={"customized": "false"}, timeout=5)  # fmt: skip
            return resp.json()[0] if resp.status_code == 200 else None
        except (requests.RequestException, ValueError, IndexError):
            return None

    def ready(self) -> bool:
        described = self.describe() or {}
        return any(w.get("status") == "READY" for w in described.get("workers", []))

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and not _group_alive(self.process.pid):
                raise RuntimeError(f"TorchServe exited:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"pod not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        chunks = []
        for name in ("console.log", "ts_log.log", "model_log.log"):
            path = self.log_dir / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {name}\n" + "\n".join(tail))
        return "\n".join(chunks)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None:
            return
        pgid = self.process.pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.2)
            if not _group_alive(pgid):
                break
        self.process.wait(timeout=5)
        self.process = None
        if os.environ.get("MMSENT_KEEP_SERVER_LOGS") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KServePod:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    """Any non-zombie process left in the group (the launcher itself exits early)."""
    out = subprocess.run(["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True, text=True)
    return any(s and not s.startswith("Z") for s in out.stdout.split())


def overridden_keys(environment: Mapping[str, str]) -> set[str]:
    """The config keys a pod environment overrides (``TS_FOO_BAR`` -> ``foo_bar``)."""
    return {name[3:].lower() for name in environment if name.startswith("TS_")}
