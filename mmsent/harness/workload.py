"""Deterministic request payloads shared by the Locust users and the benchmark.

The same bytes go to every run so numbers are comparable across runs and machines:
- texts: a fixed set of short/long review-like sentences;
- small images: 224x224 JPEGs (the model's input size: decode is cheap);
- large images: ~1.5 MP (1500x1000) JPEGs, what a phone upload looks like after resizing.

Real photos come from scikit-image's bundled sample images when that package is installed
(read straight from its data folder; scikit-image itself is never imported); otherwise synthetic
gradients + noise, whose JPEG size and decode cost are in the same range as photos.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from PIL import Image

from mmsent.clients.bodies import form_fields, json_body

KINDS = ("text", "image-small", "image-large", "both-small", "both-large")
SMALL_SIZE = (224, 224)
LARGE_SIZE = (1500, 1000)  # 1.5 MP
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
TEXTS = (
    "Absolutely loved it, best evening in months!",
    "The food was cold and the waiter ignored us for an hour. Never again.",
    "It is a photo of a street.",
    "meh",
    "Not sure how I feel about the new update: some things are better, others are clearly worse, "
    "and the battery life went from great to barely making it through the afternoon.",
    "What a view 😍 totally worth the climb",
    "Flight delayed again. Third time this month. Thanks for nothing.",
    "The package arrived on Tuesday as planned.",
)


@dataclass(frozen=True)
class Payload:
    """One request in every wire form the clients need (pre-encoded: clients stay cheap)."""

    kind: str
    text: str | None
    image: bytes | None

    @property
    def json_body(self) -> bytes:
        """REST body: ``{"text": ..., "image": <base64>}``."""
        return json.dumps(json_body(self.text, self.image)).encode()

    @property
    def grpc_input(self) -> dict[str, bytes]:
        """gRPC ``input`` map: the multipart field names, raw image bytes."""
        return form_fields(self.text, self.image)


def _skimage_photos() -> list[Image.Image]:
    spec = find_spec("skimage")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return []
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    photos = []
    for name in SKIMAGE_PHOTOS:
        if (data / name).exists():
            photos.append(Image.open(data / name).convert("RGB"))
    return photos


def _synthetic(index: int, size: tuple[int, int]) -> Image.Image:
    """Smooth colour gradient + mild noise + a few blocks: photo-like JPEG size/entropy."""
    rng = np.random.default_rng(index)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [(xx / w) * 255 * rng.uniform(0.3, 1), (yy / h) * 255 * rng.uniform(0.3, 1),
         ((xx + yy) / (w + h)) * 255 * rng.uniform(0.3, 1)], axis=-1,
    )  # fmt: skip
    for _ in range(6):
        x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
        base[y0 : y0 + h // 4, x0 : x0 + w // 4] = rng.uniform(0, 255, 3)
    base += rng.normal(0, 12, base.shape)
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))


def _jpeg(img: Image.Image, size: tuple[int, int], quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.resize(size, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_images(count: int = 4) -> dict[str, list[bytes]]:
    """``{"small": [...], "large": [...]}`` JPEG bytes, identical on every call."""
    sources = _skimage_photos() or [_synthetic(i, LARGE_SIZE) for i in range(count)]
    sources = (sources * count)[:count]
    return {
        "small": [_jpeg(img, SMALL_SIZE) for img in sources],
        "large": [_jpeg(img, LARGE_SIZE) for img in sources],
    }


def image_source() -> str:
    return "scikit-image sample photos" if _skimage_photos() else "synthetic gradients + noise"


def make_payloads(count: int = 4) -> dict[str, list[Payload]]:
    """``count`` payloads per kind in :data:`KINDS`."""
    images = make_images(count)
    out: dict[str, list[Payload]] = {}
    for kind in KINDS:
        rows = []
        for i in range(count):
            text = TEXTS[i % len(TEXTS)] if kind.startswith(("text", "both")) else None
            image = None
            if kind != "text":
                image = images["small" if kind.endswith("small") else "large"][i]
            rows.append(Payload(kind, text, image))
        out[kind] = rows
    return out


def parse_mix(spec: str) -> dict[str, float]:
    """``"both-small=3,text=1"`` -> weights; unknown kinds are an error, not silently ignored."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, weight = part.partition("=")
        kind = kind.strip()
        if kind not in KINDS:
            raise ValueError(f"unknown payload kind {kind!r}; choose from {', '.join(KINDS)}")
        weights[kind] = float(weight) if weight else 1.0
    if not weights or sum(weights.values()) <= 0:
        raise ValueError(f"payload mix {spec!r} selects nothing")
    return weights


DEFAULT_MIX = os.environ.get(
    "MMSENT_PAYLOAD_MIX", "text=1,image-small=1,both-small=4,image-large=1,both-large=1"
)
