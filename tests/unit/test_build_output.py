"""What a newcomer reads when building an archive: no notice that looks like an error and isn't.

transformers logs "`loss_type=None` was set in the config but it is unrecognized. Using the
default loss: `ForCausalLMLoss`." when ``torch.jit.trace`` probes ``BertModel.loss_function``.
``mmsent.modeling.encoders`` drops exactly that message; the tests check it is gone from a real
build's
output and that the same logger's other messages still get through.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from conftest import TINY_ARGS
from mmsent.modeling.encoders import LOSS_TYPE_NOTICE, build_text_encoder

ROOT = Path(__file__).resolve().parents[2]


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
