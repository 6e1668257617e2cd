"""The .mar carries everything serving needs, and nothing of the model's class code."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from conftest import MODEL_NAME
from mmsent.packaging.archive import (
    PACKAGE,
    SERVING_FILES,
    SERVING_PACKAGES,
    sha256_of,
    verify_sha256,
)


def test_archive_python_is_the_serving_folder_plus_the_handler(
    tiny_build: tuple[Path, Path],
) -> None:
    """The .mar's Python is exactly mmsent/serving/ and mmsent/wire/ (whole), config, errors and
    the handler: no model class code, nothing from modeling/, training/ or the harness."""
    store, _ = tiny_build
    names = set(zipfile.ZipFile(store / f"{MODEL_NAME}.mar").namelist())
    for required in ("model.pt", "model_config.json", "vocab.txt", "tokenizer.json",
                     "fusion_handler.py", "model-config.yaml", "MAR-INF/MANIFEST.json"):
        assert required in names, required
    serving = {f"mmsent/{pkg}/{p.name}" for pkg in SERVING_PACKAGES
               for p in (PACKAGE / pkg).glob("*.py")}  # fmt: skip
    expected = serving | {f"mmsent/{name}" for name in SERVING_FILES} | {"fusion_handler.py"}
    assert {n for n in names if n.endswith(".py")} == expected


def test_sha256_sidecar_detects_tampering(tiny_build: tuple[Path, Path], tmp_path: Path) -> None:
    store, _ = tiny_build
    mar = store / f"{MODEL_NAME}.mar"
    verify_sha256(mar)
    copy = tmp_path / mar.name
    copy.write_bytes(mar.read_bytes() + b"tampered")
    (tmp_path / f"{mar.name}.sha256").write_text(f"{sha256_of(mar)}  {mar.name}\n")
    with pytest.raises(RuntimeError, match="does not match"):
        verify_sha256(copy)
