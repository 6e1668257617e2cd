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

:class:`KServeGatewayPod` adds what the pod runs next: our gateway (``python -m mmsent.gateway``,
the command line of mmsent.packaging.kserve.gateway_args) as a subprocess in front of that
TorchServe, on free loopback ports instead of 8080/8081 (:func:`gateway_command`; only its four
address options differ from the pod's). Not rehearsed: the image, the storage initializer,
Knative. Readiness is polled the way the gateway polls it
(``GET <management>/models/<name>?customized=false`` until a worker is READY).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from mmsent.config import read_properties
from mmsent.harness.torchserve import Ports, ServerProcess, free_port, group_alive
from mmsent.packaging.kserve import (
    CONFIG_REL,
    MODEL_NAME,
    MOUNT,
    POD_ENV,
    RUNTIME_ARGS,
    TS_ADDRESSES,
    gateway_args,
)
from mmsent.wire.workers import ready_workers

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


class KServePod(ServerProcess):
    """TorchServe serving ``bundle`` as in the pod; stop() ends its whole process group."""

    LOGS = ("console.log", "ts_log.log", "model_log.log")

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
        """``GET /models/<name>?customized=false``: what the gateway (as KServe's wrapper did)
        polls for readiness."""
        try:
            resp = requests.get(f"{self.management_url}/models/{MODEL_NAME}",
                                params={"customized": "false"}, timeout=5)  # fmt: skip
            return resp.json()[0] if resp.status_code == 200 else None
        except (requests.RequestException, ValueError, IndexError):
            return None

    def ready(self) -> bool:
        return ready_workers(self.describe()) > 0

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and not group_alive(self.process.pid):
                raise RuntimeError(f"TorchServe exited:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"pod not ready after {timeout:.0f}s:\n{self.log_tail()}")


def overridden_keys(environment: Mapping[str, str]) -> set[str]:
    """The config keys a pod environment overrides (``TS_FOO_BAR`` -> ``foo_bar``)."""
    return {name[3:].lower() for name in environment if name.startswith("TS_")}


# The gateway options the rehearsal remaps (addresses); every other option is the pod's.
GATEWAY_ADDRESS_OPTIONS = ("--torchserve", "--management", "--http-port", "--grpc-port")


def gateway_command(pod: KServePod, http_port: int, grpc_port: int,
                    response_timeout: int) -> list[str]:  # fmt: skip
    """The pod's gateway command line with its addresses moved to ``pod`` and free ports."""
    values = {"--torchserve": pod.inference_url, "--management": pod.management_url,
              "--http-port": str(http_port), "--grpc-port": str(grpc_port)}  # fmt: skip
    args = gateway_args(response_timeout)
    assert args[0] == "python", args
    out = [sys.executable, *args[1:]]
    for i, arg in enumerate(out[:-1]):
        if arg in values:
            out[i + 1] = values[arg]
    return out


class KServeGatewayPod(KServePod):
    """The pod as it now runs: TorchServe from the bundle (as :class:`KServePod`), then our
    gateway in front of it. ``http_url`` / ``grpc_target`` are where KServe would route."""

    LOGS = (*KServePod.LOGS, "gateway.log")

    def __init__(self, bundle: str | Path, ports: Ports | None = None,
                 response_timeout: int = 120) -> None:  # fmt: skip
        super().__init__(bundle, ports)
        self.http_port, self.grpc_port = free_port(), free_port()
        self.response_timeout = response_timeout
        self.gateway: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def gateway_command(self) -> list[str]:
        return gateway_command(self, self.http_port, self.grpc_port, self.response_timeout)

    def start(self, timeout: float = 240.0) -> KServeGatewayPod:
        super().start(timeout)
        try:
            self.start_gateway(timeout=120.0)
        except BaseException:
            self.stop()
            raise
        return self

    def start_gateway(self, timeout: float = 120.0) -> None:
        """Start the gateway; returns once its ``/v2/health/ready`` answers 200."""
        with open(self.log_dir / "gateway.log", "ab") as log:
            self.gateway = subprocess.Popen(self.gateway_command(), cwd=self.workdir,
                                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gateway.poll() is not None:
                raise RuntimeError(f"gateway exited {self.gateway.returncode}:\n"
                                   f"{self.log_tail()}")  # fmt: skip
            try:
                if requests.get(f"{self.http_url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"gateway not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop_gateway(self) -> None:
        if self.gateway is None:
            return
        if self.gateway.poll() is None:
            self.gateway.terminate()
            try:
                self.gateway.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
                self.gateway.wait(timeout=10)
        self.gateway = None

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_gateway()
        super().stop(timeout)
