#!/usr/bin/env python
"""Start (or stop) TorchServe exactly as docs/serving.md shows, and wait until the model is ready.

    python scripts/serve.py start   # or: stop

The logic lives in :mod:`mmsent.harness.serve` (``--help`` lists every option).
"""

import sys

from mmsent.harness.serve import main

if __name__ == "__main__":
    sys.exit(main())
