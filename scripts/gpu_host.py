#!/usr/bin/env python3
"""The GPU check on the borrowed GPU host: the host's own python3, PYTHONPATH=<repo>:<pack>,
nothing of our environment. Each stage writes one file into --out. See docs/gpu-check.md.

    PYTHONPATH=$PWD:/tmp/site python3 scripts/gpu_host.py --stage all --device cuda --out $OUT
    python scripts/gpu_host.py --stage all --device cpu --model tiny --quick --out /tmp/dry

The logic lives in :mod:`mmsent.harness.gpu_host`.
"""

import sys

from mmsent.harness.gpu_host import main

if __name__ == "__main__":
    sys.exit(main())
