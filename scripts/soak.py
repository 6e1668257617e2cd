#!/usr/bin/env python
"""Soak test: steady load at ~80% of measured capacity for minutes; errors and memory over time.

    python scripts/soak.py --store <model_store> --minutes 10   # --help for all options

The logic lives in :mod:`mmsent.harness.soak`.
"""

import sys

from mmsent.harness.soak import main

if __name__ == "__main__":
    sys.exit(main())
