"""The one error type a request can fail with; servers map ``status`` to HTTP / gRPC codes."""

from __future__ import annotations


class RequestError(ValueError):
    """A problem with one request item: reported to that caller only, never to batch mates."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def to_dict(self) -> dict[str, object]:
        return {"error": self.message, "code": self.status}
