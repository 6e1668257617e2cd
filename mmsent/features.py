"""Cache frozen-encoder outputs so the fusion head trains on CPU in minutes.

With frozen encoders the expensive part (BERT over every tweet, the CNN over every image) is the
same every epoch, so it is computed once and stored in fp16:

* text: the last hidden states of every distinct text, packed (only real tokens are kept; the
  padding is re-created per batch, which the heads mask out exactly);
* image: the (cells, C) feature map of every distinct image file.

Inputs go through the *serving* preprocessing (the same tokenizer call and
:func:`mmsent.imaging.decode_image`), so what the head learns on is what it will see when served.
A cache file is keyed by a fingerprint of the encoder weights and preprocessing settings, so a
different encoder (or a re-initialised random test encoder) can never reuse stale features.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mmsent.config import ModelConfig
from mmsent.imaging import decode_image
from mmsent.pipeline import SentimentPipeline, tokenize


def weights_fingerprint(module: nn.Module) -> str:
    """Short hash of a module's exact weight bytes.

    Hashing bytes, not float sums, keeps it independent of thread count and summation order, so
    every process (1 or 2 threads, training or evaluation) finds the same cache file.
    """
    h = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}{tuple(tensor.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def file_digest(path: str | Path) -> str:
    """Content hash of an image file: the image cache key, so a rebuilt dataset (same paths,
    other pixels) can never be served stale features."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@dataclass
class TextFeatures:
    """Packed token states: rows ``offsets[i]:offsets[i + 1]`` of ``tokens`` are ``texts[i]``."""

    texts: list[str]
    offsets: Tensor  # (N + 1,) int64
    tokens: Tensor  # (total_tokens, D) fp16

    def __post_init__(self) -> None:
        self.index = {t: i for i, t in enumerate(self.texts)}

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[1])

    def batch(self, texts: Sequence[str | None]) -> tuple[Tensor, Tensor]:
        """(B, T, D) float states and (B, T) mask; a missing text is one zero token."""
        rows = [self.index[t] if t is not None else -1 for t in texts]
        lengths = [int(self.offsets[r + 1] - self.offsets[r]) if r >= 0 else 1 for r in rows]
        out = torch.zeros(len(rows), max(lengths), self.dim)
        mask = torch.zeros(len(rows), max(lengths), dtype=torch.long)
        for b, (r, n) in enumerate(zip(rows, lengths, strict=True)):
            if r >= 0:
                out[b, :n] = self.tokens[self.offsets[r] : self.offsets[r + 1]].float()
            mask[b, :n] = 1
        return out, mask


@dataclass
class ImageFeatures:
    keys: list[str]  # content digests of the image files (file_digest)
    feats: Tensor  # (N, cells, C) fp16

    def __post_init__(self) -> None:
        self.index = {k: i for i, k in enumerate(self.keys)}

    @property
    def dim(self) -> int:
        return int(self.feats.shape[2])

    def batch(self, keys: Sequence[str | None]) -> Tensor:
        """(B, cells, C) float features; a missing image is all zeros (masked by has_image)."""
        out = torch.zeros(len(keys), self.feats.shape[1], self.dim)
        for b, key in enumerate(keys):
            if key is not None:
                out[b] = self.feats[self.index[key]].float()
        return out


_LOADED: dict[Path, dict] = {}  # cache files already read in this process (evaluation of N models)


def _load_cached(path: Path) -> dict:
    if path not in _LOADED:
        _LOADED[path] = torch.load(path, weights_only=True)
    return _LOADED[path]


def _save_atomic(payload: dict, path: Path) -> None:
    """Write then rename, so parallel runs sharing a cache never read a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    _LOADED[path] = payload


def _cache_path(cache_dir: Path, kind: str, settings: dict) -> Path:
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"{kind}-{key}.pt"


@torch.inference_mode()
def text_features(
    encoder: nn.Module, cfg: ModelConfig, texts: Sequence[str], cache_dir: Path | None,
    batch_size: int = 128, device: str = "cpu",
) -> TextFeatures:
    """Token states for every distinct text, computed once per encoder and stored in cache_dir."""
    settings = {
        "encoder": cfg.text_encoder, "fingerprint": weights_fingerprint(encoder),
        "max_text_length": cfg.max_text_length,
    }
    wanted = sorted(set(texts))
    path = _cache_path(cache_dir, "text", settings) if cache_dir else None
    cached = TextFeatures(**_load_cached(path)) if path and path.exists() else None
    if cached is not None and set(wanted) <= set(cached.index):
        return cached
    known = set(cached.index) if cached else set()
    tokenizer = SentimentPipeline.load_tokenizer(cfg)
    order = sorted((t for t in wanted if t not in known), key=len)  # little padding per batch
    chunks: list[Tensor] = []
    lengths: list[int] = []
    encoder = encoder.to(device).eval()
    for start in tqdm(range(0, len(order), batch_size), desc="encode text", unit="batch"):
        enc = tokenize(tokenizer, order[start : start + batch_size], cfg)
        mask = enc["attention_mask"]
        states = encoder(input_ids=enc["input_ids"].to(device), attention_mask=mask.to(device))[0]
        for row, n in zip(states.half().cpu(), mask.sum(1).tolist(), strict=True):
            chunks.append(row[:n].clone())
            lengths.append(n)
    if cached is not None:  # extend the existing cache instead of recomputing it
        order = cached.texts + order
        chunks = [cached.tokens, *chunks]
        lengths = (cached.offsets[1:] - cached.offsets[:-1]).tolist() + lengths
    offsets = torch.zeros(len(order) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(lengths, dtype=torch.long).cumsum(0)
    feats = TextFeatures(order, offsets, torch.cat(chunks) if chunks else torch.zeros(0, 1).half())
    if path:
        _save_atomic({"texts": feats.texts, "offsets": feats.offsets, "tokens": feats.tokens}, path)
    return feats


@torch.inference_mode()
def image_features(
    encoder: nn.Module, cfg: ModelConfig, paths: Sequence[Path], cache_dir: Path | None,
    batch_size: int = 32, device: str = "cpu",
) -> ImageFeatures:
    """CNN cell features for every distinct image file, decoded with the serving preprocessing."""
    settings = {
        "backbone": cfg.image_backbone, "fingerprint": weights_fingerprint(encoder),
        "image_size": cfg.image_size, "resize_size": cfg.resize_size,
        "mean": cfg.image_mean, "std": cfg.image_std, "key": "sha1",
    }
    by_digest = {file_digest(p): Path(p) for p in paths}
    wanted = sorted(by_digest)
    path = _cache_path(cache_dir, "image", settings) if cache_dir else None
    cached = ImageFeatures(**_load_cached(path)) if path and path.exists() else None
    if cached is not None and set(wanted) <= set(cached.index):
        return cached
    known = set(cached.index) if cached else set()
    missing = [p for p in wanted if p not in known]
    encoder = encoder.to(device).eval()
    out: list[Tensor] = [cached.feats] if cached is not None else []
    for start in tqdm(range(0, len(missing), batch_size), desc="encode images", unit="batch"):
        chunk = missing[start : start + batch_size]
        pixels = torch.stack([decode_image(by_digest[d].read_bytes(), cfg) for d in chunk])
        fmap = encoder(pixels.to(device))
        out.append(fmap.flatten(2).transpose(1, 2).half().cpu())  # as FusionSentimentModel
    wanted = (cached.keys if cached is not None else []) + missing
    feats = ImageFeatures(wanted, torch.cat(out) if out else torch.zeros(0, 1, 1).half())
    if path:
        _save_atomic({"keys": feats.keys, "feats": feats.feats}, path)
    return feats
