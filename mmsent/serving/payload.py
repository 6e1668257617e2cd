"""Turn one raw request (whatever the server hands over) into a validated ``Item``.

Accepted shapes, so REST JSON, REST multipart and gRPC all land in the same place:
- a JSON object ``{"text": str, "image": base64 str}`` (already parsed, or as bytes/str);
- form fields ``text`` (str/bytes) and ``image`` (raw image bytes), as multipart and gRPC send;
- a bare image file as the whole body (``curl -H 'Content-Type: image/png' --data-binary @x``).

The rules are the same on every route:
- either modality may be absent, not both;
- an *empty* field (blank text, a zero-byte or empty-base64 image, JSON ``null``) counts as
  absent: that is what a browser form sends for an empty text box or file input;
- an *unknown* field (``imgae``, ``caption``) is a 400 naming it: silently ignoring it would
  answer as if the caller had sent nothing there;
- a text that is not valid Unicode (a lone UTF-16 surrogate from a JSON ``"\\ud800"`` escape)
  is a 400 here, before the batched tokenizer call it would otherwise break for the whole batch.
Error messages name the problem and never echo the body.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmsent.errors import RequestError
from mmsent.wire.json_fields import json_type, loads, quote_names, reject_unknown

FIELDS = ("text", "image")
BODY_KEYS = ("body", "data")  # TorchServe: REST body -> "body"; gRPC callers send JSON as "data"
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
_ACCEPTED = 'this model accepts "text" and "image"'


@dataclass(frozen=True)
class Item:
    """One request: text and/or encoded image bytes (not yet decoded)."""

    text: str | None
    image: bytes | None


def parse_item(fields: Mapping[str, Any] | Item) -> Item:
    """Validate one request's fields; raise RequestError with a message the caller can act on.

    An :class:`Item` is returned as it is: the exchange parses once, the pipeline accepts both.
    """
    if isinstance(fields, Item):
        return fields
    if not isinstance(fields, Mapping):
        raise RequestError("request must be a JSON object or form fields")
    body_key = next((k for k in BODY_KEYS if k in fields), None)
    if body_key is None:
        reject_unknown(fields.keys(), FIELDS, "form field", _ACCEPTED)
        return _from_form(fields)
    extra = sorted(str(k) for k in fields if k != body_key)
    if extra:  # a JSON body and form fields at once: which one did the caller mean?
        raise RequestError(
            f"form field{'s' if len(extra) > 1 else ''} {quote_names(extra)} sent together with a "
            f'"{body_key}" body: send either one JSON body or form fields'
        )
    body = fields[body_key]
    if isinstance(body, bytes | bytearray) and bytes(body[:8]).startswith(_IMAGE_MAGIC):
        return _item(None, bytes(body))
    return _from_json(_as_json_object(body))


def _as_json_object(body: Any) -> Mapping[str, Any]:
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError("body is neither JSON (UTF-8) nor a known image format") from exc
    if body is None or (isinstance(body, str) and not body.strip()):
        raise RequestError("request body is empty: send JSON, form fields or an image")
    if isinstance(body, str):
        body = loads(body)
    if not isinstance(body, Mapping):
        raise RequestError(
            f'JSON body must be an object like {{"text": ..., "image": ...}}, '
            f"got {type(body).__name__}"
        )
    reject_unknown(body.keys(), FIELDS, "JSON field", _ACCEPTED)
    return body


def _from_json(obj: Mapping[str, Any]) -> Item:
    text = obj.get("text")
    if text is not None and not isinstance(text, str):
        raise RequestError(f'"text" must be a string, got {json_type(text)}')
    image = obj.get("image")
    if image is not None and not isinstance(image, str):
        raise RequestError(f'"image" must be a base64-encoded string, got {json_type(image)}')
    return _item(text, _b64decode(image) if image is not None else None)


def _from_form(fields: Mapping[str, Any]) -> Item:
    text = fields.get("text")
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError('"text" is not valid UTF-8') from exc
    elif text is not None and not isinstance(text, str):
        raise RequestError(f'"text" must be a string, got {json_type(text)}')
    image = fields.get("image")
    if isinstance(image, str):  # a form field typed in as text: accept base64
        image = _b64decode(image)
    elif isinstance(image, bytearray):
        image = bytes(image)
    elif image is not None and not isinstance(image, bytes):
        raise RequestError(f'"image" must be image bytes, got {json_type(image)}')
    return _item(text, image)


def _item(text: str | None, image: bytes | None) -> Item:
    if text is not None:
        _check_unicode(text)
        if not text.strip():
            text = None  # blank text carries no signal; fine when an image is there
    image = image or None  # an empty image part / empty base64 means "no image", as above
    if text is None and image is None:
        raise RequestError('request needs non-empty "text", an "image", or both')
    return Item(text=text, image=image)


def _check_unicode(text: str) -> None:
    """Refuse lone surrogates (``"\\ud800"`` in JSON): they are not Unicode text, and the
    tokenizer, which takes the whole batch in one call, would fail every batch mate with it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        raise RequestError(
            f'"text" is not valid Unicode: lone surrogate U+{code:04X} at character {exc.start}'
        ) from None


def _b64decode(value: str) -> bytes:
    """Base64 (or a ``data:`` URI) -> bytes; empty input decodes to b"" (= no image)."""
    if value.startswith("data:") and "," in value:  # data URI: data:image/png;base64,....
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f'"image" is not valid base64 ({exc})') from exc
