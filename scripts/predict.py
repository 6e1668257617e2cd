#!/usr/bin/env python
"""Send one request to a running TorchServe over REST and print the JSON answer.

    python scripts/predict.py --text "what a day" --image examples/party_popper.png [--multipart]

The logic lives in :mod:`mmsent.clients.rest`.
"""

import sys

from mmsent.clients.rest import main

if __name__ == "__main__":
    sys.exit(main())
