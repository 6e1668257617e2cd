"""A rehearsal of the KServe pod, the closest thing to the cluster that runs here: the bundle
(tiny archive) started with KServe's TorchServe command line and environment, the bundle's
config.properties untouched, only its addresses and /mnt/models paths remapped through
TorchServe's TS_* variables. Our gateway in front of it (what the pod runs after TorchServe) is
rehearsed in test_kserve_gateway.py; the image, the storage initializer and Knative are NOT part
of either (see docs/kubernetes.md "Verified here / not verified")."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import MODEL_NAME, b64, jpeg_bytes
from mmsent.config import LABELS, read_properties
from mmsent.harness.kserve_pod import PATH_KEYS, KServePod, overridden_keys, pod_command
from mmsent.packaging.archive import MODEL_CONFIG_YAML
from mmsent.packaging.kserve import (
    CONFIG_REL,
    METRICS_REL,
    POD_ENV,
    RUNTIME_ARGS,
    SNAPSHOT_KEYS,
    STORE_REL,
    TS_ADDRESSES,
    build_bundle,
    snapshot_drift,
)

pytestmark = pytest.mark.server


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bundle(tiny_build: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    store, _ = tiny_build
    return build_bundle(tmp_path_factory.mktemp("kserve") / "bundle", store / f"{MODEL_NAME}.mar")


@pytest.fixture(scope="module")
def pod(bundle: Path) -> Iterator[KServePod]:
    before = _sha(bundle / CONFIG_REL)
    with KServePod(bundle) as running:
        yield running
    assert _sha(bundle / CONFIG_REL) == before, "the rehearsal must not edit the bundle's config"


def _snapshot(bundle: Path) -> dict:
    snapshot = json.loads(read_properties((bundle / CONFIG_REL).read_text())["model_snapshot"])
    return next(iter(snapshot["models"][MODEL_NAME].values()))


def test_started_like_kserve_with_only_addresses_and_paths_remapped(
    pod: KServePod, bundle: Path
) -> None:
    command = pod_command(bundle)
    assert command[1:] == [
        a.replace("/mnt/models", str(bundle.resolve())) for a in RUNTIME_ARGS[1:]
    ]
    assert "--foreground" not in command and "--models" not in command
    assert {k: pod.environment[k] for k in POD_ENV} == POD_ENV
    assert "TS_SERVICE_ENVELOPE" not in pod.environment  # pytorch/serve#2158
    props = read_properties((bundle / CONFIG_REL).read_text())
    assert overridden_keys(pod.environment) == set(TS_ADDRESSES) | set(PATH_KEYS)
    assert overridden_keys(pod.environment) <= set(props)  # overrides only, nothing added
    assert pod.environment["TS_METRICS_CONFIG"] == str((bundle / METRICS_REL).resolve())


def test_ready_as_the_gateway_polls_it_with_the_snapshots_batching(
    pod: KServePod, bundle: Path
) -> None:
    described = pod.describe()
    assert described is not None and pod.ready()
    assert {key: described[key] for key in SNAPSHOT_KEYS} == {
        key: _snapshot(bundle)[key] for key in SNAPSHOT_KEYS}  # fmt: skip
    assert described["modelUrl"] == _snapshot(bundle)["marName"]
    assert snapshot_drift((bundle / CONFIG_REL).read_text(), MODEL_CONFIG_YAML) == []
    # our gateway, not TorchServe, answers the v2 health routes in the pod: TorchServe 0.12
    # serves them only with TS_OPEN_INFERENCE_PROTOCOL=oip, which the runtime does not set
    resp = requests.get(f"{pod.inference_url}/v2/health/ready", timeout=10)
    assert resp.status_code == 404


def test_concurrent_requests_form_batches_up_to_the_snapshots_batch_size(
    pod: KServePod, bundle: Path
) -> None:
    body = {"text": "a fine example", "image": b64(jpeg_bytes((120, 90)))}

    def call(_: int) -> requests.Response:
        return requests.post(f"{pod.inference_url}/predictions/{MODEL_NAME}", json=body, timeout=60)

    with cf.ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(call, range(32)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers][:3]
    sizes = [a.json()["batch_size"] for a in answers]
    assert max(sizes) > 1, f"no dynamic batching: {sizes}"
    assert max(sizes) <= _snapshot(bundle)["batchSize"]


def test_metrics_port_has_torchserve_counters_and_every_declared_handler_metric(
    pod: KServePod, bundle: Path
) -> None:
    url = f"{pod.inference_url}/predictions/{MODEL_NAME}"
    assert requests.post(url, json={"text": "fine"}, timeout=60).status_code == 200
    assert requests.post(url, json={"txet": "typo"}, timeout=60).status_code == 400
    explain = requests.post(f"{pod.inference_url}/explanations/{MODEL_NAME}",
                            json={"text": "fine words"}, timeout=120)  # fmt: skip
    assert explain.status_code == 200, explain.text[:300]
    text = requests.get(f"{pod.metrics_url}/metrics", timeout=10).text
    samples = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    requests_total = samples["ts_inference_requests_total"]
    assert requests_total.labels["model_name"] == MODEL_NAME and requests_total.value >= 3
    declared = yaml.safe_load((bundle / METRICS_REL).read_text())["model_metrics"]
    names = [m["name"] for kind in declared.values() for m in kind]
    missing = [n for n in names if not any(s == n or s.startswith(f"{n}_") for s in samples)]
    assert names and missing == [], f"declared in metrics.yaml but not on /metrics: {missing}"


def test_v2_infer_over_tritonclient(pod: KServePod) -> None:
    """POST /v2/models/<name>/infer is what our gateway forwards every v2 request to."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=pod.inference_url.removeprefix("http://"))
    text = httpclient.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"what a lovely day", b"terrible service"], dtype=object))
    result = client.infer(MODEL_NAME, [text])
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert len(labels) == 2 and set(labels) <= set(LABELS)
    assert result.get_response()["model_name"] == MODEL_NAME
    client.close()


def test_bundle_model_store_holds_exactly_the_snapshots_archive(bundle: Path) -> None:
    assert [p.name for p in (bundle / STORE_REL).iterdir()] == [_snapshot(bundle)["marName"]]


def test_stock_runtime_envelope_would_break_batched_v2(bundle: Path) -> None:
    """Why our ClusterServingRuntime drops TS_SERVICE_ENVELOPE: with KServe's stock value for v2
    (kservev2), TorchServe 0.12's envelope keeps one request per batch (pytorch/serve#2158), so
    concurrent v2 requests that batch are all refused."""
    stock = KServePod(bundle)
    stock.environment["TS_SERVICE_ENVELOPE"] = "kservev2"
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}
    url = f"{stock.inference_url}/v2/models/{MODEL_NAME}/infer"
    with stock, cf.ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda _: requests.post(url, json=body, timeout=60), range(16)))
    refused = [a for a in answers if a.status_code != 200]
    assert refused and "number of batch response mismatched" in refused[0].text
