"""The request, in each wire form a client sends it: one place, so REST, gRPC and the load
generators can never disagree on field names or encodings.

    json_body("great day", png)   -> {"text": "great day", "image": "<base64>"}   (REST JSON)
    form_fields("great day", png) -> {"text": b"great day", "image": <raw bytes>} (gRPC input map,
                                      and the parts of a REST multipart form)
"""

from __future__ import annotations

import base64
import time

from mmsent.config import DEADLINE_HEADER


def json_body(text: str | None = None, image: bytes | None = None) -> dict[str, str]:
    """REST JSON body: ``text`` as is, ``image`` base64-encoded; absent fields are left out."""
    body: dict[str, str] = {}
    if text is not None:
        body["text"] = text
    if image is not None:
        body["image"] = base64.b64encode(image).decode()
    return body


def form_fields(text: str | None = None, image: bytes | None = None) -> dict[str, bytes]:
    """Form fields as bytes: the gRPC ``input`` map and the REST multipart parts."""
    fields: dict[str, bytes] = {}
    if text is not None:
        fields["text"] = text.encode("utf-8")
    if image is not None:
        fields["image"] = bytes(image)
    return fields


def deadline_after(timeout: float) -> str:
    """The ``X-Request-Deadline`` value (epoch ms) for a client that waits ``timeout`` seconds.

    TorchServe 0.12 cannot see a REST client leave (its batch aggregator never checks the
    channel), so a client that gives up must say when: the worker then answers 408 without
    decoding or running the request. Our clients send it by default.
    """
    return str(int((time.time() + timeout) * 1000))


def deadline_header(timeout: float) -> dict[str, str]:
    """``{X-Request-Deadline: ...}`` for a REST request with ``timeout`` (gRPC: an input field)."""
    return {DEADLINE_HEADER: deadline_after(timeout)}
