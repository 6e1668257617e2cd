"""Client deadlines: a request whose caller has given up is answered without running it.

TorchServe 0.12 offers no per-request deadline (its per-model ``clientTimeoutInMills`` drops
queued requests without ever answering them), so clients say when they stop waiting:
``X-Request-Deadline: <epoch ms>`` over REST, an ``x-request-deadline`` input field over gRPC
(TorchServe does not forward gRPC metadata to the worker). An item past its deadline is
refused with 408 before any decoding, so abandoned requests cost the live ones nothing
(measured in docs/reliability.md "Deadlines").
"""

from __future__ import annotations

from typing import Any

from mmsent.config import DEADLINE_HEADER as DEADLINE_KEY
from mmsent.errors import RequestError

DEADLINE_STATUS = 408


def admit(
    raw: dict[str, Any], headers: dict[str, str], now_ms: float
) -> tuple[dict[str, Any], RequestError | None]:
    """``raw`` without the deadline field, and the error to answer instead of running it.

    The deadline travels as a header (REST) or as an input field (gRPC); the field is removed
    so the payload parser never sees a transport detail as request data.
    """
    if not isinstance(raw, dict) or DEADLINE_KEY not in raw and DEADLINE_KEY not in headers:
        return raw, None
    item = {k: v for k, v in raw.items() if k != DEADLINE_KEY}
    value = raw.get(DEADLINE_KEY, headers.get(DEADLINE_KEY))
    try:
        deadline_ms = parse_deadline(value)
    except RequestError as err:
        return item, err
    late_ms = now_ms - deadline_ms
    if late_ms > 0:
        return item, RequestError(
            f"deadline passed {late_ms:.0f} ms before the request reached the model; not run",
            DEADLINE_STATUS,
        )
    return item, None


def parse_deadline(value: Any) -> float:
    """Epoch milliseconds from a header/field value, or a 400 naming the expected form."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii", errors="replace")
    try:
        deadline = float(str(value).strip())
    except ValueError:
        deadline = float("nan")
    if not deadline > 0 or deadline == float("inf"):
        raise RequestError(f'"{DEADLINE_KEY}" must be epoch milliseconds, got {str(value)[:40]!r}')
    return deadline
