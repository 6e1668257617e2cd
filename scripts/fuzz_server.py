#!/usr/bin/env python
"""Fuzz a real TorchServe for N minutes with hostile raw HTTP and gRPC; write a JSON summary.

    python scripts/fuzz_server.py --minutes 10 [--seed 7] [--store <model_store>]

The logic lives in :mod:`mmsent.harness.fuzz_server` (``--help`` lists every option).
"""

import sys

from mmsent.harness.fuzz_server import main

if __name__ == "__main__":
    sys.exit(main())
