"""``python -m mmsent.gateway``: wait for TorchServe's worker, then serve v2 REST and gRPC.

In the KServe pod (deploy/kserve/clusterservingruntime.yaml) this runs after
``torchserve --start``; the local rehearsal (mmsent.harness.kserve_pod) runs it on free ports.
"""

from __future__ import annotations

import argparse
import sys

from mmsent.config import MAX_MESSAGE_BYTES
from mmsent.gateway.defaults import (
    GATEWAY_GRPC_PORT,
    GATEWAY_HTTP_PORT,
    MODEL_NAME,
    REQUEST_TIMEOUT_S,
    STARTUP_TIMEOUT_S,
    TORCHSERVE_URL,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mmsent.gateway", description=__doc__,
                                allow_abbrev=False)  # fmt: skip
    p.add_argument("--model-name", default=MODEL_NAME)
    p.add_argument("--torchserve", default=TORCHSERVE_URL,
                   help="TorchServe's REST inference address")  # fmt: skip
    p.add_argument("--management", default=TORCHSERVE_URL,
                   help="TorchServe's management address (readiness)")  # fmt: skip
    p.add_argument("--http-port", type=int, default=GATEWAY_HTTP_PORT)
    p.add_argument("--grpc-port", type=int, default=GATEWAY_GRPC_PORT)
    p.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT_S,
                   help="seconds one forwarded request may take")  # fmt: skip
    p.add_argument("--startup-timeout", type=float, default=STARTUP_TIMEOUT_S,
                   help="seconds to wait for a READY worker before giving up")  # fmt: skip
    return p.parse_args(argv)


def kserve_argv(prog: str) -> list[str]:
    """kserve's own flags. kserve.model_server parses ``sys.argv`` when it is imported, so the
    gateway's flags are removed first and only these reach it: gRPC messages as large as
    TorchServe's max_request_size (kserve's default is 8 MiB)."""
    return [prog, f"--grpc_max_send_message_length={MAX_MESSAGE_BYTES}",
            f"--grpc_max_receive_message_length={MAX_MESSAGE_BYTES}"]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.argv = kserve_argv(sys.argv[0])
    from mmsent.gateway.kserve_model import TorchServeForwarder
    from mmsent.gateway.server import build_server

    model = TorchServeForwarder(args.model_name, args.torchserve, args.management,
                                request_timeout=args.request_timeout,
                                startup_timeout=args.startup_timeout)  # fmt: skip
    model.load()
    build_server(model, args.http_port, args.grpc_port).start([model])


if __name__ == "__main__":
    main()
