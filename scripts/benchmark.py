#!/usr/bin/env python
"""Does dynamic batching pay? In-process ceiling vs TorchServe, per batch size, on this machine.

    python scripts/benchmark.py [--quick] [--device cuda]   # --help for all options

The logic lives in :mod:`mmsent.harness.benchmark`.
"""

from mmsent.harness.benchmark import main

if __name__ == "__main__":
    main()
