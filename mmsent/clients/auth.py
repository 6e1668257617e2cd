"""TorchServe token authorization from the client's side: read the key, build the header.

With ``disable_token_authorization=false`` (config.production.properties) TorchServe writes
``key_file.json`` into its working directory; inference and management calls then need
``Authorization: Bearer <key>`` (REST) or the same metadata (gRPC).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

KEY_FILE = "key_file.json"


def api_key(key_file: str | Path, kind: str) -> str | None:
    """The ``kind`` ("inference" / "management") key from TorchServe's ``key_file.json``, or
    None when there is no such file (token authorization disabled)."""
    path = Path(key_file)
    for _ in range(20):
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text()).get(kind, {}).get("key")
        except json.JSONDecodeError:  # TorchServe is still writing it (seen at start-up)
            time.sleep(0.1)
    raise RuntimeError(f"{path} is not valid JSON")


def bearer(key_file: str | Path, kind: str) -> dict[str, str]:
    """``Authorization`` header for ``kind``, or {} when token authorization is off."""
    key = api_key(key_file, kind)
    return {"Authorization": f"Bearer {key}"} if key else {}
