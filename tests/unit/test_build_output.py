"""What a newcomer reads when building an archive: no notice that looks like an error and isn't,
and no exporter chatter.

transformers logs "`loss_type=None` was set in the config but it is unrecognized. Using the
default loss: `ForCausalLMLoss`." when ``torch.jit.trace`` probes ``BertModel.loss_function``.
``mmsent.modeling.encoders`` drops exactly that message; the tests check it is gone from a real
build's output and that the same logger's other messages still get through.

The ONNX build printed ~200 lines of torch.onnx / onnxscript chatter ("Replaced initializer ...",
"Skipping constant folding ...") before its one useful line. ``mmsent.packaging.build`` now
routes everything the exporters print (Python logging, warnings, raw prints, C-level writes to
fds 1 and 2) to ``<out>/<model>.build.log``; the tests count the lines left on screen for the
ONNX command of docs/building.md and check each route lands in the file.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import TINY_ARGS
from mmsent.modeling.encoders import LOSS_TYPE_NOTICE, build_text_encoder
from mmsent.packaging.build import third_party_output_to

ROOT = Path(__file__).resolve().parents[2]
# the ONNX build of docs/building.md, used when that page no longer shows one in a bash block
ONNX_BUILD = "python scripts/build_archive.py --format onnx"
# on screen for the tiny ONNX build: the progress line with the log's path, the untrained-head
# warning, the model line, the export's own parity line, the result line
MAX_SCREEN_LINES = 5


def readme_onnx_build() -> str:
    """docs/building.md's ONNX build command (first ``bash`` block line with ``--format onnx``)."""
    text = (ROOT / "docs" / "building.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.partition("  #")[0].strip()
            if command.startswith("python scripts/build_archive.py") and "--format onnx" in command:
                return command
    return ONNX_BUILD


def test_archive_build_prints_no_loss_type_notice(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "scripts/build_archive.py", *TINY_ARGS, "--out", str(tmp_path / "s"),
         "--export-dir", str(tmp_path / "e"), "--model-name", "notice_check"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "exported" in output  # the build really traced the BERT encoder
    assert "loss_type" not in output and "ForCausalLMLoss" not in output, output


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_only_that_message_is_dropped() -> None:
    build_text_encoder("tiny")  # installs the filter
    logger = logging.getLogger("transformers.modeling_utils")  # transformers does not propagate
    collect = _Collect()
    logger.addHandler(collect)
    try:
        logger.warning(LOSS_TYPE_NOTICE + " Using the default loss: `ForCausalLMLoss`.")
        logger.warning("`loss_type=Foo` was set in the config but it is unrecognized.")
        logger.warning("Some weights of BertModel were not initialized")
    finally:
        logger.removeHandler(collect)
    assert len(collect.messages) == 2, collect.messages
    assert "loss_type=None" not in " ".join(collect.messages)


def test_onnx_build_prints_progress_not_exporter_chatter(tmp_path: Path) -> None:
    """The documented ONNX build on the tiny model: a handful of lines on screen, the exporters'
    output (hundreds of lines for the default model) in the log next to the archive."""
    command = shlex.split(readme_onnx_build())
    assert command[:2] == ["python", "scripts/build_archive.py"], command
    store = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, *command[1:], *TINY_ARGS, "--out", str(store), "--model-name", "onnx_out"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    screen = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(screen)
    log = store / "onnx_out.build.log"
    assert len(screen) <= MAX_SCREEN_LINES, "\n".join(screen)
    assert any(str(log) in line for line in screen), screen  # the screen says where it went
    assert any("model.onnx" in line and "onnx_out.mar" in line for line in screen), screen
    assert not any(re.search(r"Replaced initializer|constant folding|unused nodes", line)
                   for line in screen), screen  # fmt: skip
    logged = log.read_text().splitlines()
    assert len(logged) > 5 * MAX_SCREEN_LINES, logged  # the chatter is kept, not dropped
    assert any("exported" in line and "parity" in line for line in logged)


def test_every_route_lands_in_the_log(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Python prints, logging, warnings and C-level writes to fds 1 and 2 all go to the file;
    the project's own log lines still reach the screen; everything is restored afterwards."""
    log = tmp_path / "x.build.log"
    root, project = logging.getLogger(), logging.getLogger("mmsent.packaging.build")
    # as in the CLI: basicConfig's handler holds the process's real stderr, i.e. fd 2
    real_stderr = open(2, "w", closefd=False)  # noqa: SIM115 - fd 2 stays open
    handler = logging.StreamHandler(real_stderr)
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        with third_party_output_to(log) as record:
            print("python stdout")
            print("python stderr", file=sys.stderr)
            logging.getLogger("onnxscript.optimizer").info("third-party info")
            warnings.warn("third-party warning", UserWarning, stacklevel=1)
            ctypes.CDLL(None).printf(b"c stdio\n")  # buffered in C: flushed before restoring
            os.write(2, b"c fd 2\n")
            project.info("project line")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    print("after")
    screen = capfd.readouterr()
    text = log.read_text()
    for expected in ("python stdout", "python stderr", "third-party info", "third-party warning",
                     "c stdio", "c fd 2", "project line"):  # fmt: skip
        assert expected in text, expected
    assert record.warnings == 1 and record.lines == len(text.splitlines())
    assert "project line" in screen.err
    for gone in ("python stdout", "third-party", "c stdio", "c fd 2"):
        assert gone not in screen.out + screen.err, gone
    assert "after" in screen.out
