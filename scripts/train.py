#!/usr/bin/env python
"""Train a fusion head: see ``python scripts/train.py --help`` and docs/training.md."""

from __future__ import annotations

from mmsent.training.train import main

if __name__ == "__main__":
    raise SystemExit(main())
