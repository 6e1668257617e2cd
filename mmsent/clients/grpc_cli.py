"""Call TorchServe over gRPC: predict (text and/or image), ping, list or describe models.

Prints the same JSON the REST API answers. Examples::

    python scripts/grpc_client.py predict --text "what a day" --image photo.jpg
    python scripts/grpc_client.py list
    python scripts/grpc_client.py describe --model fusion_sentiment

Exit status 1 with the server's message on a refused request (e.g. an undecodable image).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmsent.clients.auth import api_key
from mmsent.clients.grpc import (
    DEFAULT_MANAGEMENT_TARGET,
    DEFAULT_TARGET,
    GrpcClient,
    PredictionError,
)
from mmsent.config import DEFAULT_MODEL_NAME


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--target", default=DEFAULT_TARGET, help="gRPC inference host:port")
    p.add_argument("--management-target", default=DEFAULT_MANAGEMENT_TARGET,
                   help="gRPC management host:port")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    p.add_argument("--key-file", type=Path, default=Path("key_file.json"),
                   help="TorchServe key file (token authorization on); ignored if absent")
    sub = p.add_subparsers(dest="command", required=True)
    pred = sub.add_parser("predict", help="one prediction")
    pred.add_argument("--model", default=DEFAULT_MODEL_NAME)
    pred.add_argument("--text", default=None)
    pred.add_argument("--image", type=Path, default=None, help="image file, sent as raw bytes")
    sub.add_parser("ping", help="server health")
    sub.add_parser("list", help="registered models")
    desc = sub.add_parser("describe", help="one model's config and workers")
    desc.add_argument("--model", default=DEFAULT_MODEL_NAME)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with GrpcClient(args.target, args.management_target, timeout=args.timeout,
                    inference_key=api_key(args.key_file, "inference"),
                    management_key=api_key(args.key_file, "management")) as client:
        try:
            if args.command == "predict":
                if args.text is None and args.image is None:
                    sys.exit("predict needs --text, --image, or both")
                image = args.image.read_bytes() if args.image else None
                result: object = client.predict(args.model, text=args.text, image=image)
            elif args.command == "ping":
                result = json.loads(client.ping())
            elif args.command == "list":
                result = client.list_models()
            else:
                result = client.describe_model(args.model)
        except PredictionError as err:
            print(json.dumps({"error": err.message, "code": err.status,
                              "grpc_code": err.code.name}), file=sys.stderr)
            return 1
    print(json.dumps(result, indent=2))
    return 0

