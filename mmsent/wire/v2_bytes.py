"""The Open Inference Protocol's binary form of a BYTES tensor.

Each element is a 4-byte little-endian length followed by its bytes. gRPC
``raw_input_contents`` / ``raw_output_contents`` and the REST binary tensor extension carry the
same layout, so the handler's parser, the gateway and the gRPC proxy all use these two
functions.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

_LENGTH = struct.Struct("<I")


class BytesTensorError(ValueError):
    """The blob is not a sequence of length-prefixed elements (``reason`` says where)."""


def pack_bytes(elements: Iterable[bytes | str]) -> bytes:
    """Elements (str is UTF-8 encoded) -> one length-prefixed blob."""
    parts: list[bytes] = []
    for element in elements:
        data = element if isinstance(element, bytes) else str(element).encode("utf-8")
        parts += [_LENGTH.pack(len(data)), data]
    return b"".join(parts)


def unpack_bytes(blob: bytes | bytearray | memoryview) -> list[bytes]:
    """One length-prefixed blob -> its elements; :class:`BytesTensorError` if it is cut short.

    Strict on purpose: a truncated tensor silently read as fewer elements would answer a
    different request than the one the client sent.
    """
    view = memoryview(blob)
    values: list[bytes] = []
    pos = 0
    while pos < len(view):
        if pos + 4 > len(view):
            raise BytesTensorError("binary BYTES element header is cut short")
        (length,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if pos + length > len(view):
            raise BytesTensorError("binary BYTES element is cut short")
        values.append(bytes(view[pos : pos + length]))
        pos += length
    return values
