#!/usr/bin/env python
"""Call TorchServe over gRPC: predict (text and/or image), ping, list or describe models.

    python scripts/grpc_client.py predict --text 'Best concert' --image examples/party_popper.png

The logic lives in :mod:`mmsent.clients.grpc_cli` (``--help`` lists every option).
"""

import sys

from mmsent.clients.grpc_cli import main

if __name__ == "__main__":
    sys.exit(main())
