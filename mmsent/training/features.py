"""Cache frozen-encoder outputs so the fusion head trains on CPU in minutes.

With frozen encoders the expensive part (BERT over every tweet, the CNN over every image) is the
same every epoch, so it is computed once and stored in fp16:

* text: the last hidden states of every distinct text, packed (only real tokens are kept; the
  padding is re-created per batch, which the heads mask out exactly);
* image: the (cells, C) feature map of every distinct image file.

Inputs go through the *serving* preprocessing (the same tokenizer call and
:func:`mmsent.serving.imaging.decode_image`), so what the head learns on is what it will see
when served.
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
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mmsent.config import ModelConfig
from mmsent.data.manifest import Example, read_manifest
from mmsent.modeling.encoders import build_tokenizer
from mmsent.modeling.model import FusionSentimentModel
from mmsent.serving.imaging import decode_image
from mmsent.serving.tokenizer import tokenize


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


def _open_cache(cache_dir: Path | None, kind: str, settings: dict, factory: type) -> tuple:
    """(cache file or None, the features it holds or None, the keys it holds)."""
    path = _cache_path(cache_dir, kind, settings) if cache_dir else None
    cached = factory(**_load_cached(path)) if path and path.exists() else None
    return path, cached, set(cached.index) if cached is not None else set()


def _text_settings(encoder: nn.Module, cfg: ModelConfig, layer: int | None) -> dict:
    if layer is None:
        fingerprint = weights_fingerprint(encoder)
    else:  # the states *entering* BERT layer ``layer`` (0-based) depend only on what is below
        below = nn.ModuleList([encoder.embeddings, *encoder.encoder.layer[:layer]])
        fingerprint = weights_fingerprint(below)
    settings = {
        "encoder": cfg.text_encoder, "fingerprint": fingerprint,
        "max_text_length": cfg.max_text_length,
    }
    if layer is not None:
        settings["layer_input"] = layer
    return settings


def run_top_layers(encoder: nn.Module, states: Tensor, mask: Tensor, start: int) -> Tensor:
    """BERT layers ``start``.. of ``encoder`` on cached (B, T, D) states entering layer ``start``.

    The same maths as the full encoder (eager attention, additive padding mask), so a head
    trained this way and the exported model agree (tests/unit/test_finetune.py).
    """
    keep = mask[:, None, None, :].to(states.dtype)
    additive = (1.0 - keep) * torch.finfo(states.dtype).min
    for layer in encoder.encoder.layer[start:]:
        out = layer(states, attention_mask=additive)
        states = out[0] if isinstance(out, tuple) else out
    return states


@torch.inference_mode()
def text_features(
    encoder: nn.Module, cfg: ModelConfig, texts: Sequence[str], cache_dir: Path | None,
    batch_size: int = 128, device: str = "cpu", layer: int | None = None,
) -> TextFeatures:
    """Token states for every distinct text, computed once per encoder and stored in cache_dir.

    ``layer=None``: the encoder's output (what a frozen-encoder head reads). ``layer=k``: the
    hidden states entering BERT layer k, i.e. what layers k.. see when only they are
    fine-tuned (``mmsent.training.finetune``); the pass that computes them fills the output
    cache too, so both cost one encoding.
    """
    settings = _text_settings(encoder, cfg, layer)
    wanted = sorted(set(texts))
    path, cached, known = _open_cache(cache_dir, "text", settings, TextFeatures)
    if cached is not None and set(wanted) <= known:
        return cached
    tokenizer = build_tokenizer(cfg.text_encoder)
    order = sorted((t for t in wanted if t not in known), key=len)  # little padding per batch
    chunks: list[Tensor] = []
    last_chunks: list[Tensor] = []
    lengths: list[int] = []
    encoder = encoder.to(device).eval()
    for start in tqdm(range(0, len(order), batch_size), desc="encode text", unit="batch"):
        enc = tokenize(tokenizer, order[start : start + batch_size], cfg)
        mask = enc["attention_mask"]
        out = encoder(input_ids=enc["input_ids"].to(device), attention_mask=mask.to(device),
                      output_hidden_states=layer is not None)
        states = out[0] if layer is None else out.hidden_states[layer]
        for row, last, n in zip(states.half().cpu(), out[0].half().cpu(), mask.sum(1).tolist(),
                                strict=True):
            chunks.append(row[:n].clone())
            last_chunks.append(last[:n].clone())
            lengths.append(n)
    new_texts, new_lengths = list(order), list(lengths)
    if cached is not None:  # extend the existing cache instead of recomputing it
        order = cached.texts + order
        chunks = [cached.tokens, *chunks]
        lengths = (cached.offsets[1:] - cached.offsets[:-1]).tolist() + lengths
    feats = _pack(order, lengths, chunks)
    if path:
        _save_atomic({"texts": feats.texts, "offsets": feats.offsets, "tokens": feats.tokens}, path)
    if layer is not None and cache_dir is not None and new_texts:  # the output cache, for free
        out_path, out_cached, out_known = _open_cache(
            cache_dir, "text", _text_settings(encoder, cfg, None), TextFeatures)
        keep = [i for i, t in enumerate(new_texts) if t not in out_known]
        texts_o = [new_texts[i] for i in keep]
        chunks_o = [last_chunks[i] for i in keep]
        lengths_o = [new_lengths[i] for i in keep]
        if out_cached is not None:
            texts_o = out_cached.texts + texts_o
            chunks_o = [out_cached.tokens, *chunks_o]
            lengths_o = (out_cached.offsets[1:] - out_cached.offsets[:-1]).tolist() + lengths_o
        packed = _pack(texts_o, lengths_o, chunks_o)
        assert out_path is not None
        _save_atomic({"texts": packed.texts, "offsets": packed.offsets, "tokens": packed.tokens},
                     out_path)
    return feats


def _pack(texts: list[str], lengths: list[int], chunks: list[Tensor]) -> TextFeatures:
    offsets = torch.zeros(len(texts) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(lengths, dtype=torch.long).cumsum(0)
    return TextFeatures(texts, offsets, torch.cat(chunks) if chunks else torch.zeros(0, 1).half())


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
    path, cached, known = _open_cache(cache_dir, "image", settings, ImageFeatures)
    if cached is not None and set(wanted) <= known:
        return cached
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


# -- batches of cached features, and the forward pass over them ---------------------------
@dataclass
class FeatureBatch:
    text_tokens: Tensor | None  # cached states, or None when text is encoded live
    text_mask: Tensor
    input_ids: Tensor | None
    image_tokens: Tensor
    has_text: Tensor
    has_image: Tensor
    labels: Tensor
    from_layer: int | None = None  # text_tokens are the states entering this BERT layer

    def to(self, device: torch.device) -> FeatureBatch:
        return FeatureBatch(**{k: v.to(device) if isinstance(v, Tensor) else v
                        for k, v in self.__dict__.items()})


class FeatureData:
    """Examples of one manifest + their cached features, served as padded batches."""

    def __init__(
        self, examples: list[Example], root: Path, cfg: ModelConfig,
        text: TextFeatures | None, image: ImageFeatures, modalities: str = "both",
        tokenizer: Any = None, text_layer: int | None = None,
    ) -> None:
        self.examples = examples
        self.text_layer = text_layer
        self.cfg = cfg
        self.text, self.image, self.tokenizer = text, image, tokenizer
        self.labels = torch.tensor([cfg.labels.index(e.label) for e in examples])
        self.text_labels = torch.tensor(
            [cfg.labels.index(e.text_label) if e.text_label else -1 for e in examples]
        )
        self.image_labels = torch.tensor(
            [cfg.labels.index(e.image_label) if e.image_label else -1 for e in examples]
        )
        self.texts = [e.text if modalities != "image" else None for e in examples]
        self.images = [  # cache keys: content digests (see mmsent.training.features.file_digest)
            file_digest(e.image_path(root)) if e.has_image and modalities != "text" else None
            for e in examples
        ]

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, rows: list[int]) -> FeatureBatch:
        texts = [self.texts[r] for r in rows]
        images = [self.images[r] for r in rows]
        has_text = torch.tensor([t is not None for t in texts], dtype=torch.float32)
        has_image = torch.tensor([i is not None for i in images], dtype=torch.float32)
        if self.tokenizer is not None:  # live text encoding (unfrozen layers)
            enc = tokenize(self.tokenizer, [t or "" for t in texts], self.cfg)
            tokens, mask, ids = None, enc["attention_mask"], enc["input_ids"]
        else:
            assert self.text is not None
            tokens, mask = self.text.batch(texts)
            ids = None
        return FeatureBatch(tokens, mask, ids, self.image.batch(images), has_text, has_image,
                            self.labels[rows], self.text_layer if ids is None else None)


def load_data(
    manifest: str | Path, splits: list[str], model: FusionSentimentModel, cfg: ModelConfig,
    cache_dir: Path | None, modalities: str = "both", live_text: bool = False,
    device: torch.device | None = None, text_layer: int | None = None,
) -> dict[str, FeatureData]:
    """Read the splits of a manifest and attach (cached) encoder features.

    ``text_layer=k``: cache the states entering BERT layer k instead of the encoder output;
    the forward pass then runs layers k.. live (fine-tuning the top layers on CPU).
    """
    manifest = Path(manifest)
    examples = {s: read_manifest(manifest, split=s) for s in splits}
    for split, items in examples.items():
        if not items:
            raise ValueError(f"{manifest} has no examples in split {split!r}")
    every = [e for items in examples.values() for e in items]
    dev = str(device or "cpu")
    text = None
    tokenizer = None
    if live_text:
        tokenizer = build_tokenizer(cfg.text_encoder)
    else:
        text = text_features(model.text_encoder, cfg, [e.text for e in every if e.text is not None],
                             cache_dir, device=dev, layer=text_layer)
    image = image_features(
        model.image_encoder, cfg, [e.image_path(manifest.parent) for e in every if e.has_image],
        cache_dir, device=dev,
    )
    return {
        s: FeatureData(items, manifest.parent, cfg, text, image, modalities, tokenizer,
                       None if live_text else text_layer)
        for s, items in examples.items()
    }


def text_tokens_of(model: FusionSentimentModel, batch: FeatureBatch) -> Tensor:
    if batch.text_tokens is not None:
        if batch.from_layer is not None:
            return run_top_layers(model.text_encoder, batch.text_tokens, batch.text_mask,
                                  batch.from_layer)
        return batch.text_tokens
    assert batch.input_ids is not None
    return model.encode_text(batch.input_ids, batch.text_mask)


def forward(model: FusionSentimentModel, batch: FeatureBatch) -> tuple[Tensor, Tensor]:
    """Head forward on (cached or live) encoder outputs; same maths as the full model."""
    return model.head(
        text_tokens_of(model, batch), batch.text_mask, batch.image_tokens, batch.has_text,
        batch.has_image,
    )


@torch.no_grad()
def predict_logits(
    model: FusionSentimentModel, data: FeatureData, batch_size: int = 256,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Logits (N, K) and contributions (N, 2) for every example, in order."""
    device = device or torch.device("cpu")
    model.eval()
    logits_all, parts = [], []
    for start in range(0, len(data), batch_size):
        batch = data.batch(list(range(start, min(start + batch_size, len(data))))).to(device)
        logits, contrib = forward(model, batch)
        logits_all.append(logits.float().cpu())
        parts.append(contrib.float().cpu())
    return torch.cat(logits_all), torch.cat(parts)


def predict(
    model: FusionSentimentModel, data: FeatureData, batch_size: int = 256,
    device: torch.device | None = None, temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Class probabilities softmax(logits / temperature) (N, K) and contributions (N, 2)."""
    logits, parts = predict_logits(model, data, batch_size, device)
    return (logits / temperature).softmax(-1), parts
