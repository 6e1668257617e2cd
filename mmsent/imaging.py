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


def resize_crop(img: Image.Image, cfg: ModelConfig) -> Image.Image:
    """Short side to ``resize_size`` then centre crop ``image_size``, in ONE resampling pass.

    Only the source box that survives the crop is resampled, straight to the output size: the
    same sample positions as resize-then-crop (torchvision's Resize + CenterCrop), with no
    pixels computed only to be cropped away.
    """
    w, h = img.size
    size = cfg.image_size
    scale = cfg.resize_size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)


def image_to_uint8(img: Image.Image, cfg: ModelConfig) -> torch.Tensor:
    """RGB image -> (3, image_size, image_size) uint8 tensor, resized and cropped."""
    arr = np.asarray(resize_crop(img, cfg), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def normalize(pixels: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float, scaled to [0, 1] and standardised with the config's
    mean/std. Works on one image or a whole batch (one vectorised op per batch when serving),
    on whatever device ``pixels`` is on (serving normalises on the GPU)."""
    mean = torch.tensor(cfg.image_mean, device=pixels.device).view(3, 1, 1) * 255.0
    std = torch.tensor(cfg.image_std, device=pixels.device).view(3, 1, 1) * 255.0
    return (pixels.float() - mean) / std


def decode_image_uint8(data: bytes, cfg: ModelConfig) -> torch.Tensor:
    """Bytes -> (3, image_size, image_size) uint8 tensor, or RequestError."""
    return image_to_uint8(open_image(data, cfg), cfg)


def decode_image(data: bytes, cfg: ModelConfig) -> torch.Tensor:
    """Bytes -> (3, image_size, image_size) normalised float tensor, or RequestError.

    Training's feature cache calls this; serving runs the same two steps (decode_image_uint8,
    then normalize per batch), so train and serve preprocessing cannot drift apart.
    """
    return normalize(decode_image_uint8(data, cfg), cfg)
