"""Package an exported model folder into a TorchServe ``.mar`` with torch-model-archiver.

The archive is self-contained for serving: model file (TorchScript or ONNX), handler, tokenizer
files, ``model_config.json``, the per-model batching config and the *serving* modules of mmsent
(no model class code). A ``.sha256`` file is written beside it so deployments can verify it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mmsent.config import DEFAULT_MODEL_NAME, ModelConfig

PACKAGE = Path(__file__).resolve().parents[1]  # mmsent/
ROOT = PACKAGE.parent  # the repository (handlers/ lives there)
HANDLER = ROOT / "handlers" / "fusion_handler.py"
MODEL_CONFIG_YAML = ROOT / "handlers" / "model-config.yaml"
# What the handler imports at serving time: the serving/ and wire/ folders, whole, and the two
# modules they may import (import-linter's contracts keep serving/ from importing anything
# else). No model class code: modeling/ deliberately stays out. (serving/explain.py needs
# captum in the serving environment, but only for /explanations.)
SERVING_FILES = ("__init__.py", "config.py", "errors.py")
SERVING_PACKAGES = ("serving", "wire")


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(mar: str | Path) -> None:
    """Raise if ``<mar>.sha256`` is missing or does not match the archive."""
    mar = Path(mar)
    sidecar = mar.with_name(mar.name + ".sha256")
    if not sidecar.exists():
        raise FileNotFoundError(f"{sidecar} missing: rebuild the archive with build_archive.py")
    expected = sidecar.read_text().split()[0]
    actual = sha256_of(mar)
    if actual != expected:
        raise RuntimeError(f"{mar} sha256 {actual} does not match {sidecar} ({expected})")


def build_archive(
    export_dir: str | Path,
    out_dir: str | Path,
    model_name: str = DEFAULT_MODEL_NAME,
    version: str = "1.0",
    model_config_yaml: str | Path = MODEL_CONFIG_YAML,
) -> Path:
    """Run torch-model-archiver over ``export_dir``; returns the ``.mar`` path."""
    export_dir = Path(export_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The archiver copies a directory's *contents*, so stage the package one level down.
    staging = export_dir.parent / f"{export_dir.name}-serving-code"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "mmsent").mkdir(parents=True)
    for name in SERVING_FILES:
        shutil.copy2(PACKAGE / name, staging / "mmsent" / name)
    for package in SERVING_PACKAGES:
        shutil.copytree(PACKAGE / package, staging / "mmsent" / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    model_file = export_dir / ModelConfig.load(export_dir).model_filename  # model.pt | .onnx
    extras = [p for p in sorted(export_dir.iterdir()) if p != model_file] + [staging]
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    cmd = [
        str(archiver) if archiver.exists() else "torch-model-archiver",
        "--model-name", model_name,
        "--version", version,
        "--serialized-file", str(model_file),
        "--handler", str(HANDLER),
        "--extra-files", ",".join(str(p) for p in extras),
        "--config-file", str(model_config_yaml),
        "--export-path", str(out_dir),
        "--force",
    ]  # fmt: skip
    # torch-model-archiver stages files in $TMPDIR/<model_name>: two builds of the same model
    # name at once (a test run beside a build) would mix their files. A private TMPDIR each.
    private_tmp = tempfile.mkdtemp(prefix="archiver-")
    try:
        subprocess.run(cmd, check=True, env={**os.environ, "TMPDIR": private_tmp})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(private_tmp, ignore_errors=True)
    mar = out_dir / f"{model_name}.mar"
    mar.with_name(mar.name + ".sha256").write_text(f"{sha256_of(mar)}  {mar.name}\n")
    return mar
