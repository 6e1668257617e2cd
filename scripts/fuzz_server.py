#!/usr/bin/env python
"""Fuzz a real TorchServe for N minutes with hostile raw HTTP and gRPC; write a JSON summary.

Starts its own TorchServe on free loopback ports (never touches a running one), serving the
archive in ``--store`` (default: builds the tiny test archive, which runs the same handler and
pipeline as the default model, in seconds). See mmsent/fuzz_server.py for what is sent and
checked, docs/RELIABILITY.md "Byte-level fuzzing of the server" for recorded runs.

    python scripts/fuzz_server.py --minutes 5 --seed 1      # -> results/fuzz-server-<ts>.json
    python scripts/fuzz_server.py --store /tmp/store --minutes 30

Exit status 1 when any rule was broken (5xx, a crash, a wrong batch-mate answer, a wedge).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from mmsent.archive import DEFAULT_MODEL_NAME  # noqa: E402
from mmsent.fuzz_server import ServerFuzzer, Summary  # noqa: E402
from mmsent.torchserve_launcher import TorchServe  # noqa: E402

TINY_ARGS = [
    "--untrained", "--text-encoder", "tiny", "--image-backbone", "mobilenet_v3_small",
    "--image-weights", "random", "--image-size", "64",
]  # fmt: skip  (the same tiny model as tests/conftest.py)


def build_tiny_store(out: Path, model: str) -> Path:
    """Build the tiny archive (seconds) into ``out``; returns the store folder."""
    import torch
    from build_archive import main as build_main

    torch.manual_seed(0)
    build_main([*TINY_ARGS, "--out", str(out / "store"), "--export-dir", str(out / "export"),
                "--model-name", model])  # fmt: skip
    return out / "store"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store", type=Path, default=None, help="folder holding <model>.mar")
    p.add_argument("--model", default=DEFAULT_MODEL_NAME)
    p.add_argument("--out", type=Path, default=None, help="summary JSON path")
    args = p.parse_args(argv)
    out = args.out or ROOT / "results" / f"fuzz-server-{time.strftime('%Y%m%d-%H%M%S')}.json"
    with tempfile.TemporaryDirectory(prefix="fuzz-server-") as tmp:
        store = args.store or build_tiny_store(Path(tmp), args.model)
        with TorchServe(store, {args.model: f"{args.model}.mar"}) as ts:
            fuzzer = ServerFuzzer(ts.ports.inference, ts.grpc_target, args.model,
                                  lambda: ts.worker_pids(args.model), seed=args.seed)  # fmt: skip

            def progress(summary: Summary) -> None:
                if summary.rounds % 100 == 0:
                    print(f"[fuzz] {summary.rounds} rounds, {len(summary.violations)} violations",
                          flush=True)  # fmt: skip

            try:
                summary = fuzzer.run(args.minutes * 60, progress)
            finally:
                fuzzer.close()
    result = summary.as_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("ok", "seconds", "rounds", "http_requests",
                                             "grpc_requests", "mates_checked", "mates_wrong",
                                             "worker_pids_seen")}))  # fmt: skip
    print(f"[fuzz] summary: {out}")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
