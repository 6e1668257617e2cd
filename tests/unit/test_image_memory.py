"""Huge-but-small-file images: bounded memory, same pixels.

A 40 MP image (the pixel limit) can be a 100-300 KB file. 16/32-bit images used to be converted
through float64 at full resolution and images with alpha composited at full resolution: about
1 GB (16/32-bit) and 770 MB (RGBA) of peak memory per image, eight of them in one batch 2+ GB.
They are now shrunk in their native mode first. Measured in a fresh process per image (peak RSS
is per process): no such image may cost more than a plain 8-bit RGB image of the same size.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from mmsent.serving.imaging import decode_image_uint8, high_bit_depth_to_8bit, image_to_uint8

ROOT = Path(__file__).resolve().parents[2]
SIDE = 6324  # 39.99 MP, just under the 40 MP limit
PEAK = """
import json, sys
from mmsent.config import ModelConfig
from mmsent.serving.imaging import decode_image_uint8

def status(key):  # kB
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))

data = open(sys.argv[1], "rb").read()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS:")
decode_image_uint8(data, ModelConfig())
print(json.dumps({"extra_mb": (status("VmHWM:") - before) / 1024}))
"""

def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _peak_mb(path: Path) -> float:
    done = subprocess.run([sys.executable, "-c", PEAK, str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=True)  # fmt: skip
    return json.loads(done.stdout)["extra_mb"]


def test_40mp_images_cost_no_more_memory_than_an_8bit_photo(tmp_path: Path) -> None:
    files = {
        "rgb8": _save(Image.new("RGB", (SIDE, SIDE), (9, 99, 199)), "PNG"),
        "png16": _save(Image.new("I;16", (SIDE, SIDE), 50_000), "PNG"),
        "tiff32": _save(Image.new("I", (SIDE, SIDE), 70_000), "TIFF",
                        compression="tiff_adobe_deflate"),
        "rgba": _save(Image.new("RGBA", (SIDE, SIDE), (1, 2, 3, 100)), "PNG"),
    }  # fmt: skip
    peaks = {}
    for name, data in files.items():
        assert len(data) < 400_000, name  # small files...
        (tmp_path / name).write_bytes(data)
        peaks[name] = _peak_mb(tmp_path / name)  # ...huge images
    # before: png16 ~1080 MB, tiff32 ~1230 MB, rgba ~770 MB, rgb8 ~310 MB (2-core EPYC)
    for name in ("png16", "tiff32", "rgba"):
        assert peaks[name] <= peaks["rgb8"] * 1.15 + 20, peaks


def _reference_16bit(img: Image.Image, cfg) -> torch.Tensor:  # noqa: ANN001
    """The previous path: scale at full resolution, then convert and resize."""
    arr = np.asarray(img, dtype=np.float64)
    top = arr.max() if arr.max() > 255 else 255.0
    small = Image.fromarray((arr * (255.0 / top)).clip(0, 255).astype(np.uint8)).convert("RGB")
    return image_to_uint8(small, cfg)


def _reference_alpha(img: Image.Image, cfg) -> torch.Tensor:  # noqa: ANN001
    """The previous path: composite on white at full resolution, then resize."""
    canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return image_to_uint8(Image.alpha_composite(canvas, img.convert("RGBA")).convert("RGB"), cfg)


def _gradient(w: int, h: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return (x / w + y / h) / 2


def test_shrinking_first_gives_the_same_pixels() -> None:
    cfg = tiny_config()  # resize 73: a 1600 px image is reduced 10x before conversion
    w, h = 1600, 1200
    g = _gradient(w, h)
    img16 = Image.fromarray((g * 60_000).astype(np.uint16))
    rgba = Image.fromarray(np.dstack([g * 255, 255 - g * 255, np.full_like(g, 90),
                                      (1 - g) * 255]).astype(np.uint8), "RGBA")  # fmt: skip
    for img, reference in ((img16, _reference_16bit), (rgba, _reference_alpha)):
        ours = decode_image_uint8(_save(img, "PNG"), cfg).int()
        diff = (ours - reference(img, cfg).int()).abs()
        assert diff.float().mean() < 0.6 and diff.max() <= 3, (img.mode, diff.max())


def test_float_image_with_nan_decodes_quietly() -> None:
    arr = np.full((300, 400), 0.5, dtype=np.float32)
    arr[10:20, 10:20] = np.nan
    data = _save(Image.fromarray(arr, "F"), "TIFF")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = decode_image_uint8(data, tiny_config())
    assert out.dtype == torch.uint8 and out.shape == (3, 64, 64)


@pytest.mark.parametrize("mode", ["I;16B", "I;16L", "I;16", "I", "F"])
def test_every_high_bit_depth_mode_is_scaled_by_its_maximum(mode: str) -> None:
    """Byte-swapped 16-bit modes have no ``getextrema`` in Pillow: they must still work."""
    img = Image.new(mode, (1000, 800), 300)
    small = high_bit_depth_to_8bit(img, keep=146)
    assert small.mode == "L" and small.size == (200, 160)
    assert np.asarray(small).min() == 255  # 300 is the maximum: scaled to 255


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F", "LA", "RGBA", "P"])
def test_every_shrunk_mode_converts(mode: str) -> None:
    img = Image.new(mode, (900, 700))
    kw = {"transparency": 0} if mode == "P" else {}
    data = _save(img, "TIFF" if mode in ("I;16B", "I", "F") else "PNG", **kw)
    assert decode_image_uint8(data, tiny_config()).shape == (3, 64, 64)
