"""The framework-neutral pipeline on batches mixing good and bad items (no server)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from conftest import b64, jpeg_bytes
from mmsent.serving.exchange import Exchange
from mmsent.serving.limits import RequestLimits
from mmsent.serving.pipeline import SentimentPipeline


@pytest.fixture(scope="module")
def pipeline(tiny_build: tuple[Path, Path]) -> SentimentPipeline:
    return SentimentPipeline.from_dir(tiny_build[1])


def _png(mode: str, size: tuple[int, int] = (40, 30), **info: Any) -> bytes:
    color = {"1": 1, "L": 128, "LA": (128, 200), "P": 3, "RGBA": (10, 20, 30, 0),
             "I;16": 40000, "I": 70000, "CMYK": (0, 0, 0, 0)}.get(mode, 0)
    img = Image.new(mode, size, color)
    buf = io.BytesIO()
    img.save(buf, "TIFF" if mode in ("CMYK", "I") else "PNG", **info)
    return buf.getvalue()


GOOD_JSON = {"body": {"text": "what a lovely day", "image": b64(jpeg_bytes())}}
BAD_CASES: dict[str, tuple[dict[str, Any], int, str]] = {
    "malformed json": ({"body": b'{"text": "x",'}, 400, "malformed JSON"),
    "json array": ({"body": b"[1, 2]"}, 400, "must be an object"),
    "text is a number": ({"body": {"text": 5}}, 400, '"text" must be a string, got number'),
    "image is a list": ({"body": {"image": [1, 2]}}, 400, "base64-encoded string, got array"),
    "neither": ({"body": {}}, 400, "needs non-empty"),
    "whitespace text only": ({"body": {"text": "  \n\t "}}, 400, "needs non-empty"),
    "invalid base64": ({"body": {"image": "not base64!!"}}, 400, "not valid base64"),
    "not an image": ({"body": {"image": b64(b"hello world, no pixels")}}, 400, "not a recognised"),
    "truncated jpeg": ({"image": jpeg_bytes((400, 300))[:700]}, 400, "could not be decoded"),
    "text not utf-8": ({"text": b"\xff\xfe\xfa"}, 400, "not valid UTF-8"),
    "image wrong type in form": ({"image": 12}, 400, "must be image bytes"),
    "lone surrogate": ({"body": {"text": "hi \ud800"}}, 400, "lone surrogate U+D800"),
    "misspelled json field": ({"body": {"text": "x", "imgae": "y"}}, 400,
                              'unknown JSON field "imgae"'),
    "unknown form part": ({"text": b"x", "caption": b"y"}, 400, 'unknown form field "caption"'),
    "json body plus a form field": ({"data": b'{"text": "x"}', "text": b"y"}, 400,
                                    'form field "text" sent together with a "data" body'),
    "integer over 4300 digits": ({"body": b'{"text": 1' + b"0" * 5000 + b"}"}, 400,
                                 "malformed JSON: a number is too long"),
    "nested too deeply": ({"body": b"[" * 100_000}, 400, "malformed JSON: nested too deeply"),
    "empty body": ({"body": b""}, 400, "request body is empty"),
}  # fmt: skip


def test_bad_items_fail_alone_and_good_ones_match_a_clean_batch(
    pipeline: SentimentPipeline,
) -> None:
    requests = [GOOD_JSON]
    for raw, _, _ in BAD_CASES.values():
        requests.append(raw)
    requests.append({"text": b"only text", "image": None})
    requests.append({"body": jpeg_bytes((64, 48), (0, 0, 255))})  # bare image body
    answers = Exchange(pipeline).predict(requests)
    assert len(answers) == len(requests)
    for (name, (_, status, message)), answer in zip(BAD_CASES.items(), answers[1:], strict=False):
        assert answer["code"] == status, name
        assert message in answer["error"], (name, answer)
    good = [answers[0], answers[-2], answers[-1]]
    assert [a["modalities"] for a in good] == [["text", "image"], ["text"], ["image"]]
    for answer in good:
        assert answer["label"] in pipeline.cfg.labels
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert answer["batch_size"] == len(requests)
    alone = Exchange(pipeline).predict([GOOD_JSON])[0]
    for label, p in alone["probabilities"].items():
        assert answers[0]["probabilities"][label] == pytest.approx(p, abs=1e-5)


def test_all_bad_batch_returns_only_errors(pipeline: SentimentPipeline) -> None:
    answers = Exchange(pipeline).predict([raw for raw, _, _ in BAD_CASES.values()])
    assert all("error" in a for a in answers)


def test_contributions_follow_the_modalities_present(pipeline: SentimentPipeline) -> None:
    text_only, image_only, both = Exchange(pipeline).predict([
        {"body": {"text": "hi"}}, {"body": {"image": b64(jpeg_bytes())}}, GOOD_JSON,
    ])
    assert text_only["contributions"] == {"text": 1.0, "image": 0.0}
    assert image_only["contributions"] == {"text": 0.0, "image": 1.0}
    assert sum(both["contributions"].values()) == pytest.approx(1.0, abs=1e-3)


def test_batch_is_tokenized_in_one_call(pipeline: SentimentPipeline) -> None:
    calls: list[int] = []
    real = pipeline.tokenizer

    class Counting:
        def __call__(self, texts: list[str], **kw: Any) -> Any:
            calls.append(len(texts))
            return real(texts, **kw)

    pipeline.tokenizer = Counting()
    try:
        Exchange(pipeline).predict([{"body": {"text": f"text number {i}"}} for i in range(6)])
    finally:
        pipeline.tokenizer = real
    assert calls == [6]


def test_long_text_is_truncated_and_says_so(pipeline: SentimentPipeline) -> None:
    limit = pipeline.limits.max_text_chars
    short, long_tokens, huge = Exchange(pipeline).predict([
        {"body": {"text": "fine"}},
        {"body": {"text": "word " * (pipeline.cfg.max_text_length * 2)}},
        {"body": {"text": "x" * (limit * 3)}},
    ])
    assert short["text_truncated"] is False
    assert long_tokens["text_truncated"] is True and "label" in long_tokens
    assert huge["text_truncated"] is True and "label" in huge


@pytest.mark.parametrize("text", ["😀😀 love it", "هذا رائع جدا", "שלום עולם", "naïve café 中文"])
def test_unicode_text_is_accepted(pipeline: SentimentPipeline, text: str) -> None:
    (answer,) = Exchange(pipeline).predict([{"body": json.dumps({"text": text}).encode()}])
    assert answer["modalities"] == ["text"], answer


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "I;16", "I", "CMYK"])
def test_unusual_image_modes_are_converted(pipeline: SentimentPipeline, mode: str) -> None:
    data = _png(mode, transparency=0) if mode == "P" else _png(mode)
    (answer,) = Exchange(pipeline).predict([{"image": data}])
    assert answer.get("modalities") == ["image"], answer


def test_empty_image_means_no_image_on_every_route(pipeline: SentimentPipeline) -> None:
    """One rule for an empty image field, whatever the route: it counts as absent (what a
    browser sends for a form whose file input was left empty). Before, JSON said 400."""
    answers = Exchange(pipeline).predict([
        {"text": b"just words", "image": b""},  # multipart / gRPC part of zero bytes
        {"text": "just words", "image": "  "},  # a form field typed in as text
        {"body": {"text": "just words", "image": ""}},  # JSON, empty base64
        {"body": b'{"text": "just words", "image": "data:image/png;base64,"}'},
        {"body": {"text": "just words", "image": None}},  # JSON null
    ])  # fmt: skip
    assert [a["modalities"] for a in answers] == [["text"]] * 5, answers
    first = answers[0]["probabilities"]
    assert all(a["probabilities"] == pytest.approx(first, abs=1e-5) for a in answers)
    nothing = Exchange(pipeline).predict([{"text": b"", "image": b""}, {"body": {"image": ""}}])
    assert all(a["code"] == 400 and "needs non-empty" in a["error"] for a in nothing)


def test_several_poisoned_texts_fail_alone(pipeline: SentimentPipeline) -> None:
    """Lone surrogates (high, low, one far beyond the 20k-char clip) mixed into one batch: each
    gets its own 400, the good rows their clean-batch answer. Before: the batched tokenizer
    call raised and the whole batch failed."""
    good = [{"body": {"text": f"good text number {i}"}} for i in range(4)]
    poisoned = [{"body": {"text": "hi \ud800"}}, {"body": {"text": "\udfff at the start"}},
                {"body": b'{"text": "emoji half \\ud83d"}'},
                {"body": {"text": "x" * 25_000 + "\udc00"}}]  # fmt: skip
    mixed = [good[0], poisoned[0], poisoned[1], good[1], poisoned[2], good[2], poisoned[3], good[3]]
    answers = Exchange(pipeline).predict(mixed)
    clean = Exchange(pipeline).predict(good)
    for i in (1, 2, 4, 6):
        assert answers[i]["code"] == 400 and "lone surrogate" in answers[i]["error"], answers[i]
    for mate, ref in zip([answers[i] for i in (0, 3, 5, 7)], clean, strict=True):
        assert mate["probabilities"] == pytest.approx(ref["probabilities"], abs=1e-5)


def test_a_failing_batched_step_is_retried_item_by_item(pipeline: SentimentPipeline) -> None:
    """An unforeseen per-item failure inside the ONE batched tokenizer call (injected here: the
    tokenizer raises on any batch holding "POISON") costs only the items that fail alone: they
    get a 500 each, every other row its normal answer."""
    real = pipeline.tokenizer

    def picky(texts: list[str], **kw: Any) -> Any:
        if any("POISON" in t for t in texts):
            raise RuntimeError("tokenizer exploded")
        return real(texts, **kw)

    good = [{"body": {"text": f"fine text {i}"}} for i in range(3)]
    clean = Exchange(pipeline).predict(good)
    pipeline.tokenizer = picky
    try:
        answers = Exchange(pipeline).predict([good[0], {"body": {"text": "POISON one"}}, good[1],
                                    {"text": b"POISON two", "image": jpeg_bytes()}, good[2]])
    finally:
        pipeline.tokenizer = real
    assert [a.get("code") for a in answers] == [None, 500, None, 500, None], answers
    assert answers[1]["error"] == "internal error: RuntimeError"
    for mate, ref in zip([answers[0], answers[2], answers[4]], clean, strict=True):
        assert mate["probabilities"] == pytest.approx(ref["probabilities"], abs=1e-5)
        assert mate["batch_size"] == 5


def test_data_uri_base64_is_accepted(pipeline: SentimentPipeline) -> None:
    uri = "data:image/jpeg;base64," + b64(jpeg_bytes())
    (answer,) = Exchange(pipeline).predict([{"body": {"image": uri}}])
    assert answer["modalities"] == ["image"]


@pytest.mark.parametrize("side", [10_000, 20_000])
def test_decompression_bomb_is_refused_before_decoding(
    pipeline: SentimentPipeline, side: int
) -> None:
    buf = io.BytesIO()
    Image.new("1", (side, side), 0).save(buf, "PNG")
    assert len(buf.getvalue()) < 100_000  # small file, huge pixel count
    (answer,) = Exchange(pipeline).predict([{"image": buf.getvalue()}, ][:1])
    assert answer["code"] == 413
    assert "pixels" in answer["error"] or "bomb" in answer["error"]


def test_image_over_byte_limit_is_refused(pipeline: SentimentPipeline) -> None:
    small = SentimentPipeline(
        pipeline.model, pipeline.tokenizer, pipeline.cfg,
        limits=RequestLimits(max_image_bytes=1000, max_image_pixels=10**7, max_text_chars=100),
    )
    big, ok = Exchange(small).predict([{"image": jpeg_bytes((300, 300))},
                                       {"body": {"text": "fine"}}])
    assert big["code"] == 413 and "limit" in big["error"]
    assert ok["label"] in pipeline.cfg.labels
