"""TorchServe vs LitServe on the same archive, client and load, in one run (JSON + Markdown).

  python scripts/compare_engines.py --mar model_store/fusion_sentiment.mar --rounds 2
  python scripts/compare_engines.py --smoke   # seconds; checks the output's shape (CI)
"""

import sys

from mmsent.harness.engines import main

if __name__ == "__main__":
    sys.exit(main())
