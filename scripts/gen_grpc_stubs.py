#!/usr/bin/env python
"""Generate TorchServe's gRPC Python stubs into the gitignored ``mmsent/clients/grpc_stubs``.

Why generate instead of committing: the ``.proto`` files must match the *installed* TorchServe
exactly, and they ship inside its frontend jar. Reading them from there means an upgrade of the
pinned ``torchserve`` can never leave stale hand-copied stubs behind. Called by
``scripts/setup_env.sh`` and, lazily, by :mod:`mmsent.clients.grpc` on first import.

Usage: ``python scripts/gen_grpc_stubs.py [--out DIR] [--force]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmsent.clients.grpc_codegen import DEFAULT_OUT, generate_stubs

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="package folder to write")
    p.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = p.parse_args(argv)
    out = generate_stubs(args.out, force=args.force)
    print(f"[grpc] stubs in {out}")
    return out


if __name__ == "__main__":
    main()
