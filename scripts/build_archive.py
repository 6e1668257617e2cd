#!/usr/bin/env python
"""Build model_store/<name>.mar from the default (trained) model or the one the flags name.

    python scripts/build_archive.py                       # default model, trained head
    python scripts/build_archive.py --precision fp16      # serving precision in the archive
    python scripts/build_archive.py --help                # every option
"""

from mmsent.packaging.build import main

if __name__ == "__main__":
    main()
