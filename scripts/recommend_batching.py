"""Recommend batchSize / maxBatchDelay / workers for a p95 latency target on this host.

  python scripts/recommend_batching.py --target-p95-ms 400 --concurrency 24
  python scripts/recommend_batching.py --target-p95-ms 400 --smoke   # CI: output shape only
"""

import sys

from mmsent.harness.recommend import main

if __name__ == "__main__":
    sys.exit(main())
