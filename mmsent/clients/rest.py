"""Send one request to a running TorchServe over REST and print the JSON answer.

  python scripts/predict.py --text "what a day" --image examples/party.png
  python scripts/predict.py --image photo.jpg --multipart
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import requests

from mmsent.clients.auth import bearer
from mmsent.clients.bodies import deadline_header, form_fields, json_body
from mmsent.config import DEFAULT_MODEL_NAME, DEFAULT_PORTS

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORTS['inference']}/predictions/{DEFAULT_MODEL_NAME}"


def predict(url: str, text: str | None, image: Path | None, multipart: bool = False,
            timeout: float = 60.0, headers: dict[str, str] | None = None) -> requests.Response:
    """JSON body with a base64 image (default) or multipart form with an image file.

    The request carries ``X-Request-Deadline`` = now + ``timeout``: if this client gives up,
    the server skips the work instead of computing an answer nobody reads.
    """
    data = image.read_bytes() if image else None
    headers = {**deadline_header(timeout), **(headers or {})}
    if multipart:
        files = {name: (image.name if name == "image" else None, value)
                 for name, value in form_fields(text, data).items()}  # fmt: skip
        return requests.post(url, files=files, timeout=timeout, headers=headers)
    return requests.post(url, json=json_body(text, data), timeout=timeout, headers=headers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--text")
    p.add_argument("--image", type=Path)
    p.add_argument("--multipart", action="store_true", help="send multipart/form-data")
    p.add_argument("--url", default=DEFAULT_URL)
    p.add_argument("--key-file", type=Path, default=Path("key_file.json"),
                   help="TorchServe's key file, used when token authorization is on "
                        "(config.production.properties); ignored if absent")
    args = p.parse_args(argv)
    if args.text is None and args.image is None:
        p.error("give --text, --image or both")
    resp = predict(args.url, args.text, args.image, args.multipart,
                   headers=bearer(args.key_file, "inference"))
    try:
        print(json.dumps(resp.json(), indent=2, ensure_ascii=False))
    except ValueError:
        print(resp.text)
    return 0 if resp.ok else 1

