"""Strict validation of Kubernetes manifests against the KServe SDK's (and the Kubernetes
client's) generated model classes, without a cluster.

The SDK's ``ApiClient`` deserializer ignores keys it does not know, so a misspelled field
(``scaleTarge``) would pass it and then be dropped silently by the API server's pruning. This
walker follows each class's ``attribute_map`` (JSON key -> attribute) and ``openapi_types``
(attribute -> type string) and reports every unknown key and every wrong type with its path,
then builds the SDK object, so the SDK's own constructors check what they check too.
"""

from __future__ import annotations

import re
from typing import Any

import kserve
from kubernetes import client as k8s

# apiVersion + kind -> the SDK class that models it
KINDS: dict[tuple[str, str], str] = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
}
_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
    "datetime": (str,), "date": (str,), "bytearray": (str,),
}  # fmt: skip
_LIST = re.compile(r"^(?:list|List)\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(str, ?(.+)\)|Dict\[str, ?(.+)\])$")


class ManifestError(ValueError):
    """A manifest does not match the SDK's schema; ``problems`` lists each one with its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def model_class(name: str) -> type:
    """The generated class called ``name`` in the KServe SDK or the Kubernetes client."""
    for namespace in (kserve, k8s):
        cls = getattr(namespace, name, None)
        if isinstance(cls, type) and hasattr(cls, "openapi_types"):
            return cls
    raise KeyError(f"no SDK model class {name}")


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # YAML "true" where a number or string belongs
    return isinstance(value, types)


def _walk(value: Any, type_name: str, path: str, problems: list[str]) -> Any:
    """Check ``value`` against ``type_name``; returns the SDK value built from it."""
    if type_name in ("object", "Any"):
        return value
    if type_name in _PRIMITIVES:
        if not _is(value, _PRIMITIVES[type_name]):
            problems.append(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return value
    if match := _LIST.match(type_name):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return value
        return [_walk(item, match.group(1), f"{path}[{i}]", problems)
                for i, item in enumerate(value)]  # fmt: skip
    if match := _DICT.match(type_name):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return value
        inner = match.group(1) or match.group(2)
        return {k: _walk(v, inner, f"{path}.{k}", problems) for k, v in value.items()}
    return _walk_model(value, model_class(type_name), path, problems)


def _walk_model(value: Any, cls: type, path: str, problems: list[str]) -> Any:
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a {cls.__name__} mapping, got {type(value).__name__}")
        return value
    attribute_of = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    kwargs = {}
    for key, item in value.items():
        if key not in attribute_of:
            problems.append(f"{path}.{key}: unknown field of {cls.__name__}")
            continue
        attr = attribute_of[key]
        kwargs[attr] = _walk(item, cls.openapi_types[attr], f"{path}.{key}", problems)
    if problems:
        return value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # the SDK's own checks (pydantic or setters)
        problems.append(f"{path}: {cls.__name__} refused it: {exc}")
        return value


def validate(manifest: dict[str, Any]) -> Any:
    """The SDK object for ``manifest``; raises :class:`ManifestError` listing every problem."""
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    if key not in KINDS:
        raise ManifestError([f"unsupported apiVersion/kind {key}"])
    problems: list[str] = []
    built = _walk_model(manifest, model_class(KINDS[key]), manifest["kind"], problems)
    if problems:
        raise ManifestError(problems)
    return built
