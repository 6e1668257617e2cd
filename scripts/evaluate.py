#!/usr/bin/env python
"""Evaluate trained heads: see ``python scripts/evaluate.py --help`` and docs/training.md."""

from __future__ import annotations

from mmsent.evaluation.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
