#!/usr/bin/env python
"""Build the GPU pack: the wheels the borrowed GPU host lacks, a vocab-only MiniLM stand-in,
and a size report of what one run sends (fails over 60 MiB). See docs/gpu-check.md.

    python scripts/gpu_pack.py --out gpu_pack        # --help for every option

The logic lives in :mod:`mmsent.harness.gpu_pack`.
"""

import sys

from mmsent.harness.gpu_pack import main

if __name__ == "__main__":
    sys.exit(main())
