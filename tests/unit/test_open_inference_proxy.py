"""The renaming proxy's message rewrites (mmsent/clients/oip_proxy.py), without a server."""

from __future__ import annotations

import json
import struct

import grpc
import pytest

from mmsent.clients.grpc_stubs import open_inference_grpc_pb2 as pb
from mmsent.clients.oip_proxy import _Refused, from_torchserve, to_torchserve


def _raw_bytes(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def test_raw_bytes_inputs_move_into_contents() -> None:
    """tritonclient.grpc puts inputs in raw_input_contents, which TorchServe never reads."""
    request = pb.ModelInferRequest(model_name="m", id="x")
    request.inputs.add(name="text", datatype="BYTES", shape=[2])
    request.inputs.add(name="image", datatype="BYTES", shape=[2])
    request.raw_input_contents.extend([_raw_bytes(b"hi", b""), _raw_bytes(b"\x89PNG", b"\xff")])
    out = pb.ModelInferRequest.FromString(to_torchserve(request.SerializeToString()))
    assert not out.raw_input_contents and out.id == "x"
    assert list(out.inputs[0].contents.bytes_contents) == [b"hi", b""]
    assert list(out.inputs[1].contents.bytes_contents) == [b"\x89PNG", b"\xff"]


def test_answers_become_raw_outputs_with_bytes_unquoted() -> None:
    response = pb.ModelInferResponse(model_name="m", id="x")
    label = response.outputs.add(name="label", datatype="BYTES", shape=[2])
    label.contents.bytes_contents.extend([b'"positive"', b'"neutral"'])  # as TorchServe writes
    probs = response.outputs.add(name="probabilities", datatype="FP32", shape=[1, 2])
    probs.contents.fp32_contents.extend([0.25, 0.75])
    out = pb.ModelInferResponse.FromString(from_torchserve(response.SerializeToString()))
    assert out.raw_output_contents[0] == _raw_bytes(b"positive", b"neutral")
    assert struct.unpack("<2f", out.raw_output_contents[1]) == (0.25, 0.75)
    assert not out.outputs[0].HasField("contents") and out.outputs[1].name == "probabilities"


def test_refusal_outputs_become_a_grpc_error() -> None:
    response = pb.ModelInferResponse(model_name="m")
    error = response.outputs.add(name="error", datatype="BYTES", shape=[1])
    error.contents.bytes_contents.append(json.dumps("item 1: too big").encode())
    response.outputs.add(name="code", datatype="INT32", shape=[1]).contents.int_contents.append(413)
    with pytest.raises(_Refused) as caught:
        from_torchserve(response.SerializeToString())
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.message == "item 1: too big"
