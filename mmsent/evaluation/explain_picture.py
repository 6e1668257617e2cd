"""Explain one answer as a picture: words highlighted by score, the image under its region map.

  # against a running server (POST /explanations/fusion_sentiment)
  python scripts/explain.py --text "Oh great, another two hour delay" \\
      --image examples/angry_face.png --out irony.png
  # in process, from an export folder or a built archive (no server)
  python scripts/explain.py --model-dir /tmp/xexport --text "..." --image x.png --out x.html
  python scripts/explain.py --archive model_store/fusion_sentiment.mar --text "..." --out x.png

Green = the word / region supports the answer (removing it lowers p(answer)), red = it speaks
against it; the stronger the colour, the larger the drop (scale: the largest |score| shown).
``.png`` or ``.html`` by the --out suffix; ``--json`` also writes the raw answer next to it.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import matplotlib
import requests
from PIL import Image, ImageDraw, ImageFont

from mmsent.config import ModelConfig
from mmsent.serving.exchange import Exchange
from mmsent.serving.explain import CLASSES_FIELD, GRID_FIELD
from mmsent.serving.imaging import image_to_uint8, open_image
from mmsent.serving.pipeline import SentimentPipeline

DEFAULT_URL = "http://127.0.0.1:8080/explanations/fusion_sentiment"
# matplotlib ships DejaVu Sans, so the font is there wherever the venv is (no system fonts needed)
FONT = str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")
SUPPORT, OPPOSE = (40, 160, 70), (210, 50, 50)
IMAGE_PX = 336  # the 224 px model input drawn 1.5x


def explain_via_server(url: str, text: str | None, image: bytes | None, grid: int,
                       headers: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    body: dict[str, str] = {}
    if text is not None:
        body["text"] = text
    if image is not None:
        body["image"] = base64.b64encode(image).decode()
    resp = requests.post(url, json=body, timeout=120,
                         headers={GRID_FIELD: str(grid), CLASSES_FIELD: "all", **(headers or {})})
    if not resp.ok:
        raise SystemExit(f"{resp.status_code}: {resp.text}")
    return resp.json()


def load_pipeline(model_dir: Path | None, archive: Path | None) -> SentimentPipeline:
    """An in-process pipeline from an export folder or a .mar (unpacked to a temp folder)."""
    if archive is not None:
        model_dir = Path(tempfile.mkdtemp(prefix="explain-mar-"))
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(model_dir)
    assert model_dir is not None
    pipeline = SentimentPipeline.from_dir(model_dir)
    pipeline.warmup()
    return pipeline


def _colour(score: float, scale: float) -> tuple[int, int, int, int]:
    """RGBA: green for support, red against, alpha by |score| relative to ``scale``."""
    rgb = SUPPORT if score >= 0 else OPPOSE
    return (*rgb, int(200 * min(1.0, abs(score) / scale)) if scale > 0 else 0)


def overlay(image: bytes, scores: list[list[float]], cfg: ModelConfig) -> Image.Image:
    """The image as the model saw it (resized + centre crop) under its region scores."""
    pixels = image_to_uint8(open_image(image, cfg), cfg).permute(1, 2, 0).numpy()
    base = Image.fromarray(pixels).convert("RGBA").resize((IMAGE_PX, IMAGE_PX))
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    grid = len(scores)
    scale = max((abs(s) for row in scores for s in row), default=0.0)
    font = ImageFont.truetype(FONT, 11)
    for r, row in enumerate(scores):
        for c, score in enumerate(row):
            box = (c * IMAGE_PX // grid, r * IMAGE_PX // grid,
                   (c + 1) * IMAGE_PX // grid, (r + 1) * IMAGE_PX // grid)  # fmt: skip
            draw.rectangle(box, fill=_colour(score, scale), outline=(255, 255, 255, 90))
            if grid <= 8 and abs(score) >= 0.1 * scale > 0:
                draw.text((box[0] + 2, box[1] + 2), f"{score:+.3f}", fill=(0, 0, 0, 255), font=font)
    return Image.alpha_composite(base, layer).convert("RGB")


def _headline(answer: dict[str, Any]) -> list[str]:
    e, probs = answer["explanation"], answer["probabilities"]
    p = " / ".join(f"{k[:3]} {v:.2f}" for k, v in probs.items())
    contrib = answer["contributions"]
    return [
        f"answer: {answer['label']}   p({p})",
        f"removing the text moves p({e['target']}) by {e['modalities']['text']:+.3f}, "
        f"the image by {e['modalities']['image']:+.3f}   (attention share: text "
        f"{contrib['text']:.2f}, image {contrib['image']:.2f})",
    ]


def render_png(answer: dict[str, Any], image: bytes | None, cfg: ModelConfig) -> Image.Image:
    """One picture: headline, the words as coloured chips with their scores, the region map."""
    e = answer["explanation"]
    font, small = ImageFont.truetype(FONT, 17), ImageFont.truetype(FONT, 11)
    width = 760
    words = e["words"]
    scale = max((abs(w["score"]) for w in words), default=0.0)
    chips, x, y = [], 12, 0
    for w in words:  # lay the words out in lines first, to know the height
        w_px = int(max(font.getlength(w["word"]), small.getlength(f"{w['score']:+.3f}"))) + 10
        if x + w_px > width - 12:
            x, y = 12, y + 46
        chips.append((x, y, w_px, w))
        x += w_px + 6
    words_h = (y + 52) if words else 0
    image_h = IMAGE_PX + 16 if e["image"] else 0
    canvas = Image.new("RGB", (width, 64 + words_h + image_h + 40), "white")
    draw = ImageDraw.Draw(canvas, "RGBA")
    for i, line in enumerate(_headline(answer)):
        draw.text((12, 8 + 22 * i), line, fill="black", font=font if i == 0 else small)
    top = 64
    for x, y, w_px, w in chips:
        chip = (x, top + y, x + w_px, top + y + 26)
        draw.rounded_rectangle(chip, 5, fill=_colour(w["score"], scale))
        draw.text((x + 5, top + y + 3), w["word"], fill="black", font=font)
        draw.text((x + 5, top + y + 28), f"{w['score']:+.3f}", fill=(90, 90, 90), font=small)
    if e["image"] and image is not None:
        canvas.paste(overlay(image, e["image"]["scores"], cfg), (12, top + words_h))
    footer = (f"green supports {e['target']}, red speaks against it; score = drop of "
              f"p({e['target']}) when the word / region is removed\n"
              f"feature ablation, {e['forward_passes']} forward passes, {e['ms']:.0f} ms")
    draw.multiline_text((12, canvas.height - 34), footer, fill=(90, 90, 90), font=small)
    return canvas


def render_html(answer: dict[str, Any], image: bytes | None, cfg: ModelConfig) -> str:
    e = answer["explanation"]
    scale = max((abs(w["score"]) for w in e["words"]), default=0.0)
    spans = " ".join(
        '<span title="{s:+.4f}" style="background:rgba({r},{g},{b},{a:.2f});padding:2px 4px;'
        'border-radius:4px">{w}</span>'.format(
            s=w["score"], w=html.escape(w["word"]),
            **dict(zip("rgba", (*_colour(w["score"], scale)[:3],
                                _colour(w["score"], scale)[3] / 255), strict=True)))
        for w in e["words"]
    )  # fmt: skip
    img = ""
    if e["image"] and image is not None:
        buf = io.BytesIO()
        overlay(image, e["image"]["scores"], cfg).save(buf, "PNG")
        img = f'<p><img alt="region scores" src="data:image/png;base64,' \
              f'{base64.b64encode(buf.getvalue()).decode()}"></p>'  # fmt: skip
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in _headline(answer))
    return (f"<!doctype html><meta charset='utf-8'><title>explanation</title>"
            f"<body style='font-family:sans-serif;max-width:760px'>{lines}"
            f"<p style='font-size:20px;line-height:2'>{spans}</p>{img}"
            f"<p style='color:#666'>green supports {html.escape(e['target'])}, red speaks against"
            f" it; score = drop of p({html.escape(e['target'])}) when removed</p>")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--text")
    p.add_argument("--image", type=Path)
    p.add_argument("--out", type=Path, required=True, help="picture to write: .png or .html")
    p.add_argument("--grid", type=int, default=7, help="regions per side (default 7)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--url", default=DEFAULT_URL, help="server /explanations URL (default)")
    source.add_argument("--model-dir", type=Path, help="explain in process: an export folder")
    source.add_argument("--archive", type=Path, help="explain in process: a .mar archive")
    p.add_argument("--json", action="store_true", help="also write the answer as <out>.json")
    args = p.parse_args(argv)
    if args.text is None and args.image is None:
        p.error("give --text, --image or both")
    if args.out.suffix not in (".png", ".html"):
        p.error("--out must end in .png or .html")
    image = args.image.read_bytes() if args.image else None
    if args.model_dir or args.archive:
        pipeline = load_pipeline(args.model_dir, args.archive)
        cfg = pipeline.cfg
        body = {k: v for k, v in (("text", args.text), ("image", image)) if v is not None}
        request = {**body, GRID_FIELD: str(args.grid), CLASSES_FIELD: "all"}
        answer = Exchange(pipeline).explain([request])[0]
        if "error" in answer:
            raise SystemExit(f"{answer['code']}: {answer['error']}")
    else:
        cfg = ModelConfig()  # the served archive's image geometry (default 224 / 256)
        answer = explain_via_server(args.url, args.text, image, args.grid)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".png":
        render_png(answer, image, cfg).save(args.out)
    else:
        args.out.write_text(render_html(answer, image, cfg), encoding="utf-8")
    if args.json:
        args.out.with_suffix(".json").write_text(json.dumps(answer, indent=1, ensure_ascii=False))
    print(f"{answer['label']}: wrote {args.out}")
    return 0

