"""deploy/kserve/: committed = generated, every manifest validates strictly against the KServe
SDK's model classes (unknown fields and wrong types fail), and they agree with the bundle."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmsent.config import WORKER_ENV
from mmsent.packaging import kserve_manifests as km
from mmsent.packaging.kserve import (
    GATEWAY_TIMEOUT_MARGIN_S,
    METRICS_PORT,
    MODEL_NAME,
    RUNTIME_ARGS,
    TORCHSERVE_VERSION,
    default_model_config,
    kfs_image,
    snapshot_settings,
)
from mmsent.packaging.kserve_schema import ManifestError, validate

MANIFESTS = sorted(km.DEPLOY_DIR.glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def test_committed_files_equal_the_generator_output() -> None:
    assert km.stale() == [], "run: python -m mmsent.packaging.kserve_manifests"
    assert {p.name for p in km.DEPLOY_DIR.iterdir()} == set(km.rendered())


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_each_manifest_validates_strictly(path: Path) -> None:
    built = validate(_load(path))
    assert (
        type(built).__name__
        == {
            "InferenceService": "V1beta1InferenceService",
            "ClusterServingRuntime": "V1alpha1ClusterServingRuntime",
            "NetworkPolicy": "V1NetworkPolicy",
        }[_load(path)["kind"]]
    )


@pytest.mark.parametrize(
    ("where", "key", "value", "message"),
    [
        (("spec", "predictor"), "scaleTarge", 8, "predictor.scaleTarge: unknown field"),
        (("spec", "predictor", "model"), "storageURI", "gs://x", "unknown field"),
        (("spec", "predictor", "model", "modelFormat"), "nmae", "pytorch", "unknown field"),
        (("spec", "predictor"), "minReplicas", "1", "expected int, got str"),
        (("spec", "predictor"), "maxReplicas", True, "expected int, got bool"),
        (("spec", "predictor", "model", "resources", "limits"), "cpu", 2, "expected str, got int"),
        (("spec", "predictor", "model"), "args", "--x", "expected a list"),
    ],
)
def test_injected_unknown_field_or_wrong_type_fails(
    where: tuple[str, ...], key: str, value: Any, message: str
) -> None:
    manifest = copy.deepcopy(_load(km.DEPLOY_DIR / "inferenceservice.yaml"))
    validate(manifest)  # the unmodified one passes
    node = manifest
    for part in where:
        node = node[part]
    node[key] = value
    with pytest.raises(ManifestError) as raised:
        validate(manifest)
    assert any(message in problem for problem in raised.value.problems), raised.value.problems


def test_runtime_errors_are_reported_with_their_path() -> None:
    runtime = copy.deepcopy(_load(km.DEPLOY_DIR / "clusterservingruntime.yaml"))
    runtime["spec"]["containers"][0]["env"] = [{"name": "A", "valeu": "x"}]
    runtime["spec"]["protocolVersions"] = "v2"
    with pytest.raises(ManifestError) as raised:
        validate(runtime)
    assert sorted(raised.value.problems) == [
        "ClusterServingRuntime.spec.containers[0].env[0].valeu: unknown field of V1EnvVar",
        "ClusterServingRuntime.spec.protocolVersions: expected a list, got str",
    ]


@pytest.mark.parametrize("gpu", [False, True])
def test_runtime_is_kserves_torchserve_runtime_pinned_with_our_gateway(gpu: bool) -> None:
    runtime = km.cluster_serving_runtime(gpu)
    container = runtime["spec"]["containers"][0]
    # `command` replaces the kfs entrypoint (which would start the stock wrapper after the args)
    assert container["command"] == ["/bin/sh", "-c"] and len(container["args"]) == 1
    torchserve, gateway = container["args"][0].split(" && ")
    assert shlex.split(torchserve) == list(RUNTIME_ARGS)  # TorchServe exactly as KServe starts it
    timeout = snapshot_settings(default_model_config(gpu))["responseTimeout"]
    assert shlex.split(gateway) == [
        "exec", "env", f"PYTHONPATH={km.GATEWAY_HOME}", "python", "-m", "mmsent.gateway",
        "--model-name", MODEL_NAME, "--torchserve", "http://127.0.0.1:8085",
        "--management", "http://127.0.0.1:8085", "--http-port", "8080", "--grpc-port", "8081",
        "--request-timeout", str(timeout + GATEWAY_TIMEOUT_MARGIN_S),
    ]  # fmt: skip
    assert container["image"].endswith(f":{TORCHSERVE_VERSION}{'-gpu' if gpu else ''}")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert "TS_SERVICE_ENVELOPE" not in env  # pytorch/serve#2158: it breaks dynamic batching
    assert env == WORKER_ENV  # the serving workers' measured environment, and nothing else
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]  # the gateway has no v1
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == str(METRICS_PORT)
    assert f"ARG BASE_IMAGE={kfs_image(False)}" in km.dockerfile()


def test_image_holds_the_gateway_and_runs_the_runtimes_line() -> None:
    lines = km.dockerfile().splitlines()
    gateway_pins = " ".join(km.pinned_requirements(names=km.GATEWAY_REQUIREMENTS))
    assert f"RUN python -m pip install --no-cache-dir {gateway_pins}" in lines
    assert "kserve==0.21.0" in gateway_pins
    for path in km.GATEWAY_FILES:
        assert f"COPY {path} {km.GATEWAY_HOME}/{path}" in lines
        assert (km.ROOT / path).exists()
    assert not any(line.startswith("ENV PYTHONPATH") for line in lines)  # TorchServe's stays clean
    assert 'ENTRYPOINT ["/bin/sh", "-c"]' in lines
    assert f"CMD {json.dumps([km.pod_script(False)])}" in lines
    assert lines.index("USER model-server") > max(i for i, line in enumerate(lines)
                                                  if line.startswith(("RUN", "COPY")))  # fmt: skip


@pytest.mark.parametrize("gpu", [False, True])
def test_inference_service_agrees_with_runtime_and_model_config(gpu: bool) -> None:
    isvc, runtime = km.inference_service(gpu), km.cluster_serving_runtime(gpu)
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["runtime"] == runtime["metadata"]["name"]
    assert predictor["model"]["protocolVersion"] == "v2"
    settings = snapshot_settings(default_model_config(gpu))
    assert predictor["scaleMetric"] == "concurrency"
    assert predictor["scaleTarget"] == settings["batchSize"] * settings["maxWorkers"]
    gpus = predictor["model"]["resources"]["limits"].get("nvidia.com/gpu")
    devices = yaml.safe_load(default_model_config(True).read_text())["deviceIds"]
    assert gpus == (str(len(devices)) if gpu else None)


def test_image_pins_the_serving_dependencies_of_requirements_txt() -> None:
    pins = km.pinned_requirements()
    assert [p.split("==")[0] for p in pins] == list(km.SERVING_REQUIREMENTS)
    assert all("==" in p and p.split("==")[1] for p in pins)
    assert " ".join(pins) in km.dockerfile()


def test_pinned_torchserve_is_the_one_this_repository_tests() -> None:
    import ts.version

    pins = (km.ROOT / "requirements.txt").read_text()
    assert f"torchserve=={TORCHSERVE_VERSION}" in pins
    assert ts.version.__version__ == TORCHSERVE_VERSION
