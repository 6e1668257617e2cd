"""Emoji glyphs -> small synthetic "photos" (a glyph scene on a coloured background).

Two visual styles, so generalisation to an unseen style can be measured:

* :class:`NotoGlyphs`: Google's Noto Color Emoji font (Debian ``fonts-noto-color-emoji``,
  SIL OFL 1.1), drawn by Pillow. The dataset's train/val/test images.
* :class:`PngDirGlyphs`: a folder of emoji PNGs; used for Debian ``libjs-emojify`` (881 64x64
  images, named by GitHub shortcode; their artwork's provenance is unclear, so they are used only
  as a held-out style check, never for training). Tests use it with generated PNGs.

Everything is driven by an explicit ``random.Random`` so a build is reproducible from its seed.
"""

from __future__ import annotations

import colorsys
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

NOTO_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJIFY_DIR = Path("/usr/share/javascript/emojify.js/images/emoji")
_NOTO_SIZE = 109  # the only size of the font's embedded colour bitmaps


class GlyphSource(Protocol):
    """Returns an RGBA picture of one emoji, or None where this source has no glyph for it."""

    name: str

    def glyph(self, char: str) -> Image.Image | None: ...


def _is_drawn(img: Image.Image) -> bool:
    """True when a rendered glyph has visible, coloured pixels (not blank, not a grey tofu box)."""
    if img.getbbox() is None or img.getchannel("A").getbbox() is None:
        return False
    rgb = np.asarray(img.convert("RGB").resize((16, 16)), dtype=np.int16)
    return bool((rgb.max(-1) - rgb.min(-1) > 40).any())


class NotoGlyphs:
    """Colour emoji drawn from the Noto Color Emoji font."""

    name = "noto"

    def __init__(self, font_path: str | Path = NOTO_FONT) -> None:
        if not Path(font_path).exists():
            raise FileNotFoundError(
                f"{font_path} not found: apt-get install -y fonts-noto-color-emoji"
            )
        self.font = ImageFont.truetype(str(font_path), size=_NOTO_SIZE)
        self._cache: dict[str, Image.Image | None] = {}

    def glyph(self, char: str) -> Image.Image | None:
        if char not in self._cache:
            canvas = Image.new("RGBA", (_NOTO_SIZE * 2, _NOTO_SIZE * 2), (0, 0, 0, 0))
            ImageDraw.Draw(canvas).text((8, 8), char, font=self.font, embedded_color=True)
            bbox = canvas.getchannel("A").getbbox()
            self._cache[char] = canvas.crop(bbox) if bbox and _is_drawn(canvas) else None
        return self._cache[char]


def github_shortcodes(char: str) -> list[str]:
    """GitHub/gemoji shortcodes of an emoji (``emoji`` package), with and without U+FE0F."""
    import emoji as emoji_lib

    names: list[str] = []
    for variant in (char, char + "\ufe0f", char.replace("\ufe0f", "")):
        data = emoji_lib.EMOJI_DATA.get(variant)
        if data:
            names += [a.strip(":") for a in data.get("alias", [])] + [data["en"].strip(":")]
    return list(dict.fromkeys(n.lower() for n in names))


class PngDirGlyphs:
    """Emoji pictures from a folder of PNGs named by shortcode (emojify) or by the character."""

    def __init__(self, folder: str | Path = EMOJIFY_DIR, name: str = "emojify") -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder} not found: apt-get install -y libjs-emojify")
        self.name = name
        self.files = {p.stem.lower(): p for p in sorted(self.folder.glob("*.png"))}

    def _file(self, char: str) -> Path | None:
        if char in self.files:
            return self.files[char]
        codepoints = "-".join(f"{ord(c):x}" for c in char if c != "\ufe0f")
        if codepoints in self.files:
            return self.files[codepoints]
        try:
            names = github_shortcodes(char)
        except ImportError:  # pragma: no cover - the emoji package is a pinned dependency
            names = []
        return next((self.files[n] for n in names if n in self.files), None)

    def glyph(self, char: str) -> Image.Image | None:
        path = self._file(char)
        if path is None:
            return None
        with Image.open(path) as img:
            img = img.convert("RGBA")
        bbox = img.getchannel("A").getbbox()
        return img.crop(bbox) if bbox and _is_drawn(img) else None


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A solid or two-colour gradient background in a random, not too dark colour."""

    def colour() -> tuple[int, int, int]:
        r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.55, 1.0))
        return int(r * 255), int(g * 255), int(b * 255)

    first = colour()
    img = Image.new("RGB", size, first)
    if rng.random() < 0.5:
        second = colour()
        side = max(size)  # rotate a square so the 90-degree turns leave no black corners
        mask = Image.linear_gradient("L").resize((side, side))
        mask = mask.rotate(rng.choice([0, 90, 180, 270])).crop((0, 0, *size))
        img = Image.composite(Image.new("RGB", size, second), img, mask)
    return img


@dataclass(frozen=True)
class Augment:
    """Stronger, opt-in photometric/geometric augmentation of training renders.

    Hue is never changed (an emoji's colour can carry its meaning: red face vs yellow face);
    each glyph's brightness, contrast and saturation are jittered by up to +-``jitter``, the
    glyph side is multiplied by ``scale``, the scene is blurred with probability ``blur``
    (radius 0.4-1.6 px) and saved as JPEG with a quality drawn from ``jpeg_quality``.
    """

    jitter: float = 0.3
    scale: tuple[float, float] = (0.7, 1.4)
    rotate: float = 25.0
    blur: float = 0.3
    jpeg_quality: tuple[int, int] = (35, 95)


def jpeg_bytes(img: Image.Image, rng: random.Random, augment: Augment | None) -> bytes:
    """The JPEG bytes of a render: quality 90, or a random quality under ``augment``."""
    quality = rng.randint(*augment.jpeg_quality) if augment is not None else 90
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _jitter(glyph: Image.Image, rng: random.Random, amount: float) -> Image.Image:
    alpha = glyph.getchannel("A")
    rgb = glyph.convert("RGB")
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        rgb = enhancer(rgb).enhance(rng.uniform(1 - amount, 1 + amount))
    rgb.putalpha(alpha)
    return rgb


def render_scene(
    glyphs: Sequence[Image.Image], rng: random.Random, augment: Augment | None = None
) -> Image.Image:
    """Paste 1-3 glyphs, scaled, slightly rotated, at random places onto a random background.

    The canvas is 256-320 px per side and glyphs stay inside the central 80 % of the short side,
    so the serving crop (short side -> resize_size, centre ``image_size``) never cuts them away.
    ``augment`` (training renders only) adds :class:`Augment`'s jitter; without it the random
    draws, and so the pictures, are exactly those of the plain recipe.
    """
    width, height = rng.randint(256, 320), rng.randint(256, 320)
    img = _background(rng, (width, height))
    short = min(width, height)
    box = int(short * 0.8)
    x0, y0 = (width - box) // 2, (height - box) // 2
    n = len(glyphs)
    fraction = (0.4, 0.65) if n == 1 else (0.28, 0.42) if n == 2 else (0.22, 0.34)
    for glyph in glyphs:
        side = int(short * rng.uniform(*fraction))
        if augment is not None:
            side = min(box, int(side * rng.uniform(*augment.scale)))
            glyph = _jitter(glyph, rng, augment.jitter)
        scale = side / max(glyph.size)
        g = glyph.resize(
            (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))),
            Image.Resampling.LANCZOS,
        )
        angle = augment.rotate if augment is not None else 15
        g = g.rotate(rng.uniform(-angle, angle), resample=Image.Resampling.BICUBIC, expand=True)
        gx = x0 + rng.randint(0, max(0, box - g.width))
        gy = y0 + rng.randint(0, max(0, box - g.height))
        img.paste(g, (gx, gy), g)
    if augment is not None and rng.random() < augment.blur:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.6)))
    return img
