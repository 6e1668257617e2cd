"""Facts stated in two formats must agree: config.properties (TorchServe reads it) and
mmsent/config.py (our clients and tests read it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmsent.config import (
    DEFAULT_PORTS,
    MAX_MESSAGE_BYTES,
    RESIZE_RATIO,
    read_properties,
    resize_for,
)

ROOT = Path(__file__).resolve().parents[2]


def _properties(name: str) -> dict[str, str]:
    return read_properties((ROOT / name).read_text())


@pytest.mark.parametrize("name", ["config.properties", "config.production.properties"])
def test_ports_and_message_limit_match_the_torchserve_configs(name: str) -> None:
    props = _properties(name)
    for kind in ("inference", "management", "metrics"):
        assert props[f"{kind}_address"].endswith(f":{DEFAULT_PORTS[kind]}"), kind
    assert int(props["grpc_inference_port"]) == DEFAULT_PORTS["grpc_inference"]
    assert int(props["grpc_management_port"]) == DEFAULT_PORTS["grpc_management"]
    assert int(props["max_request_size"]) == MAX_MESSAGE_BYTES
    assert int(props["max_response_size"]) == MAX_MESSAGE_BYTES


def test_resize_ratio_is_torchvisions_256_for_224() -> None:
    assert RESIZE_RATIO == 8 / 7 and resize_for(224) == 256 and resize_for(64) == 73
