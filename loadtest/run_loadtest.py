#!/usr/bin/env python
"""One command for a bounded, headless Locust run (REST and/or gRPC) with reports.

    python loadtest/run_loadtest.py --start-server --users 16 --run-time 60s

The logic lives in :mod:`mmsent.harness.loadtest` (``--help`` lists every option). Exit status:
0 on a clean run (requests answered, none failed), non-zero otherwise; the summary goes to
``summary.json`` in the results folder and a short table to the screen.
"""

import sys

from mmsent.harness.loadtest import main

if __name__ == "__main__":
    sys.exit(main())
