"""Turn one raw request (whatever the server hands over) into a validated ``Item``.

Accepted shapes, so REST JSON, REST multipart and gRPC all land in the same place:
- a JSON object ``{"text": str, "image": base64 str}`` (already parsed, or as bytes/str);
- form fields ``text`` (str/bytes) and ``image`` (raw image bytes), as multipart and gRPC send;
- a bare image file as the whole body (``curl --data-binary @photo.jpg``).
Either modality may be absent, not both.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmsent.errors import RequestError

BODY_KEYS = ("body", "data")
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")


@dataclass(frozen=True)
class Item:
    """One request: text and/or encoded image bytes (not yet decoded)."""

    text: str | None
    image: bytes | None


def parse_item(fields: Mapping[str, Any]) -> Item:
    """Validate one request's fields; raise RequestError with a message the caller can act on."""
    if not isinstance(fields, Mapping):
        raise RequestError("request must be a JSON object or form fields")
    body = next((fields[k] for k in BODY_KEYS if k in fields), None)
    if body is not None:
        if isinstance(body, bytes | bytearray) and bytes(body[:8]).startswith(_IMAGE_MAGIC):
            return _item(None, bytes(body))
        return _from_json(_as_json_object(body))
    return _from_form(fields)


def _as_json_object(body: Any) -> Mapping[str, Any]:
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError("body is neither JSON (UTF-8) nor a known image format") from exc
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as exc:
            raise RequestError(
                f"malformed JSON: {exc.msg} at line {exc.lineno} col {exc.colno}"
            ) from None
    if not isinstance(body, Mapping):
        raise RequestError(
            f'JSON body must be an object like {{"text": ..., "image": ...}}, '
            f"got {type(body).__name__}"
        )
    return body


def _from_json(obj: Mapping[str, Any]) -> Item:
    text = obj.get("text")
    if text is not None and not isinstance(text, str):
        raise RequestError(f'"text" must be a string, got {_json_type(text)}')
    image = obj.get("image")
    if image is not None and not isinstance(image, str):
        raise RequestError(f'"image" must be a base64-encoded string, got {_json_type(image)}')
    return _item(text, _b64decode(image) if image is not None else None)


def _from_form(fields: Mapping[str, Any]) -> Item:
    text = fields.get("text")
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError('"text" is not valid UTF-8') from exc
    elif text is not None and not isinstance(text, str):
        raise RequestError(f'"text" must be a string, got {_json_type(text)}')
    image = fields.get("image")
    if isinstance(image, str):  # a form field typed in as text: accept base64
        image = _b64decode(image) if image.strip() else None
    elif isinstance(image, bytearray):
        image = bytes(image)
    elif image is not None and not isinstance(image, bytes):
        raise RequestError(f'"image" must be image bytes, got {_json_type(image)}')
    # A browser form with an empty file input sends an empty "image" part: that means "no
    # image", just as blank text means "no text".
    return _item(text, image or None)


def _item(text: str | None, image: bytes | None) -> Item:
    if text is not None and not text.strip():
        text = None  # blank text carries no signal; fine when an image is there
    if text is None and image is None:
        raise RequestError('request needs non-empty "text", an "image", or both')
    return Item(text=text, image=image)


def _b64decode(value: str) -> bytes:
    if value.startswith("data:") and "," in value:  # data URI: data:image/png;base64,....
        value = value.split(",", 1)[1]
    try:
        data = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f'"image" is not valid base64 ({exc})') from exc
    if not data:
        raise RequestError('"image" is empty')
    return data


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)
