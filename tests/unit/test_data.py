"""Dataset layer: manifest format, label rule, MVSA loader, reproducible benchmark build."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import TINY_SPEC, build_tiny
from mmsent.data.emoji_tweets import INFO, MANIFEST
from mmsent.data.labels import fuse_labels, pair_type
from mmsent.data.manifest import Example, read_manifest, write_manifest
from mmsent.data.mvsa import assign_splits, load_mvsa, majority
from mmsent.data.render import NOTO_FONT, NotoGlyphs
from mmsent.data.sources import EmojiLabelRule, EmojiSentiment, load_tweets


def test_manifest_round_trip(tmp_path: Path) -> None:
    examples = [
        Example(label="positive", text="great flight 😍 ça va", image="images/a.jpg",
                split="train", id="1", text_label="positive", image_label="neutral",
                meta={"pair": "mixed", "emoji": "😍"}),
        Example(label="negative", text=None, image="/abs/b.jpg", split="test", id="2"),
        Example(label="neutral", text="just text"),
    ]
    path = write_manifest(examples, tmp_path / "m.jsonl")
    back = read_manifest(path)
    assert back == examples
    assert back[0].meta == {"pair": "mixed", "emoji": "😍"}
    assert [e.id for e in read_manifest(path, split="test")] == ["2"]
    assert back[0].image_path(tmp_path) == tmp_path / "images/a.jpg"
    assert back[1].image_path(tmp_path) == Path("/abs/b.jpg")
    assert not back[1].has_text and back[2].has_text and not back[2].has_image
    assert "😍" in path.read_text(encoding="utf-8")  # human-readable, not \\u escapes


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "x", "label": "happy"}, "label 'happy'"),
        ({"label": "positive"}, "neither"),
        ({"text": "x"}, "no 'label'"),
        ({"text": "x", "label": "neutral", "image_label": "meh"}, "image_label"),
    ],
)
def test_manifest_rejects_bad_rows(tmp_path: Path, row: dict, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"text": "ok", "label": "neutral"})
    path.write_text(good + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=rf"bad.jsonl:2: .*{message}"):
        read_manifest(path)


def test_label_rule() -> None:
    for label in ("negative", "neutral", "positive"):
        assert fuse_labels(label, label) == label
    # one neutral: the polar modality decides, whichever it is
    assert fuse_labels("neutral", "negative") == "negative"
    assert fuse_labels("positive", "neutral") == "positive"
    # conflict: the emoji (image) is the tone marker by default
    assert fuse_labels("positive", "negative") == "negative"
    assert fuse_labels("negative", "positive") == "positive"
    assert fuse_labels("positive", "negative", conflict="text") == "positive"
    assert fuse_labels("positive", "negative", conflict="drop") is None
    assert fuse_labels("neutral", "negative", conflict="drop") == "negative"
    with pytest.raises(ValueError):
        fuse_labels("positive", "negative", conflict="coin")
    assert pair_type("positive", "negative") == "incongruent"
    assert pair_type("neutral", "negative") == "mixed"
    assert pair_type("neutral", "neutral") == "congruent"
    assert pair_type(None, "negative") == "image_only"
    assert pair_type("negative", None) == "text_only"


def test_emoji_label_rule_thresholds() -> None:
    rule = EmojiLabelRule()

    def emoji(neg: int, neu: int, pos: int) -> EmojiSentiment:
        return EmojiSentiment("x", "X", neg + neu + pos, neg, neu, pos)

    assert rule.label(emoji(60, 20, 20)) == "negative"
    assert rule.label(emoji(30, 40, 30)) == "neutral"
    assert rule.label(emoji(5, 25, 70)) == "positive"
    assert rule.label(emoji(20, 40, 40)) is None  # score 0.2: ambiguous gap, dropped
    assert rule.label(emoji(1, 1, 5)) is None  # too rare to trust


def _write_mvsa(root: Path, header: str, rows: dict[str, str]) -> None:
    (root / "data").mkdir(parents=True)
    (root / "labelResultAll.txt").write_text(header + "\n" + "\n".join(
        f"{ident}\t{cells}" for ident, cells in rows.items()) + "\n")
    for ident in rows:
        if ident == "9":
            continue  # missing files
        text = f"tweet {ident} café"
        encoding = "cp1252" if ident == "2" else "utf-8"
        (root / "data" / f"{ident}.txt").write_bytes(text.encode(encoding))
        Image.new("RGB", (8, 8), (10, 20, 30)).save(root / "data" / f"{ident}.jpg")


def test_mvsa_single_merge_rule(tmp_path: Path) -> None:
    _write_mvsa(tmp_path, "ID\ttext,image", {
        "1": "positive,positive", "2": "neutral,negative", "3": "positive,negative",
        "4": "negative,neutral", "9": "neutral,neutral",
    })
    examples, stats = load_mvsa(tmp_path)
    by_id = {e.id: e for e in examples}
    assert set(by_id) == {"mvsa-1", "mvsa-2", "mvsa-4"}
    assert by_id["mvsa-1"].label == "positive"
    assert by_id["mvsa-2"].label == "negative"  # neutral text: the image decides
    assert by_id["mvsa-4"].label == "negative"  # neutral image: the text decides
    assert by_id["mvsa-2"].text == "tweet 2 café"  # cp1252 file decoded
    assert by_id["mvsa-2"].text_label == "neutral" and by_id["mvsa-2"].image_label == "negative"
    assert Path(by_id["mvsa-1"].image).is_file()
    assert stats == {"rows": 5, "no_majority": 0, "conflict": 1, "missing_files": 1, "kept": 3}
    with pytest.raises(ValueError, match="MVSA-single"):
        load_mvsa(tmp_path, kind="multiple")


def test_mvsa_multiple_majority_then_merge(tmp_path: Path) -> None:
    _write_mvsa(tmp_path, "ID\ttext,image\ttext,image\ttext,image", {
        # text: positive (2 of 3); image: neutral (2 of 3) -> positive
        "1": "positive,neutral\tpositive,positive\tnegative,neutral",
        # text majority negative, image majority positive -> conflict, dropped
        "2": "negative,positive\tnegative,positive\tneutral,neutral",
        # image votes all differ -> no majority, dropped
        "3": "neutral,positive\tneutral,negative\tneutral,neutral",
    })
    examples, stats = load_mvsa(tmp_path, kind="multiple")
    assert [(e.id, e.label) for e in examples] == [("mvsa-1", "positive")]
    assert stats["conflict"] == 1 and stats["no_majority"] == 1
    assert majority(["a", "b", "a"]) == "a" and majority(["a", "b", "c"]) is None
    many = [Example(label="neutral", text=str(i), id=str(i)) for i in range(50)]
    first, again = assign_splits(many, seed=1), assign_splits(many, seed=1)
    assert [e.split for e in first] == [e.split for e in again]
    assert [e.split for e in first].count("train") == 40


def test_load_tweets_filters_and_dedupes(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(
        "sentiment,confidence,text\n"
        "positive,1,love it\n"
        "negative,0.4,coin flip\n"  # low agreement
        "neutral,,no confidence given\n"
        "positive,0.9,same text\n"
        "negative,0.9,same  text\n"  # same text (after whitespace), other label: ambiguous
        "joy,1,not a label\n"
    )
    tweets = load_tweets(csv)
    assert [(t.text, t.label) for t in tweets] == [
        ("love it", "positive"), ("no confidence given", "neutral")
    ]


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_benchmark_build_is_deterministic_and_held_out(tmp_path: Path) -> None:
    build_tiny(tmp_path / "a", tmp_path)
    build_tiny(tmp_path / "b", tmp_path)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    other = build_tiny(tmp_path / "c", tmp_path, spec=TINY_SPEC.__class__(
        **{**TINY_SPEC.__dict__, "seed": 4}))
    assert (tmp_path / "c" / MANIFEST).read_text() != (tmp_path / "a" / MANIFEST).read_text()
    assert other["splits"]["train"]["examples"] == 240

    examples = read_manifest(tmp_path / "a" / MANIFEST)
    by_split: dict[str, list[Example]] = {}
    for e in examples:
        by_split.setdefault(e.split or "", []).append(e)
    assert {s: len(v) for s, v in by_split.items()} == TINY_SPEC.examples
    # held out: no test tweet or test emoji glyph is ever seen in training
    train_texts = {e.text for e in by_split["train"] if e.text}
    test_texts = {e.text for e in by_split["test"] if e.text}
    assert test_texts and not train_texts & test_texts
    train_emoji = set("".join(e.meta["emoji"] for e in by_split["train"] if e.meta["emoji"]))
    test_emoji = set("".join(e.meta["emoji"] for e in by_split["test"] if e.meta["emoji"]))
    assert test_emoji and not train_emoji & test_emoji
    assert {e.meta["style"] for e in by_split["test_emojify"] if e.image} == {"outline"}
    # every kind of example is present and labelled by the rule
    pairs = {e.meta["pair"] for e in by_split["train"]}
    assert pairs == {"text_only", "image_only", "congruent", "mixed", "incongruent"}
    for e in examples:
        if e.has_text and e.has_image:
            assert e.label == fuse_labels(e.text_label, e.image_label)
            if e.meta["pair"] == "incongruent":
                assert e.label == e.image_label != e.text_label
        else:
            assert e.label == (e.text_label or e.image_label)
        if e.image:
            assert (tmp_path / "a" / e.image).is_file()
    info = json.loads((tmp_path / "a" / INFO).read_text())
    assert info["spec"]["seed"] == 3 and info["held_out_style"] == "outline"


def test_augmented_training_renders_change_nothing_else(tmp_path: Path) -> None:
    """--augment-train jitters the training pictures only: every other split's image bytes and
    every example (pairing, labels, paths) stay those of the plain build, so models trained
    with and without it are scored on the very same test set."""
    build_tiny(tmp_path / "plain", tmp_path)
    build_tiny(tmp_path / "aug", tmp_path,
               spec=TINY_SPEC.__class__(**{**TINY_SPEC.__dict__, "augment_train": True}))
    plain, aug = (read_manifest(tmp_path / d / MANIFEST) for d in ("plain", "aug"))
    assert [e.__dict__ for e in plain] == [e.__dict__ for e in aug]
    changed = {split: sum((tmp_path / "plain" / e.image).read_bytes()
                          != (tmp_path / "aug" / e.image).read_bytes()
                          for e in {e.image: e for e in plain if e.split == split and e.image
                                    }.values())
               for split in TINY_SPEC.examples}  # fmt: skip
    assert changed["train"] > 0
    assert all(n == 0 for split, n in changed.items() if split != "train"), changed


@pytest.mark.skipif(not NOTO_FONT.exists(), reason="needs fonts-noto-color-emoji (apt)")
def test_noto_glyphs_render_colour_emoji() -> None:
    glyphs = NotoGlyphs()
    face = glyphs.glyph("😂")
    assert face is not None and face.mode == "RGBA" and min(face.size) > 80
    assert glyphs.glyph("a") is None  # not an emoji: no colour bitmap in this font
