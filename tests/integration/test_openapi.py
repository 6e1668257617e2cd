"""docs/openapi.yaml against the real server: the documented contract is what TorchServe answers.

Every request example of the description is sent to the session's TorchServe (tests/conftest.py)
as its media type says (JSON, multipart with the file named in ``x-image-file``, a bare image
from ``externalValue``), with the headers in ``x-headers``. The answer must have the status the
example documents (``x-status``) and a body that validates against the schema the description
gives for that status, 200 and 4xx alike. The description itself is checked by
openapi-spec-validator in tests/unit/test_docs.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from conftest import MODEL_NAME
from mmsent.harness.torchserve import TorchServe

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "docs" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
SPEC_URI = "urn:mmsent:openapi"
REGISTRY = Registry().with_resource(
    SPEC_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012)
)


def pointer(*parts: str) -> str:
    """A JSON pointer into the description (``~`` and ``/`` escaped, then URI-quoted)."""
    return "/" + "/".join(quote(p.replace("~", "~0").replace("/", "~1"), safe="~") for p in parts)


def resolve(node: dict[str, Any], parts: tuple[str, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Follow a local ``$ref`` (a shared response), keeping the pointer to where it lands."""
    while "$ref" in node:
        parts = tuple(p.replace("~1", "/").replace("~0", "~") for p in node["$ref"][2:].split("/"))
        node = SPEC
        for part in parts:
            node = node[part]
    return node, parts


def check_body(path: str, method: str, response: requests.Response) -> None:
    """The response body validates against the schema documented for its status."""
    documented = SPEC["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method.upper()} {path} answered {status}, not documented"
    node, parts = resolve(documented[status], ("paths", path, method, "responses", status))
    if "content" not in node:
        return
    assert response.headers.get("Content-Type", "").startswith("application/json"), response
    schema_ref = SPEC_URI + "#" + pointer(*parts, "content", "application/json", "schema")
    validator = Draft202012Validator({"$ref": schema_ref}, registry=REGISTRY)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(response.json())]  # fmt: skip
    assert not errors, (response.json(), errors)


def request_examples() -> list[Any]:
    """(path, method, media type, example) for every request example in the description."""
    found = []
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            content = (operation.get("requestBody") or {}).get("content", {})
            for media_type, media in content.items():
                for name, example in (media.get("examples") or {}).items():
                    found.append(pytest.param(path, method, media_type, example,
                                              id=f"{path} {media_type} {name}"))  # fmt: skip
    return found


EXAMPLES = request_examples()


def send(server: TorchServe, path: str, media_type: str, example: dict[str, Any]) -> Any:
    url = server.inference_url + path.replace("{model}", MODEL_NAME)
    headers = {k: str(v) for k, v in (example.get("x-headers") or {}).items()}
    if media_type == "application/json":
        headers["Content-Type"] = media_type
        return requests.post(url, data=json.dumps(example["value"]), headers=headers, timeout=60)
    if media_type == "multipart/form-data":
        files: dict[str, Any] = {k: (None, str(v)) for k, v in example["value"].items()}
        if "x-image-file" in example:
            image = ROOT / example["x-image-file"]
            files["image"] = (image.name, image.read_bytes(), "image/png")
        return requests.post(url, files=files, headers=headers, timeout=60)
    if media_type.startswith("image/"):
        body = (SPEC_PATH.parent / example["externalValue"]).read_bytes()
        headers["Content-Type"] = media_type
        return requests.post(url, data=body, headers=headers, timeout=60)
    raise AssertionError(f"no sender for {media_type}")


def test_every_route_has_examples_for_success_and_refusal() -> None:
    for path in ("/predictions/{model}", "/explanations/{model}", "/v2/models/{model}/infer"):
        statuses = {p.values[3]["x-status"] for p in EXAMPLES if p.values[0] == path}
        assert 200 in statuses and any(400 <= s < 500 for s in statuses), (path, statuses)


@pytest.mark.parametrize(("path", "method", "media_type", "example"), EXAMPLES)
def test_documented_example_gets_the_documented_answer(
    server: TorchServe, path: str, method: str, media_type: str, example: dict[str, Any]
) -> None:
    response = send(server, path, media_type, example)
    assert response.status_code == example["x-status"], response.text
    check_body(path, method, response)


def test_ping_matches(server: TorchServe) -> None:
    response = requests.get(server.inference_url + "/ping", timeout=30)
    assert response.status_code == 200
    check_body("/ping", "get", response)


@pytest.mark.parametrize("path", ["/predictions/{model}", "/v2/models/{model}/infer"])
def test_an_unknown_model_gets_torchserve_s_documented_404(server: TorchServe, path: str) -> None:
    url = server.inference_url + path.replace("{model}", "no_such_model")
    response = requests.post(url, json={"text": "hello"}, timeout=30)
    assert response.status_code == 404, response.text
    check_body(path, "post", response)


def test_a_schema_violation_is_caught() -> None:
    """The check is not vacuous: an answer missing a field, or an error with a stray field,
    fails against the description."""

    class Fake(requests.Response):
        def __init__(self, status: int, body: Any) -> None:
            super().__init__()
            self.status_code = status
            self._content = json.dumps(body).encode()
            self.headers["Content-Type"] = "application/json"

    good = {"label": "positive", "probabilities": {"negative": 0.1, "neutral": 0.2,
            "positive": 0.7}, "contributions": {"text": 0.5, "image": 0.5},
            "modalities": ["text", "image"], "text_truncated": False, "batch_size": 1,
            "batch_rows": 1, "timings_ms": {"preprocess": 1.0}}  # fmt: skip
    check_body("/predictions/{model}", "post", Fake(200, good))
    for bad_status, bad in ((200, {k: v for k, v in good.items() if k != "label"}),
                            (400, {"error": "x", "code": 400, "extra": 1}),
                            (400, {"error": "x"})):  # fmt: skip
        with pytest.raises(AssertionError):
            check_body("/predictions/{model}", "post", Fake(bad_status, bad))
