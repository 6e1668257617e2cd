"""``TorchServeForwarder``: the kserve ``Model`` for ``fusion_sentiment`` that forwards every v2
request to TorchServe in the same pod, and says "ready" only while a TorchServe worker can answer.

Readiness, and why ``healthy()`` is overridden: kserve 0.21 asks ``Model.healthy()`` for
``/v2/models/<name>/ready``, gRPC ``ModelReady`` and before every infer (its default returns the
``ready`` flag set once by ``load()``). A TorchServe worker can die after startup (TorchServe then
restarts it), so ``healthy()`` asks TorchServe's management API (``GET /models/<name>``, the
kfs wrapper's readiness poll) whether a worker is READY, reusing one answer for
``HEALTH_TTL_S``. While no worker is READY, REST infers get 503 and the ready routes say not
ready; the server-wide routes follow through :class:`GatewayDataPlane` (mmsent.gateway.server).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from kserve import Model
from kserve.protocol.infer_type import InferRequest, InferResponse

from mmsent.config import LABELS, MODALITIES
from mmsent.gateway.defaults import HEALTH_TTL_S, REQUEST_TIMEOUT_S, STARTUP_TIMEOUT_S
from mmsent.gateway.forward import UpstreamError, decode_answer, encode_request, error_from
from mmsent.wire.workers import ready_workers

INPUTS: list[dict[str, Any]] = [
    {"name": "text", "datatype": "BYTES", "shape": [-1]},
    {"name": "image", "datatype": "BYTES", "shape": [-1]},
]
OUTPUTS: list[dict[str, Any]] = [
    {"name": "label", "datatype": "BYTES", "shape": [-1]},
    {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(LABELS)]},
    {"name": "contributions", "datatype": "FP32", "shape": [-1, len(MODALITIES)]},
]
MAX_CONNECTIONS = 64  # = job_queue_size of the bundle: more in flight would queue in TorchServe


def worker_ready(described: Any) -> bool:
    """Whether a ``GET /models/<name>`` answer lists a READY worker."""
    return ready_workers(described) > 0


class TorchServeForwarder(Model):
    """Forwards v2 inference for ``name`` to TorchServe's REST API at ``inference_url``."""

    def __init__(
        self,
        name: str,
        inference_url: str,
        management_url: str,
        request_timeout: float = REQUEST_TIMEOUT_S,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        health_ttl: float = HEALTH_TTL_S,
    ) -> None:
        super().__init__(name)
        self.inference_url = inference_url.rstrip("/")
        self.management_url = management_url.rstrip("/")
        self.request_timeout = request_timeout
        self.startup_timeout = startup_timeout
        self.health_ttl = health_ttl
        self._client: httpx.AsyncClient | None = None
        self._checked_at = float("-inf")
        self._healthy = False
        self._started = False

    # -- readiness ------------------------------------------------------------------------------
    def load(self) -> bool:
        """Block until TorchServe has a READY worker for the model (or ``startup_timeout``).

        Only the first call waits: kserve's DataPlane calls ``load()`` again, from inside its
        event loop, whenever ``healthy()`` says no, and a blocking poll there would stall every
        other request. Later calls just report ``ready``.
        """
        if self._started:
            return self.ready
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=5.0) as client:
            while not self._poll(client):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"TorchServe at {self.management_url} has no READY worker "
                                       f"for {self.name} after {self.startup_timeout:.0f}s")
                time.sleep(0.5)
        self._started = self.ready = self._healthy = True
        self._checked_at = time.monotonic()
        return True

    def _poll(self, client: httpx.Client) -> bool:
        try:
            resp = client.get(f"{self.management_url}/models/{self.name}",
                              params={"customized": "false"})  # fmt: skip
            return resp.status_code == 200 and worker_ready(resp.json())
        except (httpx.HTTPError, ValueError):
            return False

    async def healthy(self) -> bool:
        """A worker is READY now (TorchServe asked at most every ``health_ttl`` seconds)."""
        if not self.ready:
            return False
        if time.monotonic() - self._checked_at < self.health_ttl:
            return self._healthy
        try:
            resp = await self.client.get(f"{self.management_url}/models/{self.name}",
                                         params={"customized": "false"}, timeout=5.0)  # fmt: skip
            self._healthy = resp.status_code == 200 and worker_ready(resp.json())
        except (httpx.HTTPError, ValueError):
            self._healthy = False
        self._checked_at = time.monotonic()
        return self._healthy

    # -- metadata -------------------------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        """What ``GET /v2/models/<name>`` and gRPC ``ModelMetadata`` list as inputs."""
        return [dict(i, shape=list(i["shape"])) for i in INPUTS]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [dict(o, shape=list(o["shape"])) for o in OUTPUTS]

    # -- inference ------------------------------------------------------------------------------
    @property
    def client(self) -> httpx.AsyncClient:
        """One pooled client (keep-alive connections), created inside kserve's event loop."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.request_timeout, connect=5.0),
                limits=httpx.Limits(max_connections=MAX_CONNECTIONS,
                                    max_keepalive_connections=MAX_CONNECTIONS),
            )  # fmt: skip
        return self._client

    async def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        """Forward the whole v2 request; TorchServe's handler does the protocol's checks."""
        if not isinstance(payload, InferRequest):
            raise UpstreamError(400, "this server speaks the Open Inference Protocol (v2) only: "
                                     f"POST /v2/models/{self.name}/infer")  # fmt: skip
        body, forward_headers = encode_request(payload)
        request_id = (headers or {}).get("x-request-id")
        if request_id:
            forward_headers["x-request-id"] = request_id
        url = f"{self.inference_url}/v2/models/{self.name}/infer"
        try:
            resp = await self.client.post(url, content=body, headers=forward_headers)
        except httpx.TimeoutException as exc:
            raise UpstreamError(504, f"TorchServe did not answer within "
                                     f"{self.request_timeout:.0f}s") from exc  # fmt: skip
        except httpx.HTTPError as exc:
            raise UpstreamError(503, f"TorchServe unreachable: {exc!r}") from exc
        if resp.status_code != 200:
            raise error_from(resp.status_code, resp.content)
        try:
            answer = resp.json()
            return decode_answer(answer, payload)
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(502, f"TorchServe answered an unreadable v2 body: {exc!r}") from exc

    def stop(self) -> None:
        """kserve calls this on shutdown; the pooled client dies with the process."""
        self.ready = False
