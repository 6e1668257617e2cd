"""The documented calls, run exactly as written against a real TorchServe.

The commands are the ``bash`` blocks of the README's "Calling the model" section and of the
"REST" and "gRPC" sections of docs/calling.md; each is split into commands and run by bash from
the repository root. Only the address is adapted: ``127.0.0.1:8080`` becomes the test server's
inference port, and the two client scripts get the test server's URL / gRPC targets as extra
options. A documented example that stops working (like the bare-image curl that sent the image
as a urlencoded form and got a 500) fails here.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import MODEL_NAME
from mmsent.harness.torchserve import TorchServe

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
# (file, section heading): every bash command in these sections runs here
SECTIONS = (
    ("README.md", "## Calling the model"),
    ("docs/calling.md", "## REST: `/predictions`"),
    ("docs/calling.md", "## gRPC"),
)


def section_commands(path: str, heading: str) -> list[str]:
    """Every command in the section's ``bash`` blocks: continuations joined, comments cut; a
    trailing ``# also: a, b`` comment on a client command adds those sub-commands too."""
    text = (ROOT / path).read_text()
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command, _, comment = line.partition("  #")
            if command.strip():
                commands.append(command.strip())
            also = re.match(r"\s*also:\s*(.*)", comment)
            if also and command.strip():
                head = command.split()[:2]  # python scripts/x.py
                commands += [" ".join([*head, sub.strip()]) for sub in also.group(1).split(",")]
    return commands


def documented_commands() -> list[str]:
    """The sections' commands, each once (the README repeats some of docs/calling.md's)."""
    found = [c for path, heading in SECTIONS for c in section_commands(path, heading)]
    return list(dict.fromkeys(found))


COMMANDS = documented_commands()


def adapt(command: str, server: TorchServe) -> str:
    """Point a documented command at the test server; nothing else changes."""
    url = f"{server.inference_url}/predictions/{MODEL_NAME}"
    command = command.replace("http://127.0.0.1:8080", server.inference_url)
    command = command.replace("python scripts/", f"{sys.executable} scripts/")
    if "scripts/predict.py" in command:
        command += f" --url {url}"
    if "scripts/grpc_client.py" in command:
        command = command.replace(
            "scripts/grpc_client.py",
            f"scripts/grpc_client.py --target {server.grpc_target} "
            f"--management-target {server.grpc_management_target}",
        )
    return command


def test_the_sections_document_every_route() -> None:
    for path, heading in SECTIONS:
        assert section_commands(path, heading), (path, heading)
    joined = "\n".join(COMMANDS)
    for needle in ("application/json", "-F image=@", "--data-binary", "predict.py",
                   "--multipart", "grpc_client.py predict", "grpc_client.py list",
                   "/v2/models/"):  # fmt: skip
        assert needle in joined, needle
    assert len(COMMANDS) == 10, COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_documented_command_works_as_written(server: TorchServe, command: str) -> None:
    done = subprocess.run(["bash", "-c", adapt(command, server)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    answer: Any = json.loads(done.stdout)
    sent = {m for m, cue in (("text", "text"), ("image", ".png")) if cue in command}
    if "/v2/models/" in command:  # Open Inference: one row per item, outputs by name
        outputs = {out["name"]: out for out in answer["outputs"]}
        assert outputs["label"]["data"][0] in ("negative", "neutral", "positive"), answer
        assert outputs["probabilities"]["shape"] == [1, 3], answer
    elif re.search(r"predictions/|predict\.py| predict ", command):
        assert answer.get("label") in ("negative", "neutral", "positive"), answer
        assert set(answer["modalities"]) == sent, answer
    elif command.endswith(" ping"):
        assert "Healthy" in json.dumps(answer), answer
    else:  # list / describe
        assert MODEL_NAME in json.dumps(answer), answer


def test_the_old_bare_image_command_is_refused_by_the_frontend(server: TorchServe) -> None:
    """Pins why the docs set the Content-Type: curl's default for ``--data-binary`` is
    ``application/x-www-form-urlencoded``, TorchServe's Java frontend form-decodes the PNG and
    fails with a 500 before any Python runs (not fixable in the handler or the config)."""
    old = (f"curl -s -w '\\n%{{http_code}}' {server.inference_url}/predictions/{MODEL_NAME} "
           "--data-binary @examples/party_popper.png")  # fmt: skip
    done = subprocess.run(["bash", "-c", old], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    body, status = done.stdout.rsplit("\n", 1)
    assert status == "500", done.stdout
    assert json.loads(body)["type"] == "ErrorDataDecoderException"


# -- every documented script command ----------------------------------------------------------
# The bash blocks of README.md and docs/*.md show the project's script commands (`python
# scripts/...`, `bash scripts/...`, `python loadtest/...`). Each one goes to the first Route whose
# pattern it matches: a test that runs it and checks its exit status, or a stated reason why the
# suite does not. A documented command that no Route matches fails
# test_every_documented_command_is_run_or_excused, so a new one cannot go untested unnoticed.
# Commands are adapted only where they must be: the test server's addresses, outputs into a temp
# folder (never weights/, results/, data/, docs/ or model_store/), the tiny model, a tiny dataset,
# short run times; documented commands that differ only in such sizes run once.

SCRIPT_COMMAND = re.compile(r"^(python (scripts|loadtest)/|bash scripts/)")
EXPLAIN_CURL = re.compile(r"^curl .*/explanations/")  # in the same block as explain.py
# options whose values only size a run: commands differing in them alone run once
SIZING = frozenset({
    "--users", "-u", "--spawn-rate", "-r", "--run-time", "-t", "--step-users", "--step-seconds",
    "--steps", "--seed", "--epochs", "--served-seconds",
})  # fmt: skip
# what the tests train, evaluate and build with instead of the full encoders
TINY_TRAIN = ["--text-encoder", "tiny", "--image-backbone", "mobilenet_v3_small",
              "--image-weights", "random", "--image-size", "64", "--resize-size", "73",
              "--epochs", "1"]  # fmt: skip
PROTECTED = ("weights/", "results/", "data/", "docs/", "model_store/", "build/")


@dataclass(frozen=True)
class Route:
    """Where a documented command runs: ``runner`` (a test in this module, or ``file::test``),
    or, when ``runner`` is empty, ``why_not``."""

    pattern: str
    runner: str
    why_not: str = ""


ROUTES = (
    Route(r"^python scripts/(predict|grpc_client)\.py", "test_documented_command_works_as_written"),
    Route(r"^(python scripts/explain\.py|curl .*/explanations/)", "test_explain_commands"),
    Route(r"^python scripts/build_archive\.py .*--format onnx",
          "tests/unit/test_build_output.py::test_onnx_build_prints_progress_not_exporter_chatter"),
    Route(r"^python scripts/build_archive\.py", "test_build_archive_commands"),
    Route(r"^python scripts/build_kserve_bundle\.py", "test_kserve_bundle_commands"),
    Route(r"^python loadtest/run_loadtest\.py", "test_loadtest_commands"),
    Route(r"^python scripts/benchmark\.py (--quick|--render)", "test_benchmark_commands"),
    Route(r"^python scripts/benchmark\.py .*--device cuda", "",
          "needs a CUDA GPU: `bash scripts/gpu_check.sh bench` runs it on a GPU host; its CPU "
          "twin (`--device cpu ... --quick`) takes ~3 min here"),
    Route(r"^python scripts/benchmark\.py", "",
          "minutes each (full batching sweep ~6 min, runtime comparison, CPU device sweep ~3 min "
          "quick); test_benchmark_sweeps_in_process_step runs the in-process step they share"),
    Route(r"^python scripts/build_dataset\.py", "test_build_dataset_commands"),
    Route(r"^python scripts/train\.py", "test_train_commands"),
    Route(r"^python scripts/evaluate\.py", "test_evaluate_commands"),
    # a server that runs until stopped: started exactly so (``--mar``, a free ``--port``) there
    Route(r"^python scripts/compare_engines\.py",
          "tests/integration/test_engine_tools.py::test_compare_engines_smoke"),
    Route(r"^python scripts/recommend_batching\.py",
          "tests/integration/test_engine_tools.py::test_recommend_batching_smoke"),
    Route(r"^python scripts/serve_litserve\.py",
          "tests/integration/test_litserve.py::test_health_and_ping"),
    Route(r"^python scripts/serve\.py", "",
          "serves the repository's model_store/ on config.properties' fixed ports, and `stop` is "
          "`torchserve --stop`, which stops whichever TorchServe wrote its one pid file (on a "
          "shared runner, another job's); the harness's TorchServe runs the same server here"),
    Route(r"^bash scripts/quickstart\.sh", "",
          "installs system packages, builds the full model into model_store/ and leaves "
          "TorchServe running on the fixed ports; its build_archive.py and predict.py run here "
          "(serve.py: above)"),
    Route(r"^bash scripts/test\.sh", "", "the suite's own command (CI runs it): its exit "
                                         "status is this suite's"),  # fmt: skip
    Route(r"^bash scripts/reproduce_training\.sh", "",
          "~1.7 h on 2 cores; its commands (build_dataset.py, train.py, evaluate.py) run here "
          "on a tiny dataset"),
    Route(r"^bash scripts/gpu_check\.sh", "", "needs a CUDA GPU (it exits 2 without one)"),
    # its module fixture builds the pack through the script's main() and checks it returns 0
    Route(r"^python scripts/gpu_pack\.py",
          "tests/unit/test_gpu_pack.py::test_one_wheel_per_pin_for_the_hosts_python"),
)


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def bash_block_commands(path: Path) -> list[str]:
    """The commands of a file's ``bash`` blocks: continuations joined, comments cut."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.split(r"\s+#(?:\s|$)", line, maxsplit=1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def all_documented() -> list[tuple[str, str]]:
    """(file, command) for every script command (and the explanation curl) in the docs."""
    return [(str(path.relative_to(ROOT)), command) for path in doc_files()
            for command in bash_block_commands(path)
            if SCRIPT_COMMAND.match(command) or EXPLAIN_CURL.match(command)]  # fmt: skip


DOCUMENTED = all_documented()


def route(command: str) -> Route | None:
    return next((r for r in ROUTES if re.search(r.pattern, command)), None)


def signature(command: str) -> tuple[str, ...]:
    """The script, its sub-command and its option names, sizes left out."""
    argv = shlex.split(command)
    rest = argv[2:]
    sub = rest[:1] if rest and not rest[0].startswith("-") else []
    options = sorted({arg.split("=")[0] for arg in rest if arg.startswith("-")} - SIZING)
    return (*argv[:2], *sub, *options)


def runs(runner: str, fallback: tuple[str, ...] = (), same: Any = signature) -> list[str]:
    """The documented commands routed to ``runner``, one per ``same(command)``; ``fallback``
    when the docs show none (the script still gets run)."""
    chosen: dict[Any, str] = {}
    for _, command in DOCUMENTED:
        found = route(command)
        if found is not None and found.runner == runner:
            chosen.setdefault(same(command), command)
    return list(chosen.values()) or list(fallback)


def python_argv(command: str) -> list[str]:
    argv = shlex.split(command)
    assert argv[0] == "python", command
    return [sys.executable, *argv[1:]]


def set_option(argv: list[str], name: str, value: str) -> None:
    """Replace the value of ``name`` in ``argv``, or add the option."""
    if name in argv:
        argv[argv.index(name) + 1] = value
    else:
        argv += [name, value]


def run_ok(argv: list[str], tmp: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run from the repository root; exit status 0 required. Refuses (before running) an argv
    that still names one of the repository's own output folders."""
    for arg in argv[2:]:
        named = arg.replace(str(ROOT) + "/", "")
        assert str(tmp) in arg or not named.startswith(PROTECTED), f"writes into the repo: {arg}"
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (f"exit {done.returncode}: {shlex.join(argv)}\n"
                                  f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")  # fmt: skip
    return done


def test_every_documented_command_is_run_or_excused() -> None:
    """Every documented script command has a Route; the calling ones really are in the list
    test_documented_command_works_as_written runs; every runner named exists."""
    assert any("run_loadtest.py" in c for _, c in DOCUMENTED), "no commands found: parser broken"
    missing = [f"{path}: {command}" for path, command in DOCUMENTED if route(command) is None]
    assert not missing, ("documented, not run by any test, no reason given (add a Route):\n"
                         + "\n".join(missing))  # fmt: skip
    for path, command in DOCUMENTED:
        found = route(command)
        if found is not None and found.runner == "test_documented_command_works_as_written":
            assert command in COMMANDS, f"{path}: {command} is outside the sections run above"
    for r in ROUTES:
        assert r.runner or r.why_not, r
        test_file, _, name = r.runner.rpartition("::")
        if name:
            source = (ROOT / test_file).read_text() if test_file else Path(__file__).read_text()
            assert f"def {name}(" in source, r.runner


# -- the runners ----------------------------------------------------------------------------------
LOADTEST = runs("test_loadtest_commands", fallback=(
    "python loadtest/run_loadtest.py --start-server --users 16 --run-time 60s",
    "python loadtest/run_loadtest.py --host http://127.0.0.1:8080 --grpc-target 127.0.0.1:7070 "
    "--users 16 --run-time 60s --payload-mix 'text=1,image-small=1,both-small=4,both-large=1'",
    "python loadtest/run_loadtest.py --start-server --step-shape --step-users 4 --steps 5",
))  # fmt: skip


@pytest.mark.parametrize("command", LOADTEST)
def test_loadtest_commands(command: str, server: TorchServe, tiny_build: tuple[Path, Path],
                           tmp_path: Path) -> None:  # fmt: skip
    """The load-test runner as documented: exit 0 on a clean run, a table on screen (never the
    summary dict) and the summary in summary.json. Against the test server (``--host``) or a
    TorchServe it starts itself on the tiny archive (``--start-server``), a few seconds long."""
    argv = python_argv(command.replace("http://127.0.0.1:8080", server.inference_url)
                       .replace("127.0.0.1:7070", server.grpc_target))  # fmt: skip
    set_option(argv, "--run-time", "6s")
    if "--step-shape" in argv:
        set_option(argv, "--step-seconds", "2")
        set_option(argv, "--steps", "3")
    if "--host" in argv:
        set_option(argv, "--metrics-url", server.metrics_url)
    if "--start-server" in argv:
        set_option(argv, "--model-store", str(tiny_build[0]))
    set_option(argv, "--results", str(tmp_path / "out"))
    done = run_ok(argv, tmp_path, timeout=300)
    assert "{'" not in done.stdout and len(done.stdout.splitlines()) < 30, done.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["verdict"]["exit_code"] == 0, summary["verdict"]
    assert summary["by_name"]["Aggregated"]["requests"] > 0
    assert "[loadtest] ok: " in done.stdout


EXPLAIN = runs("test_explain_commands", fallback=(
    'python scripts/explain.py --text "My flight was cancelled" --out flight.png',
    'python scripts/explain.py --model-dir /tmp/xexport --text "..." --image x.png --out x.html',
))  # fmt: skip


@pytest.mark.parametrize("command", EXPLAIN)
def test_explain_commands(command: str, server: TorchServe, tiny_build: tuple[Path, Path],
                          tmp_path: Path) -> None:  # fmt: skip
    """The explanation curl and scripts/explain.py, via the test server or in process on the
    tiny export; the picture must be written."""
    if command.startswith("curl "):
        done = subprocess.run(["bash", "-c", command.replace("http://127.0.0.1:8080",
                                                             server.inference_url)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer.get("label") in ("negative", "neutral", "positive"), answer
        assert "explanation" in answer, answer
        return
    argv = python_argv(command)
    out = tmp_path / Path(argv[argv.index("--out") + 1]).name
    set_option(argv, "--out", str(out))
    if "--model-dir" in argv:
        set_option(argv, "--model-dir", str(tiny_build[1]))
    elif "--archive" not in argv:
        set_option(argv, "--url", f"{server.inference_url}/explanations/{MODEL_NAME}")
    if "--image" in argv and not (ROOT / argv[argv.index("--image") + 1]).is_file():
        set_option(argv, "--image", "examples/angry_face.png")  # the docs' placeholder
    done = run_ok(argv, tmp_path, timeout=180)
    assert out.stat().st_size > 0 and f"wrote {out}" in done.stdout, done.stdout


@pytest.fixture(scope="module")
def tiny_head(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A head trained for one epoch on the tiny dataset with the tiny encoders (best.pt)."""
    out = tmp_path_factory.mktemp("tiny_head")
    run_ok([sys.executable, "scripts/train.py", "--manifest", str(tiny_dataset), "--out-dir",
            str(out), "--cache-dir", str(out / "cache"), *TINY_TRAIN], out)  # fmt: skip
    return out / "best.pt"


@pytest.fixture(scope="module")
def local_encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stand-ins for the docs' ``/path/to/...`` files: a Hugging Face BERT folder (the tiny
    random BERT with MiniLM's tokenizer files) and a random torchvision ResNet-50 state dict."""
    import torch
    import torchvision

    from mmsent.modeling.encoders import build_text_encoder, tokenizer_dir

    root = tmp_path_factory.mktemp("local_encoders")
    bert, _ = build_text_encoder("tiny")
    bert.save_pretrained(root / "bert")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):  # fmt: skip
        if (tokenizer_dir("tiny") / name).is_file():
            shutil.copy(tokenizer_dir("tiny") / name, root / "bert" / name)
    torch.save(torchvision.models.resnet50().state_dict(), root / "resnet50.pth")
    return {"bert": root / "bert", "resnet50": root / "resnet50.pth"}


BUILD = runs("test_build_archive_commands", fallback=("python scripts/build_archive.py",))


@pytest.mark.parametrize("command", BUILD)
def test_build_archive_commands(command: str, tiny_head: Path, local_encoders: dict[str, Path],
                                tmp_path: Path) -> None:  # fmt: skip
    """scripts/build_archive.py as documented (the default build is the full model, ~10 s):
    a .mar with its sha256 and the build log, and a short screen."""
    argv = python_argv(command)
    if "--checkpoint" in argv:
        set_option(argv, "--checkpoint", str(tiny_head))
    for option, stand_in in (("--text-encoder", "bert"), ("--image-weights", "resnet50")):
        if option in argv and argv[argv.index(option) + 1].startswith("/path/"):
            set_option(argv, option, str(local_encoders[stand_in]))
    set_option(argv, "--out", str(tmp_path / "store"))
    done = run_ok(argv, tmp_path)
    mar = tmp_path / "store" / f"{MODEL_NAME}.mar"
    assert mar.is_file() and Path(f"{mar}.sha256").is_file()
    assert (tmp_path / "store" / f"{MODEL_NAME}.build.log").is_file()
    screen = (done.stdout + done.stderr).splitlines()
    assert len(screen) <= 6, screen


def _kserve_as_run(command: str) -> str:
    """What actually runs: the tiny model unless the command packs a given archive."""
    return command if "--archive" in command or "--tiny" in command else f"{command} --tiny"


KSERVE = runs("test_kserve_bundle_commands", fallback=("python scripts/build_kserve_bundle.py",),
              same=lambda c: signature(_kserve_as_run(c)))  # fmt: skip


@pytest.mark.parametrize("command", KSERVE)
def test_kserve_bundle_commands(command: str, tiny_build: tuple[Path, Path],
                                tmp_path: Path) -> None:  # fmt: skip
    """The KServe bundle builder on the tiny model (or the tiny archive for ``--archive``)."""
    argv = python_argv(_kserve_as_run(command))
    if "--archive" in argv:
        set_option(argv, "--archive", str(tiny_build[0] / f"{MODEL_NAME}.mar"))
    set_option(argv, "--out", str(tmp_path / "bundle"))
    done = run_ok(argv, tmp_path)
    assert (tmp_path / "bundle" / "model-store" / f"{MODEL_NAME}.mar").is_file(), done.stdout
    assert (tmp_path / "bundle" / "config" / "config.properties").is_file()


BENCHMARK = runs("test_benchmark_commands", fallback=("python scripts/benchmark.py --quick",))


@pytest.fixture(scope="module")
def quick_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documented ``--quick`` run (full model, batch 1 and 8, served 3 s per size instead
    of 8: ~1 min); returns its output folder."""
    out = tmp_path_factory.mktemp("benchmark")
    quick = next((c for c in BENCHMARK if "--quick" in c), "python scripts/benchmark.py --quick")
    argv = python_argv(quick)
    set_option(argv, "--served-seconds", "3")
    set_option(argv, "--out", str(out))
    run_ok(argv, out, timeout=480)
    return out


@pytest.mark.parametrize("command", BENCHMARK)
def test_benchmark_commands(command: str, quick_benchmark: Path, tmp_path: Path) -> None:
    """``--quick`` (run by the fixture) writes its JSON, Markdown and plot; ``--render`` redraws
    them from that JSON."""
    if "--render" in command:
        argv = python_argv(command)
        copy = tmp_path / "benchmark.json"
        shutil.copy(quick_benchmark / "benchmark.json", copy)
        set_option(argv, "--render", str(copy))
        run_ok(argv, tmp_path)
        folder = tmp_path
    else:
        folder = quick_benchmark
    for name in ("benchmark.json", "benchmark.md", "benchmark.png"):
        assert (folder / name).stat().st_size > 0, name


def test_benchmark_sweeps_in_process_step(tiny_build: tuple[Path, Path]) -> None:
    """The in-process measurement that ``--runtimes`` and ``--device`` share (those sweeps take
    minutes, so the suite runs this step alone, on the tiny export)."""
    from mmsent.harness.benchmark import measure_in_process
    from mmsent.harness.workload import make_payloads
    from mmsent.serving.pipeline import SentimentPipeline

    pipeline = SentimentPipeline.from_dir(tiny_build[1])
    bodies = [p.json_body for p in make_payloads(1)["both-small"]]
    row = measure_in_process(pipeline, bodies, 2, 0.05)
    assert row["pipeline_items_s"] > 0


DATASET = runs("test_build_dataset_commands", fallback=(
    "python scripts/build_dataset.py emoji-tweets --out data/emoji_tweets --seed 0",
))  # fmt: skip


def _fake_mvsa(root: Path) -> Path:
    """A minimal MVSA-Single folder (labelResultAll.txt + data/<id>.txt/.jpg)."""
    from PIL import Image

    (root / "data").mkdir(parents=True)
    labels = ["positive,positive", "negative,negative", "neutral,positive", "negative,neutral"]
    (root / "labelResultAll.txt").write_text(
        "ID\ttext,image\n" + "".join(f"{i}\t{cells}\n" for i, cells in enumerate(labels, 1)))
    for i in range(1, len(labels) + 1):
        (root / "data" / f"{i}.txt").write_text(f"tweet number {i}")
        Image.new("RGB", (8, 8), (40 * i, 20, 30)).save(root / "data" / f"{i}.jpg")
    return root


@pytest.mark.parametrize("command", DATASET)
def test_build_dataset_commands(command: str, tmp_path: Path) -> None:
    """The dataset builders: emoji-tweets as documented (~20 s), MVSA on a fabricated folder
    (the real one is a download)."""
    argv = python_argv(command)
    if "--root" in argv:
        set_option(argv, "--root", str(_fake_mvsa(tmp_path / "mvsa")))
    set_option(argv, "--out", str(tmp_path / "out"))
    run_ok(argv, tmp_path)
    assert (tmp_path / "out" / "manifest.jsonl").stat().st_size > 0


TRAIN = runs("test_train_commands", fallback=(
    "python scripts/train.py --manifest data/emoji_tweets/manifest.jsonl --fusion attention "
    "--image-input evidence --balance none --out-dir results/attention "
    "--save-to weights/default_head.pt",
))  # fmt: skip


@pytest.mark.parametrize("command", TRAIN)
def test_train_commands(command: str, tiny_dataset: Path, tmp_path: Path) -> None:
    """scripts/train.py with the documented options, on the tiny dataset with the tiny encoders
    for one epoch; ``--save-to`` (weights/default_head.pt in the docs) goes to the temp folder."""
    argv = python_argv(command)
    set_option(argv, "--manifest", str(tiny_dataset))
    set_option(argv, "--out-dir", str(tmp_path / "run"))
    if "--save-to" in argv:
        set_option(argv, "--save-to", str(tmp_path / "saved.pt"))
    argv += ["--cache-dir", str(tmp_path / "cache"), *TINY_TRAIN]
    run_ok(argv, tmp_path)
    assert (tmp_path / "run" / "best.pt").is_file()
    assert "--save-to" not in argv or (tmp_path / "saved.pt").is_file()


EVALUATE = runs("test_evaluate_commands", fallback=(
    'python scripts/evaluate.py --manifest data/emoji_tweets/manifest.jsonl '
    '--model "mine=results/mine/best.pt" --out results/mine_eval',
))  # fmt: skip


@pytest.mark.parametrize("command", EVALUATE)
def test_evaluate_commands(command: str, tiny_dataset: Path, tiny_head: Path,
                           tmp_path: Path) -> None:  # fmt: skip
    """scripts/evaluate.py with the documented options: every ``NAME=CHECKPOINT`` is the tiny
    head, splits the tiny dataset lacks are dropped, ``--docs`` (docs/eval) goes to the temp
    folder, ``--export-agreement`` checks 20 examples instead of 300."""
    argv = python_argv(command)
    for i, arg in enumerate(argv[:-1]):
        if arg in ("--model", "--baseline"):
            argv[i + 1] = f"{argv[i + 1].partition('=')[0]}={tiny_head}"
    if "--splits" in argv:
        present = {json.loads(line)["split"] for line in tiny_dataset.read_text().splitlines()}
        start = argv.index("--splits") + 1
        end = next((i for i in range(start, len(argv)) if argv[i].startswith("--")), len(argv))
        argv[start:end] = [s for s in argv[start:end] if s in present] or ["test"]
    if "--export-agreement" in argv:
        set_option(argv, "--export-agreement", "20")
    if "--docs" in argv:
        set_option(argv, "--docs", str(tmp_path / "docs"))
    set_option(argv, "--manifest", str(tiny_dataset))
    set_option(argv, "--out", str(tmp_path / "eval"))
    set_option(argv, "--cache-dir", str(tmp_path / "cache"))
    run_ok(argv, tmp_path)
    assert (tmp_path / "eval" / "report.md").stat().st_size > 0


SHELL = sorted({c.split()[1] for _, c in DOCUMENTED if c.startswith("bash scripts/")})


@pytest.mark.parametrize("script", SHELL)
def test_documented_shell_scripts_parse(script: str) -> None:
    """The documented shell commands the suite cannot run (see ROUTES) at least parse."""
    done = subprocess.run(["bash", "-n", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
