"""Shared fixtures.

Serving: a tiny real archive and a real TorchServe serving it. The tiny model (random
2-layer BERT with MiniLM's real vocab, random MobileNetV3-small at 64 px) runs the exact export ->
archive -> handler path as the default model, in seconds.

Data: a tiny benchmark built from generated glyph PNGs (no emoji font needed). The
glyphs' colour and shape follow the emoji's real label (red disk = negative, blue square =
neutral, green triangle = positive) so the image modality is learnable by a tiny random CNN.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from mmsent.config import DEFAULT_MODEL_NAME, ModelConfig, resize_for
from mmsent.data.emoji_tweets import DatasetSpec, build_emoji_tweets
from mmsent.data.render import PngDirGlyphs
from mmsent.data.sources import label_emoji, load_emoji_sentiment
from mmsent.harness.torchserve import TorchServe
from mmsent.packaging.archive import MODEL_CONFIG_YAML
from mmsent.packaging.build import TINY_MODEL_ARGS

# -- serving fixtures ---------------------------------------------------------------------------
MODEL_NAME = DEFAULT_MODEL_NAME
# the batching the archive ships (handlers/model-config.yaml): tests read it, never restate it
SERVED_BATCHING: dict = yaml.safe_load(MODEL_CONFIG_YAML.read_text())
TINY_ARGS = list(TINY_MODEL_ARGS)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_config(**changes: object) -> ModelConfig:
    """The tiny test model's config (the same one TINY_ARGS builds), with ``changes``."""
    return ModelConfig(
        text_encoder="tiny", image_backbone="mobilenet_v3_small", image_weights="random",
        image_size=64, resize_size=resize_for(64), **changes,
    )


def jpeg_bytes(size: tuple[int, int] = (320, 240), color: tuple[int, int, int] = (200, 30, 30),
               quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model_store, export_dir) of a tiny archive named ``fusion_sentiment``."""
    from mmsent.packaging.build import main as build_main

    root = tmp_path_factory.mktemp("tiny_build")
    torch.manual_seed(0)
    build_main([*TINY_ARGS, "--out", str(root / "store"), "--export-dir", str(root / "export"),
                "--model-name", MODEL_NAME])
    return root / "store", root / "export"


@pytest.fixture(scope="session")
def server(tiny_build: tuple[Path, Path]) -> Iterator[TorchServe]:
    """One real TorchServe for the session (free loopback ports), stopped afterwards."""
    store, _ = tiny_build
    with TorchServe(store, {MODEL_NAME: f"{MODEL_NAME}.mar"}) as ts:
        yield ts


# -- GPU ----------------------------------------------------------------------------------------
def cuda_works() -> bool:
    """CUDA is present and a kernel really runs (a CUDA build of torch alone is not enough)."""
    try:
        return torch.cuda.is_available() and torch.zeros(1, device="cuda").item() == 0
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run wherever CUDA works and skip cleanly everywhere else."""
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if marked and not cuda_works():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
        for item in marked:
            item.add_marker(skip)


# -- data fixtures ------------------------------------------------------------------------------
TINY_CFG = tiny_config(fusion_dim=32)

_STYLE = {"negative": ((220, 30, 30, 255), "disk"), "neutral": ((60, 90, 200, 255), "square"),
          "positive": ((30, 190, 60, 255), "triangle")}


def make_glyph_dir(folder: Path, per_label: int = 8, outline: bool = False) -> dict[str, str]:
    """Write one PNG per emoji (named by code point, as PngDirGlyphs expects); return labels."""
    folder.mkdir(parents=True, exist_ok=True)
    lexicon = label_emoji(load_emoji_sentiment())
    chosen: dict[str, str] = {}
    for label, (colour, shape) in _STYLE.items():
        for char in [c for c, lab in lexicon.items() if lab == label][:per_label]:
            img = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
            draw = ImageDraw.Draw(img)
            fill = None if outline else colour
            width = 0 if not outline else 5
            if shape == "disk":
                draw.ellipse((4, 4, 44, 44), fill=fill, outline=colour, width=width)
            elif shape == "square":
                draw.rectangle((6, 6, 42, 42), fill=fill, outline=colour, width=width)
            else:
                draw.polygon([(24, 3), (45, 44), (3, 44)], fill=fill, outline=colour, width=width)
            name = "-".join(f"{ord(c):x}" for c in char if c != "\ufe0f")
            img.save(folder / f"{name}.png")
            chosen[char] = label
    return chosen


TINY_SPEC = DatasetSpec(
    seed=3,
    examples={"train": 240, "val": 60, "test": 60, "test_emojify": 30},
    images={"train": 48, "val": 15, "test": 15, "test_emojify": 12},
    max_tweets_per_label=60,
)


def build_tiny(out: Path, root: Path, spec: DatasetSpec = TINY_SPEC) -> dict:
    make_glyph_dir(root / "glyphs_a")
    make_glyph_dir(root / "glyphs_b", outline=True)
    return build_emoji_tweets(
        out, spec, PngDirGlyphs(root / "glyphs_a", name="flat"),
        held_out_style=PngDirGlyphs(root / "glyphs_b", name="outline"),
    )


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Manifest path of a tiny benchmark, built once per test session."""
    root = tmp_path_factory.mktemp("bench")
    build_tiny(root / "data", root)
    return root / "data" / "manifest.jsonl"
