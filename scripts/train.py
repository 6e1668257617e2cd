#!/usr/bin/env python
"""Train a fusion head: see ``python scripts/train.py --help`` and docs/TRAINING.md."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmsent.train import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
