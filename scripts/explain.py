#!/usr/bin/env python
"""Explain one answer as a picture: words highlighted by score, the image under its region map.

    python scripts/explain.py --text "Oh great, another two hour delay" \\
        --image examples/angry_face.png --out irony.png          # against a running server
    python scripts/explain.py --model-dir <export> --text "..." --out x.html   # in process

The logic lives in :mod:`mmsent.evaluation.explain_picture` (``--help`` lists every option).
"""

import sys

from mmsent.evaluation.explain_picture import main

if __name__ == "__main__":
    sys.exit(main())
