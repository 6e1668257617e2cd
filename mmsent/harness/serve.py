"""Start (or stop) TorchServe exactly as docs/serving.md shows, and wait until the model is ready.

  python scripts/serve.py start   # verify the archive's sha256, start, wait for a READY worker
  python scripts/serve.py stop

It runs `torchserve --start --ncs --model-store model_store --models NAME=NAME.mar
--ts-config config.properties`, which leaves the server running in the background (logs in
./logs). Stop it with `torchserve --stop`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from mmsent.clients.auth import KEY_FILE, bearer
from mmsent.config import DEFAULT_MODEL_NAME, DEFAULT_PORTS, WORKER_ENV
from mmsent.harness.torchserve import ROOT, describe_workers
from mmsent.packaging.archive import verify_sha256
from mmsent.wire.workers import count_ready

BIN = Path(sys.executable).parent


def wait_ready(management: str, model: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # under token authorization (config.production.properties) TorchServe writes the keys
        # into its working directory, which is the repo root here
        workers = describe_workers(management, model, bearer(ROOT / KEY_FILE, "management"))
        if count_ready(workers):
            return
        time.sleep(1)
    raise SystemExit(f"model {model} not ready after {timeout:.0f}s: see logs/model_log.log")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--config", default="config.properties")
    p.add_argument("--management", default=f"http://127.0.0.1:{DEFAULT_PORTS['management']}")
    p.add_argument("--timeout", type=float, default=240)
    args = p.parse_args(argv)
    if args.action == "stop":
        return subprocess.call([str(BIN / "torchserve"), "--stop"], cwd=ROOT)
    mar = ROOT / "model_store" / f"{args.model_name}.mar"
    verify_sha256(mar)
    print(f"[serve] {mar.name} sha256 verified")
    try:
        requests.get(f"{args.management}/models", timeout=2)
        raise SystemExit(f"something already listens on {args.management}: stop it first "
                         "(torchserve --stop)")
    except requests.ConnectionError:
        pass
    cmd = [str(BIN / "torchserve"), "--start", "--ncs", "--model-store", "model_store",
           "--models", f"{args.model_name}={mar.name}", "--ts-config", args.config]
    print("[serve] " + " ".join(["torchserve", *cmd[1:]]))
    (ROOT / "logs").mkdir(exist_ok=True)
    # The Java server outlives this script: give it its own session and a log file, never our
    # stdout/stderr (a pipe reading them would otherwise wait for the server to exit).
    with open(ROOT / "logs" / "console.log", "ab") as console:
        subprocess.run(cmd, cwd=ROOT, check=True, stdin=subprocess.DEVNULL, stdout=console,
                       stderr=subprocess.STDOUT, start_new_session=True,
                       env={**WORKER_ENV, **os.environ})  # fmt: skip
    start = time.monotonic()
    wait_ready(args.management, args.model_name, args.timeout)
    print(f"[serve] {args.model_name} ready in {time.monotonic() - start:.1f}s")
    return 0

