"""Image bytes -> normalised tensor, defensively.

Decoding is where hostile input does harm (decompression bombs, truncated files, odd modes), so
every check that can run on the header runs before the pixels are decoded.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

from mmsent.config import ModelConfig
from mmsent.errors import RequestError
from mmsent.serving.limits import DEFAULT_LIMITS, RequestLimits

# We enforce our own, configurable pixel limit before decoding; PIL's global guard stays as a
# second line of defence at a higher bound.
Image.MAX_IMAGE_PIXELS = 200_000_000


def open_image(
    data: bytes, cfg: ModelConfig, limits: RequestLimits = DEFAULT_LIMITS
) -> Image.Image:
    """Validate size and header, decode, and return an RGB image.

    Raises RequestError (413 for too big, 400 for undecodable) with a message for the caller.
    """
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
    # Big images are shrunk in their own mode before any full-resolution conversion: a small
    # file can hold 40 MP, and converting those (float, RGBA compositing) cost up to 1 GB.
    if img.mode in HIGH_BIT_DEPTH:
        img = high_bit_depth_to_8bit(img, keep=2 * cfg.resize_size)
    elif _has_alpha(img):
        img = shrink_with_alpha(img, keep=2 * cfg.resize_size)
    return to_rgb(img)


def decode_pixels(data: bytes, cfg: ModelConfig, limits: RequestLimits = DEFAULT_LIMITS) -> int:
    """Pixels decoding ``data`` will produce, read from the header alone (no pixel decoded).

    That is the work the decode does, and what the per-batch budget counts: a JPEG decodes at
    the scale ``open_image`` drafts it to (a 12 MP photo costs about 0.2 MP), every other format
    at full size. Measured on the 2-core EPYC: 11-20 ms per decoded megapixel for PNG. Bytes
    that are no image, and images over the per-image limits, cost 0 here: ``open_image``
    refuses them unread, with its own message.
    """
    if len(data) > limits.max_image_bytes:
        return 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # open_image says why
            img = Image.open(io.BytesIO(data))
            if img.size[0] * img.size[1] > limits.max_image_pixels:
                return 0
            if img.format == "JPEG":
                img.draft("RGB", (cfg.resize_size, cfg.resize_size))
            width, height = img.size
    except Exception:
        return 0
    return max(width, 0) * max(height, 0)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def shrink_with_alpha(img: Image.Image, keep: int) -> Image.Image:
    """Box-reduce an image with alpha to a short side of about ``keep`` pixels, premultiplied.

    Premultiplied, because compositing on white (``to_rgb``) is linear in premultiplied colour,
    so reduce-then-composite gives what composite-then-reduce gave, without the three
    full-resolution RGBA copies the compositing made (~770 MB at 40 MP, measured).
    """
    factor = min(img.size) // keep
    if factor < 2:
        return img
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    return rgba.convert("RGBa").reduce(factor).convert("RGBA")


HIGH_BIT_DEPTH = ("I;16", "I;16B", "I;16L", "I", "F")  # 16-bit, 32-bit int, 32-bit float


def high_bit_depth_to_8bit(img: Image.Image, keep: int | None = None) -> Image.Image:
    """16/32-bit grayscale -> 8-bit ``L``: scaled by the image's maximum (when above 255),
    after a box reduction *in the native mode* to a short side of about ``keep`` pixels.

    Converting at full resolution through float64 cost ~1 GB and ~1 s per 40 MP image, for
    pixels ``resize_crop`` throws away right after (docs/reliability.md has the numbers). The
    maximum comes from the full image (``getextrema``, no copy), so the scale is the same as
    before the reduction.
    """
    top = _max_value(img)
    top = top if top > 255 else 255.0
    factor = min(img.size) // keep if keep else 1
    if factor >= 2:
        w, h = img.size
        img = img.resize((-(-w // factor), -(-h // factor)), Image.Resampling.BOX)
    arr = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=top, neginf=0.0)
    return Image.fromarray((arr * (255.0 / max(top, 1.0))).clip(0, 255).astype(np.uint8))


def _max_value(img: Image.Image) -> float:
    """The largest finite pixel value, without a float copy of the image where Pillow can
    (``getextrema``; byte-swapped 16-bit modes need numpy's native-width copy)."""
    try:
        top = float(img.getextrema()[1])
    except ValueError:  # "image has wrong mode": I;16B / I;16L
        top = float(np.asarray(img).max())
    if math.isfinite(top):
        return top
    arr = np.asarray(img, dtype=np.float32)  # NaN/inf in a float image: rare
    finite = arr[np.isfinite(arr)]
    return float(finite.max()) if finite.size else 0.0


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (alpha, palette, CMYK, 16/32-bit, grayscale) to 8-bit RGB.

    Transparent areas become white, as most viewers show them.
    """
    if img.mode in HIGH_BIT_DEPTH:
        img = high_bit_depth_to_8bit(img)
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


def decode_image_uint8(
    data: bytes, cfg: ModelConfig, limits: RequestLimits = DEFAULT_LIMITS
) -> torch.Tensor:
    """Bytes -> (3, image_size, image_size) uint8 tensor, or RequestError."""
    return image_to_uint8(open_image(data, cfg, limits), cfg)


def decode_image(data: bytes, cfg: ModelConfig) -> torch.Tensor:
    """Bytes -> (3, image_size, image_size) normalised float tensor, or RequestError.

    Training's feature cache calls this; serving runs the same two steps (decode_image_uint8,
    then normalize per batch), so train and serve preprocessing cannot drift apart.
    """
    return normalize(decode_image_uint8(data, cfg), cfg)
