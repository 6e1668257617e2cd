#!/usr/bin/env python
"""Fault drill: what callers see when the worker is SIGKILLed under load, and under overload.

    python scripts/fault_drill.py --store <model_store>     # --help for all options

The logic lives in :mod:`mmsent.harness.drills`.
"""

import sys

from mmsent.harness.drills import main

if __name__ == "__main__":
    sys.exit(main())
