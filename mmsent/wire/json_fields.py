"""Strict JSON handling for request bodies: type names, unknown fields and parse errors.

Every route's parser (``/predictions`` bodies in :mod:`mmsent.serving.payload`, Open Inference
bodies in :mod:`mmsent.serving.open_inference`) uses these, so the same mistake reads the same
everywhere: ``null`` is "null", a list is "array", an unknown field is named (quoted, cut short,
never a body echo).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mmsent.errors import RequestError

MAX_NAMED = 3  # client-chosen names quoted in one message
MAX_NAME_CHARS = 40  # each cut to this many characters

_JSON_TYPES = {dict: "object", list: "array", bool: "boolean", int: "number", float: "number",
               str: "string", type(None): "null"}  # fmt: skip


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, as a client reading the error would call it."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def quote_names(names: Iterable[Any]) -> str:
    """A few names, JSON-quoted and shortened, ``and N more`` for the rest."""
    names = [str(n) for n in names]
    shown = [n if len(n) <= MAX_NAME_CHARS else n[: MAX_NAME_CHARS - 3] + "..." for n in names]
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return ", ".join(json.dumps(n) for n in shown[:MAX_NAMED]) + more


def reject_unknown(keys: Iterable[Any], allowed: Iterable[str], what: str, hint: str = "") -> None:
    """400 naming every key not in ``allowed``: strict, because ignoring a misspelt ``imgae``
    would answer as if no image had been sent. ``hint`` is appended after a colon."""
    allowed = set(allowed)
    unknown = sorted(str(k) for k in keys if k not in allowed)
    if not unknown:
        return
    plural = "s" if len(unknown) > 1 else ""
    raise RequestError(f"unknown {what}{plural} {quote_names(unknown)}" + (f": {hint}" if hint
                                                                             else ""))  # fmt: skip


def loads(text: str | bytes, what: str = "JSON") -> Any:
    """``json.loads`` with every way it fails on client input turned into a 400.

    Besides JSONDecodeError the parser raises UnicodeDecodeError for non-UTF-8 bytes, a plain
    ValueError for an integer literal over Python's 4300-digit limit and RecursionError for
    very deep nesting: all are the client's malformed input, not a server fault.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"malformed {what}: {exc.msg} at line {exc.lineno} col {exc.colno}"
                           ) from None  # fmt: skip
    except UnicodeDecodeError:
        raise RequestError(f"malformed {what}: not UTF-8") from None
    except RecursionError:
        raise RequestError(f"malformed {what}: nested too deeply") from None
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise RequestError(f"malformed {what}: a number is too long") from None
