"""Log hygiene for client errors: one line each, never a traceback.

A client that sends bad requests must not fill the server's disk at its own pace. The exchange
logs each refusal as one line itself; engines may also log tracebacks of their own for a body
they could not parse before the exchange ever saw it (TorchServe's worker does, for a JSON body
that does not decode). :class:`OneLine` keeps those records but drops their traceback.
"""

from __future__ import annotations

import logging


class OneLine(logging.Filter):
    """Drop the traceback of records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(self.prefixes):
            record.exc_info, record.exc_text = None, None
        return True
