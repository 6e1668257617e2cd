"""Image bytes -> normalised tensor, defensively.

Decoding is where hostile input does harm (decompression bombs, truncated files, odd modes), so
every check that can run on the header runs before the pixels are decoded.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

from mmsent.config import ModelConfig
from mmsent.errors import RequestError

# We enforce our own, configurable pixel limit before decoding; PIL's global guard stays as a
# second line of defence at a higher bound.
Image.MAX_IMAGE_PIXELS = 200_000_000


def open_image(data: bytes, cfg: ModelConfig) -> Image.Image:
    """Validate size and header, decode, and return an RGB image.

    Raises RequestError (413 for too big, 400 for undecodable) with a message for the caller.
    """
    limits = cfg.limits
    if not data:
        raise RequestError("image is empty")
    if len(data) > limits.max_image_bytes:
        raise RequestError(
            f"image is {len(data)} bytes; the limit is {limits.max_image_bytes} bytes", 413
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RequestError(f"image refused as a decompression bomb: {exc}", 413) from exc
    except Exception as exc:
        raise RequestError("image bytes are not a recognised image format") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise RequestError("image has no pixels")
    if width * height > limits.max_image_pixels:
        raise RequestError(
            f"image is {width}x{height} = {width * height} pixels; the limit is "
            f"{limits.max_image_pixels} (refused before decoding)",
            413,
        )
    # JPEG can decode at 1/2, 1/4, 1/8 scale for free: never decode more than we will keep.
    if img.format == "JPEG":
        img.draft("RGB", (cfg.resize_size, cfg.resize_size))
    try:
        img.load()
    except Exception as exc:
        raise RequestError(f"image could not be decoded ({exc})") from exc
    with contextlib.suppress(Exception):  # a broken EXIF block is no reason to refuse pixels
        img = ImageOps.exif_transpose(img) or img
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (alpha, palette, CMYK, 16-bit, grayscale) to 8-bit RGB.

    Transparent areas become white, as most viewers show them.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.size and arr.max() > 255 else 255.0
        img = Image.fromarray((arr * (255.0 / max(top, 1.0))).clip(0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def image_to_tensor(img: Image.Image, cfg: ModelConfig) -> torch.Tensor:
    """Resize the short side to ``resize_size``, centre-crop ``image_size``, normalise.

    The same function serves training and serving so the two can never drift apart.
    """
    w, h = img.size
    scale = cfg.resize_size / min(w, h)
    new_size = (max(cfg.image_size, round(w * scale)), max(cfg.image_size, round(h * scale)))
    img = img.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    left = (new_size[0] - cfg.image_size) // 2
    top = (new_size[1] - cfg.image_size) // 2
    img = img.crop((left, top, left + cfg.image_size, top + cfg.image_size))
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())  # H, W, 3
    tensor = arr.permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(cfg.image_mean).view(3, 1, 1)
    std = torch.tensor(cfg.image_std).view(3, 1, 1)
    return tensor.sub_(mean).div_(std)


def decode_image(data: bytes, cfg: ModelConfig) -> torch.Tensor:
    """Bytes -> (3, image_size, image_size) float tensor, or RequestError."""
    return image_to_tensor(open_image(data, cfg), cfg)
