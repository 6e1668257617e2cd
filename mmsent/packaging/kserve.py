"""The KServe deployable bundle: what a ``storageUri`` must hold for KServe's TorchServe runtime.

KServe mounts the ``storageUri`` at ``/mnt/models``. Our runtime (kserve_manifests.py) runs
``torchserve --start --model-store=/mnt/models/model-store
--ts-config=/mnt/models/config/config.properties`` exactly as KServe's TorchServe runtime does,
then, instead of the kfs image's wrapper, our gateway (``python -m mmsent.gateway``, a kserve
ModelServer) on 8080 (REST v2) and 8081 (gRPC v2), which forwards to TorchServe on 8085
(docs/kubernetes.md says why). So the bundle is::

    config/config.properties    generated here (ports, security, model_snapshot)
    config/metrics.yaml         the repository's metrics.yaml (metrics_config points at it)
    model-store/<model>.mar     built by mmsent.packaging.archive

Every KServe fact lives in this module's constants; the manifests (kserve_manifests.py), the
bundle and the local rehearsal (mmsent.harness.kserve_pod) are generated from them. Sources are
cited in docs/kubernetes.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from mmsent.config import DEFAULT_MODEL_NAME, MAX_MESSAGE_BYTES, read_properties
from mmsent.gateway.defaults import (
    GATEWAY_GRPC_PORT,
    GATEWAY_HTTP_PORT,
    TORCHSERVE_REST_PORT,
    TORCHSERVE_URL,
)
from mmsent.packaging.archive import MODEL_CONFIG_YAML, ROOT, verify_sha256

# -- KServe's TorchServe runtime (kserve/kserve charts/.../clusterservingruntime_kserve-torchserve)
MOUNT = PurePosixPath("/mnt/models")  # where KServe's storage initializer puts the storageUri
CONFIG_REL = "config/config.properties"
METRICS_REL = "config/metrics.yaml"
STORE_REL = "model-store"
TORCHSERVE_VERSION = "0.12.0"  # = requirements.txt; KServe's chart default points at older ones
KFS_IMAGE = "pytorch/torchserve-kfs"
RUNTIME_ARGS: tuple[str, ...] = (
    "torchserve", "--start",
    f"--model-store={MOUNT / STORE_REL}", f"--ts-config={MOUNT / CONFIG_REL}",
)  # fmt: skip
# Our gateway (mmsent.gateway, replacing the kfs image's wrapper) listens where the wrapper did;
# these are the only ports KServe routes traffic to. The port facts live in mmsent.gateway.defaults
# so the gateway's CLI defaults and these manifests cannot disagree.
# TorchServe behind it, on the ports of pytorch/serve's kubernetes/kserve sample config:
# REST inference AND management share 8085 (8080/8081 are the gateway's), gRPC on 7070/7071.
# Only the gateway, in the same pod, talks to them, so they bind loopback; metrics bind 0.0.0.0
# because Prometheus scrapes the pod.
TS_REST_PORT = TORCHSERVE_REST_PORT
METRICS_PORT = 8082
TS_ADDRESSES: dict[str, str] = {
    "inference_address": f"http://127.0.0.1:{TS_REST_PORT}",
    "management_address": f"http://127.0.0.1:{TS_REST_PORT}",
    "metrics_address": f"http://0.0.0.0:{METRICS_PORT}",
    "grpc_inference_address": "127.0.0.1",
    "grpc_inference_port": "7070",
    "grpc_management_address": "127.0.0.1",
    "grpc_management_port": "7071",
}
# What KServe sets in the container: PROTOCOL_VERSION (the wrapper's protocol) comes from the
# InferenceService defaulting. TS_SERVICE_ENVELOPE=kservev2 is deliberately NOT set by our runtime:
# TorchServe 0.12's kservev2 envelope keeps only the first request of a batch
# (pytorch/serve#2158), which breaks dynamic batching; the handler reads v2 bodies itself.
PROTOCOL = "v2"
POD_ENV: dict[str, str] = {"PROTOCOL_VERSION": PROTOCOL}
# The gateway's command line in the pod; {timeout} = the model-config's responseTimeout + margin
# (the rehearsal remaps only the four address options to free loopback ports).
GATEWAY_MODULE = "mmsent.gateway"
GATEWAY_TIMEOUT_MARGIN_S = 10
MODEL_NAME = DEFAULT_MODEL_NAME
MAR_NAME = f"{MODEL_NAME}.mar"
METRICS_SOURCE = ROOT / "metrics.yaml"
# Per-model settings model_snapshot carries. The snapshot OVERRIDES the archive's
# model-config.yaml for these (measured: docs/kubernetes.md section 1), so they are generated
# from that very file.
SNAPSHOT_KEYS: tuple[str, ...] = (
    "minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout",
)  # fmt: skip
# Server policy shared with the local config (one source: config.properties).
SHARED_KEYS: tuple[str, ...] = ("enable_model_api", "allowed_urls", "job_queue_size", "vmargs")
LOCAL_CONFIG = ROOT / "config.properties"


def gateway_args(response_timeout: int) -> list[str]:
    """``python -m mmsent.gateway ...`` as the pod runs it after ``torchserve --start``: REST v2 on
    8080 and gRPC v2 on 8081, forwarding to TorchServe on 8085. Its request timeout sits
    GATEWAY_TIMEOUT_MARGIN_S above TorchServe's ``responseTimeout``, so TorchServe's own timeout
    answer is what a client sees."""
    return [
        "python", "-m", GATEWAY_MODULE, "--model-name", MODEL_NAME,
        "--torchserve", TORCHSERVE_URL, "--management", TORCHSERVE_URL,
        "--http-port", str(GATEWAY_HTTP_PORT), "--grpc-port", str(GATEWAY_GRPC_PORT),
        "--request-timeout", str(response_timeout + GATEWAY_TIMEOUT_MARGIN_S),
    ]  # fmt: skip


def kfs_image(gpu: bool = False) -> str:
    """The pinned base image: ``pytorch/torchserve-kfs:0.12.0`` (``-gpu`` for CUDA nodes)."""
    return f"{KFS_IMAGE}:{TORCHSERVE_VERSION}{'-gpu' if gpu else ''}"


def snapshot_settings(config: Mapping[str, Any] | str | Path) -> dict[str, int]:
    """The SNAPSHOT_KEYS of a model-config (a mapping or a YAML file); raises if one is missing
    (the snapshot must never fall back to a silent default)."""
    if not isinstance(config, Mapping):
        config = yaml.safe_load(Path(config).read_text()) or {}
    missing = [key for key in SNAPSHOT_KEYS if key not in config]
    if missing:
        raise ValueError(f"model config lacks {missing}: model_snapshot needs them")
    return {key: int(config[key]) for key in SNAPSHOT_KEYS}


def model_snapshot(config: Mapping[str, Any] | str | Path, version: str = "1.0") -> dict[str, Any]:
    """TorchServe's startup snapshot for our one model, from its model-config."""
    entry = {"defaultVersion": True, "marName": MAR_NAME, **snapshot_settings(config)}
    return {"name": "startup.cfg", "modelCount": 1, "models": {MODEL_NAME: {version: entry}}}


def render_config(config: Mapping[str, Any] | str | Path, version: str = "1.0") -> str:
    """The bundle's config.properties text for a model-config (mapping or YAML file)."""
    shared = read_properties(LOCAL_CONFIG.read_text())
    snapshot = json.dumps(model_snapshot(config, version), separators=(",", ":"))
    lines = [
        "# GENERATED by scripts/build_kserve_bundle.py (mmsent/packaging/kserve.py); do not edit.",
        "# KServe's TorchServe runtime reads this from /mnt/models/config/config.properties.",
        "# TorchServe sits behind our gateway (8080 REST, 8081 gRPC) in the same pod: its own",
        "# REST (inference + management, 8085) and gRPC sockets stay on loopback; only metrics",
        "# (8082) bind 0.0.0.0 for Prometheus. See docs/kubernetes.md.",
        *(f"{key}={value}" for key, value in TS_ADDRESSES.items()),
        f"model_store={MOUNT / STORE_REL}",
        "# TS_* environment variables override keys (the local rehearsal remaps addresses so).",
        "enable_envvars_config=true",
        "# Serving dependencies are baked into the image (deploy/kserve/Dockerfile): no pip at",
        "# pod start, so pods need no PyPI egress and scale-ups do not wait on installs.",
        "install_py_dep_per_model=false",
        "metrics_mode=prometheus",
        f"metrics_config={MOUNT / METRICS_REL}",
        "# No tokens: the gateway (like KServe's wrapper, pytorch/serve#3301) sends none. The",
        "# loopback binding above and the NetworkPolicy are the protection instead.",
        "disable_token_authorization=true",
        *(f"{key}={shared[key]}" for key in SHARED_KEYS),
        f"max_request_size={MAX_MESSAGE_BYTES}",
        f"max_response_size={MAX_MESSAGE_BYTES}",
        "# What loads and how it batches: generated from the archive's model-config.yaml (the",
        "# snapshot overrides it, so a disagreeing one would silently change batching).",
        f"model_snapshot={snapshot}",
    ]
    return "\n".join(lines) + "\n"


def snapshot_drift(config_text: str, model_config_yaml: str | Path) -> list[str]:
    """How ``config_text``'s model_snapshot disagrees with ``model_config_yaml`` ([] = agrees)."""
    snapshot = json.loads(read_properties(config_text).get("model_snapshot", "{}"))
    versions = snapshot.get("models", {}).get(MODEL_NAME)
    if not versions:
        return [f"model_snapshot does not load {MODEL_NAME}"]
    expected = snapshot_settings(model_config_yaml)
    return [f"{version}.{key}: snapshot {entry.get(key)} != {Path(model_config_yaml).name} {want}"
            for version, entry in versions.items()
            for key, want in expected.items() if entry.get(key) != want]  # fmt: skip


def packed_model_config(mar: str | Path) -> tuple[str, dict[str, Any]]:
    """(model version, the model-config.yaml packed in ``mar``) from its MANIFEST."""
    with zipfile.ZipFile(mar) as archive:
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]
        config_name = manifest.get("configFile")
        if not config_name:
            raise ValueError(
                f"{mar} has no model-config.yaml packed (torch-model-archiver "
                "--config-file): its batching would be TorchServe's defaults"
            )
        return manifest["modelVersion"], yaml.safe_load(archive.read(config_name)) or {}


def build_bundle(
    out: str | Path, mar: str | Path, metrics_yaml: str | Path = METRICS_SOURCE
) -> Path:
    """Write the bundle for ``mar`` into ``out`` (replaced); returns ``out``.

    The snapshot is generated from the model-config.yaml packed IN the archive, so the two
    cannot disagree, whichever config (CPU or GPU) the archive was built with.
    """
    out, mar, metrics_yaml = Path(out), Path(mar), Path(metrics_yaml)
    if not metrics_yaml.is_file():
        raise FileNotFoundError(
            f"{metrics_yaml} missing: the bundle's metrics_config needs it "
            "(TorchServe would fall back to its default metric set)"
        )
    verify_sha256(mar)
    version, packed = packed_model_config(mar)
    if out.exists():
        shutil.rmtree(out)
    (out / STORE_REL).mkdir(parents=True)
    (out / CONFIG_REL).parent.mkdir(parents=True)
    (out / CONFIG_REL).write_text(render_config(packed, version))
    shutil.copy2(metrics_yaml, out / METRICS_REL)
    shutil.copy2(mar, out / STORE_REL / MAR_NAME)
    return out


def default_model_config(gpu: bool) -> Path:
    """handlers/model-config.yaml, or the GPU one."""
    return MODEL_CONFIG_YAML.with_name("model-config.gpu.yaml") if gpu else MODEL_CONFIG_YAML


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="build_kserve_bundle.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="bundle folder (default build/kserve, build/kserve-gpu with --gpu)",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--archive",
        type=Path,
        default=None,
        help="use this built .mar (its .sha256 is checked) instead of building",
    )
    source.add_argument(
        "--tiny", action="store_true", help="build the tiny plumbing model (seconds; NOT sentiment)"
    )
    p.add_argument(
        "--gpu",
        action="store_true",
        help="build with handlers/model-config.gpu.yaml (ignored with --archive: "
        "the snapshot always follows the archive's packed config)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Build the bundle: the default model's archive (or --tiny / --archive) + generated config."""
    args = parse_args(argv)
    out = args.out or ROOT / "build" / ("kserve-gpu" if args.gpu else "kserve")
    if args.archive:
        bundle = build_bundle(out, args.archive)
    else:
        from mmsent.packaging.build import TINY_MODEL_ARGS
        from mmsent.packaging.build import main as build_archive_main

        with tempfile.TemporaryDirectory() as tmp:
            model_args = list(TINY_MODEL_ARGS) if args.tiny else []
            mar = build_archive_main(
                [
                    *model_args,
                    "--out",
                    tmp,
                    "--model-name",
                    MODEL_NAME,
                    "--model-config",
                    str(default_model_config(args.gpu)),
                ]
            )
            bundle = build_bundle(out, mar)
    drift = snapshot_drift(
        (bundle / CONFIG_REL).read_text(), packed_model_config(bundle / STORE_REL / MAR_NAME)[1]
    )
    if drift:  # cannot happen by construction; checked because a wrong snapshot is silent
        raise RuntimeError(f"model_snapshot disagrees with the archive: {drift}")
    print(f"[kserve] bundle {bundle}: upload it to your storageUri (docs/kubernetes.md)")
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(bundle)}  {path.stat().st_size / 1e6:.2f} MB")
    return bundle
