"""The KServe bundle: its config.properties says what KServe's TorchServe runtime needs, and its
model_snapshot cannot drift from the model-config.yaml the archive packs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from mmsent.config import MAX_MESSAGE_BYTES, read_properties
from mmsent.packaging.archive import MODEL_CONFIG_YAML, sha256_of
from mmsent.packaging.kserve import (
    CONFIG_REL,
    LOCAL_CONFIG,
    MAR_NAME,
    METRICS_REL,
    METRICS_SOURCE,
    MODEL_NAME,
    MOUNT,
    SNAPSHOT_KEYS,
    STORE_REL,
    build_bundle,
    default_model_config,
    render_config,
    snapshot_drift,
)


def fake_mar(folder: Path, model_config: Path = MODEL_CONFIG_YAML, version: str = "1.0") -> Path:
    """A .mar with what build_bundle reads (manifest + packed model-config) and its sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    mar = folder / MAR_NAME
    manifest = {"model": {"modelName": MODEL_NAME, "modelVersion": version,
                          "configFile": "model-config.yaml"}}  # fmt: skip
    with zipfile.ZipFile(mar, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        archive.writestr("model-config.yaml", model_config.read_text())
    mar.with_name(mar.name + ".sha256").write_text(f"{sha256_of(mar)}  {mar.name}\n")
    return mar


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return build_bundle(tmp_path / "bundle", fake_mar(tmp_path / "store"))


def test_bundle_layout_is_what_kserves_runtime_reads(bundle: Path) -> None:
    assert sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()) == [
        CONFIG_REL, METRICS_REL, f"{STORE_REL}/{MAR_NAME}"]  # fmt: skip
    assert (bundle / METRICS_REL).read_text() == METRICS_SOURCE.read_text()


def test_config_properties_facts(bundle: Path) -> None:
    props = read_properties((bundle / CONFIG_REL).read_text())
    # KServe's wrapper: forwards to 8085 (REST, inference + management) and grpc_inference_port
    assert props["inference_address"].endswith(":8085")
    assert props["management_address"] == props["inference_address"]
    assert props["metrics_address"] == "http://0.0.0.0:8082"  # Prometheus scrapes the pod
    # only the wrapper, in the same pod, talks to TorchServe's APIs
    for key in ("inference_address", "grpc_inference_address", "grpc_management_address"):
        assert "127.0.0.1" in props[key], key
    assert props["model_store"] == f"{MOUNT}/{STORE_REL}"  # the wrapper looks for a .mar there
    assert props["metrics_config"] == f"{MOUNT}/{METRICS_REL}"
    assert props["metrics_mode"] == "prometheus"
    assert props["enable_envvars_config"] == "true"
    assert props["install_py_dep_per_model"] == "false"
    assert props["disable_token_authorization"] == "true"  # pytorch/serve#3301
    assert props["enable_model_api"] == "false"
    assert props["allowed_urls"] == read_properties(LOCAL_CONFIG.read_text())["allowed_urls"]
    assert int(props["max_request_size"]) == int(props["max_response_size"]) == MAX_MESSAGE_BYTES


def test_no_comment_line_carries_an_equals_sign(bundle: Path) -> None:
    """Older kfs wrappers parse every line with '=' as key=value, comments included."""
    comments = [line for line in (bundle / CONFIG_REL).read_text().splitlines()
                if line.lstrip().startswith("#")]  # fmt: skip
    assert comments and not [line for line in comments if "=" in line]


@pytest.mark.parametrize("gpu", [False, True])
def test_snapshot_is_generated_from_the_model_config(gpu: bool, tmp_path: Path) -> None:
    source = default_model_config(gpu)
    bundle = build_bundle(tmp_path / "bundle", fake_mar(tmp_path / "store", source))
    text = (bundle / CONFIG_REL).read_text()
    assert snapshot_drift(text, source) == []
    snapshot = json.loads(read_properties(text)["model_snapshot"])
    entry = snapshot["models"][MODEL_NAME]["1.0"]
    expected = yaml.safe_load(source.read_text())
    assert {key: entry[key] for key in SNAPSHOT_KEYS} == {
        key: expected[key] for key in SNAPSHOT_KEYS
    }
    assert entry["marName"] == MAR_NAME and entry["defaultVersion"] is True


def test_drift_check_fails_when_either_side_is_edited(bundle: Path, tmp_path: Path) -> None:
    text = (bundle / CONFIG_REL).read_text()
    served = yaml.safe_load(MODEL_CONFIG_YAML.read_text())
    batch, delay = served["batchSize"], served["maxBatchDelay"]
    edited_yaml = tmp_path / "model-config.yaml"
    edited_yaml.write_text(yaml.safe_dump({**served, "batchSize": batch + 1}))
    assert snapshot_drift(text, edited_yaml) == [
        f"1.0.batchSize: snapshot {batch} != model-config.yaml {batch + 1}"
    ]
    edited_text = text.replace(f'"maxBatchDelay":{delay}', f'"maxBatchDelay":{delay + 5}')
    assert edited_text != text
    assert snapshot_drift(edited_text, MODEL_CONFIG_YAML) == [
        f"1.0.maxBatchDelay: snapshot {delay + 5} != model-config.yaml {delay}"
    ]
    assert snapshot_drift("model_snapshot={}", MODEL_CONFIG_YAML) != []


def test_snapshot_follows_the_archive_not_the_repository(tmp_path: Path) -> None:
    """An archive packed with another config gets that config's batching in its snapshot."""
    served = yaml.safe_load(MODEL_CONFIG_YAML.read_text())
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**served, "batchSize": served["batchSize"] + 3}))
    bundle = build_bundle(tmp_path / "bundle", fake_mar(tmp_path / "store", other, "2.0"))
    text = (bundle / CONFIG_REL).read_text()
    assert snapshot_drift(text, other) == []
    assert snapshot_drift(text, MODEL_CONFIG_YAML) == [
        f"2.0.batchSize: snapshot {served['batchSize'] + 3} != model-config.yaml "
        f"{served['batchSize']}"
    ]


def test_missing_snapshot_key_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "model-config.yaml"
    broken.write_text("minWorkers: 1\nmaxWorkers: 1\nbatchSize: 8\n")
    with pytest.raises(ValueError, match="maxBatchDelay"):
        render_config(broken)


def test_bundle_refuses_a_missing_metrics_yaml_and_a_tampered_archive(tmp_path: Path) -> None:
    mar = fake_mar(tmp_path / "store")
    with pytest.raises(FileNotFoundError, match="metrics"):
        build_bundle(tmp_path / "b1", mar, metrics_yaml=tmp_path / "nope.yaml")
    with zipfile.ZipFile(mar, "a") as archive:
        archive.writestr("extra.txt", "tampered")
    with pytest.raises(RuntimeError, match="sha256"):
        build_bundle(tmp_path / "b2", mar)
