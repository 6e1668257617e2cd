"""What an engine hands the exchange and gets back: requests that own their rows and replies.

An engine (TorchServe's handler, the LitServe adapter, an in-process caller) wraps each request
it batched in a :class:`Request`; :class:`mmsent.serving.exchange.Exchange` fills in the
request's :class:`Row` s (the model inputs its protocol decoded) and finally its :class:`Reply`.
Every result travels inside the object it belongs to, as in text-embeddings-inference's queue
entries, so no index map between "server slot", "pipeline input" and "tensor row" ever leaves
the function that built it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from typing import Protocol as Interface

from mmsent.errors import RequestError
from mmsent.serving.limits import RequestLimits

if TYPE_CHECKING:  # an annotation only: explain's options travel in rows
    from mmsent.serving.explain import ExplainOptions

JSON = "application/json"


@dataclass(eq=False)
class Row:
    """One model input: the fields ``payload.parse_item`` validates, and its outcome."""

    fields: Any
    explain: ExplainOptions | None = None  # set for /explanations rows
    answer: dict[str, Any] | None = None  # the prediction, once the model ran
    explanation: dict[str, Any] | None = None
    error: RequestError | None = None  # why this row got no answer


@dataclass(eq=False)
class Reply:
    """One request's answer: HTTP status, extra headers and a JSON body.

    ``error`` is set on every refusal (4xx/5xx), so engines can log it and count it by status
    without parsing the body.
    """

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON
    error: RequestError | None = None

    def text(self) -> str:
        return json.dumps(self.body)


@dataclass(eq=False)
class Request:
    """One request an engine batched, and everything the exchange learns about it.

    ``data`` is the engine's payload in the shape TorchServe hands a handler: ``{"body": bytes
    or parsed JSON}`` or form fields (multipart, gRPC ``input`` map). ``headers`` are the HTTP
    headers with lower-case names (none over gRPC). ``explain``: the engine routed it to
    ``/explanations``. ``grpc``: it arrived over gRPC (answers differ in small ways there).
    """

    data: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    explain: bool = False
    grpc: bool = False
    # -- filled in by the exchange ------------------------------------------------------------
    protocol: Protocol | None = None
    decoded: Any = None  # what the protocol parsed (e.g. the Open Inference request)
    rows: list[Row] = field(default_factory=list)
    error: RequestError | None = None  # refused as a whole (deadline, malformed envelope)
    reply: Reply | None = None


@dataclass(frozen=True)
class BatchInfo:
    """What every answer of one engine batch shares.

    ``batch_size`` counts the requests the engine batched (refused ones included): it is the
    number the batching settings control. ``batch_rows`` counts the model rows they became (an
    Open Inference request of N items is N rows; refused requests are none).
    """

    model_name: str
    model_version: str | None
    labels: tuple[str, ...]
    batch_size: int
    batch_rows: int
    timings_ms: Mapping[str, float] = field(default_factory=dict)


class Protocol(Interface):
    """What the exchange needs of a wire protocol (implementations: ``serving/protocols.py``).

    The exchange asks each protocol in turn whether it :meth:`claims` a request, lets the first
    that does :meth:`decode` it into rows and, once the rows have outcomes, :meth:`encode` them
    into the request's one reply, or :meth:`refuse` the whole request.
    """

    name: str

    def claims(self, request: Request) -> bool:
        """Whether this protocol reads ``request`` (may normalise ``request.data`` in place)."""
        ...

    def decode(self, request: Request, limits: RequestLimits) -> list[Row]:
        """The request's model rows; a RequestError refuses the request as a whole."""
        ...

    def encode(self, request: Request, info: BatchInfo) -> Reply:
        """The reply once every row has an answer or an error."""
        ...

    def refuse(self, request: Request, error: RequestError, info: BatchInfo) -> Reply:
        """The reply that refuses the whole request with ``error``."""
        ...
