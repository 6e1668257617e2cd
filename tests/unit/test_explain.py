"""Explanations in process (mmsent.serving.explain) and through the handler, on the tiny model.

What must hold whatever the model: word offsets point exactly into the caller's text, the
scores are the probability drops they claim to be, they are deterministic, every class's table
comes from the same passes (drops over classes sum to 0), and limits / bad options are refused
per item without touching batch mates.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from ts.context import Context, RequestProcessor

from conftest import MODEL_NAME, b64, jpeg_bytes
from mmsent.serving.exchange import Exchange
from mmsent.serving.explain import (
    CLASSES_FIELD,
    GRID_FIELD,
    MODEL_ROWS,
    ExplainOptions,
    region_ids,
    split_options,
    words_of,
)
from mmsent.serving.limits import RequestLimits
from mmsent.serving.pipeline import SentimentPipeline, tokenize

GRID, CLASSES = GRID_FIELD, CLASSES_FIELD
HANDLER_PATH = Path(__file__).resolve().parents[2] / "handlers" / "fusion_handler.py"
IMAGE = jpeg_bytes((160, 120), (200, 40, 40))
# whitespace of every kind, emoji with skin tone / ZWJ / flags, accents (BERT strips them),
# CJK without spaces, RTL, a zero-width space inside a word, punctuation glued to words
ODD_TEXTS = [
    "Oh great, another two hour delay",
    "  Café 😠 ÉTÉ naïve don't👍🏽\tfamily 👨‍👩‍👧 flag 🇫🇷\n",
    "日本語のテキスト とても良い",
    "مرحبا بالعالم this is RTL",
    "zero\u200bwidth inside, e\u0301 combining",
    "!!! ??? ... ---",
]


@pytest.fixture(scope="module", params=[1.0, 3.0], ids=["T=1", "T=3"])
def pipeline(tiny_build: tuple[Path, Path], request: pytest.FixtureRequest) -> SentimentPipeline:
    """The tiny model as served, uncalibrated and with a softmax temperature (the answers'
    probabilities are softmax(logits / T): explanations must explain those numbers)."""
    pipe = SentimentPipeline.from_dir(tiny_build[1])
    pipe.cfg = dataclasses.replace(pipe.cfg, temperature=request.param)
    return pipe


def _explain(pipeline: SentimentPipeline, body: dict[str, Any],
             options: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    return Exchange(pipeline).explain([{"body": body, **(options or {})}])[0]


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_word_offsets_map_back_to_the_original_text(
    pipeline: SentimentPipeline, text: str
) -> None:
    words = _explain(pipeline, {"text": text})["explanation"]["words"]
    assert words, text
    assert [w["word"] for w in words] == text.split()  # every word here yields a token
    last = 0
    for w in words:
        assert text[w["start"] : w["end"]] == w["word"]
        assert not any(ch.isspace() for ch in w["word"]) and w["start"] >= last
        last = w["end"]
    # every token the model read belongs to exactly one word
    enc = tokenize(pipeline.tokenizer, [text], pipeline.cfg).encodings[0]
    grouped = [t for word in words_of(text, enc) for t in word.tokens]
    real = [i for i, special in enumerate(enc.special_tokens_mask) if not special]
    assert sorted(grouped) == real


def test_scores_are_deterministic(pipeline: SentimentPipeline) -> None:
    body = {"text": "what a lovely surprise 🎉", "image": b64(IMAGE)}
    first, second = (_explain(pipeline, body)["explanation"] for _ in range(2))
    first.pop("ms"), second.pop("ms")
    assert first == second


def test_scores_are_the_probability_drops_they_claim(pipeline: SentimentPipeline) -> None:
    """Modality scores = p(class | both) - p(class | the other modality alone), checked against
    plain predictions; word and region scores come from the same Captum call."""
    text = "the staff were friendly"
    answer = _explain(pipeline, {"text": text, "image": b64(IMAGE)}, {CLASSES: b"all"})
    label, explanation = answer["label"], answer["explanation"]
    image_only, text_only = Exchange(pipeline).predict([{"body": {"image": b64(IMAGE)}},
                                              {"body": {"text": text}}])  # fmt: skip
    for name, alone in (("text", image_only), ("image", text_only)):
        expected = answer["probabilities"][label] - alone["probabilities"][label]
        assert explanation["modalities"][name] == pytest.approx(expected, abs=2e-4)
    # every class from the same passes: removing a feature moves probability mass between
    # classes, so the drops over all classes sum to 0
    classes = explanation["classes"]
    assert list(classes) == list(pipeline.cfg.labels)
    assert classes[label]["words"] == [w["score"] for w in explanation["words"]]
    assert classes[label]["image"] == explanation["image"]["scores"]
    for i in range(len(explanation["words"])):
        assert sum(c["words"][i] for c in classes.values()) == pytest.approx(0, abs=1e-3)
    cells = [sum(c["image"][r][k] for c in classes.values()) for r in range(7) for k in range(7)]
    assert max(map(abs, cells)) < 1e-3


def test_modalities_present_decide_what_is_explained(pipeline: SentimentPipeline) -> None:
    text_only = _explain(pipeline, {"text": "just words here"})["explanation"]
    assert text_only["image"] is None and text_only["modalities"]["image"] == 0.0
    # 3 words + the text modality in one padded pass, plus the unperturbed request
    assert text_only["forward_passes"] == 1 + math.ceil(4 / MODEL_ROWS)
    image_only = _explain(pipeline, {"image": b64(IMAGE)}, {GRID: b"4"})["explanation"]
    assert image_only["words"] == [] and image_only["modalities"]["text"] == 0.0
    assert image_only["image"]["grid"] == [4, 4]
    assert [len(row) for row in image_only["image"]["scores"]] == [4] * 4
    assert image_only["forward_passes"] == 1 + math.ceil(17 / MODEL_ROWS)


@pytest.mark.parametrize(("size", "grid"), [(224, 7), (64, 7), (64, 14), (224, 1)])
def test_regions_tile_the_image_evenly(size: int, grid: int) -> None:
    ids = region_ids(size, grid, 5, torch.device("cpu"))[0, 0]
    assert ids.unique().tolist() == list(range(5, 5 + grid * grid))
    counts = torch.bincount(ids.flatten() - 5)
    assert counts.max() - counts.min() <= 2 * size // grid + 1  # cells differ by <= 1 px a side
    assert ids[0, -1] == 5 + grid - 1 and ids[-1, 0] == 5 + grid * (grid - 1)  # row-major


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({GRID: b"15"}, 413, "at most 100 regions"),
        ({GRID: b"0"}, 400, "positive integer"),
        ({GRID: "seven"}, 400, "positive integer"),
        ({GRID: "²"}, 400, "positive integer"),  # a digit to str.isdigit, not to int()
        ({GRID: "9" * 5000}, 400, "positive integer"),  # over int()'s 4300-digit limit
        ({CLASSES: b"some"}, 400, '"predicted" or "all"'),
    ],
)
def test_bad_options_are_refused(fields: dict[str, Any], status: int, message: str) -> None:
    from mmsent.errors import RequestError

    with pytest.raises(RequestError, match=message) as err:
        split_options({"body": b"{}", **fields}, RequestLimits())
    assert err.value.status == status


def test_options_leave_the_payload_untouched() -> None:
    item, options = split_options({"text": b"hi", GRID: b"10", CLASSES: b"all"},
                                  RequestLimits())  # fmt: skip
    assert item == {"text": b"hi"} and options == ExplainOptions(grid=10, all_classes=True)
    # from headers (any request form); a form field wins over a header
    item, options = split_options({"body": b"{}", GRID: b"3"}, RequestLimits(),
                                  {GRID: "5", CLASSES: "all"})  # fmt: skip
    assert item == {"body": b"{}"} and options == ExplainOptions(grid=3, all_classes=True)


def test_word_limit_is_a_413_and_batch_mates_are_answered(
    pipeline: SentimentPipeline,
) -> None:
    small = SentimentPipeline(pipeline.model, pipeline.tokenizer, pipeline.cfg,
                              limits=RequestLimits(max_explain_words=5))  # fmt: skip
    answers = Exchange(small).explain([
        {"body": {"text": "one two three four five six"}},
        {"body": {"text": "one two three four five"}},
        {"body": b"{broken"},
        {"body": {"image": b64(IMAGE)}, GRID: b"99"},
    ])  # fmt: skip
    assert answers[0]["code"] == 413 and "at most 5 words" in answers[0]["error"]
    assert len(answers[1]["explanation"]["words"]) == 5
    assert answers[2]["code"] == 400 and answers[3]["code"] == 413


# -- the handler contract (real ts Context, headers as TorchServe sets them) ------------------
def _handler(tiny_build: tuple[Path, Path]) -> Any:
    spec = importlib.util.spec_from_file_location("fusion_handler_explain", HANDLER_PATH)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    handler = module.FusionSentimentHandler()
    handler.initialize(Context(MODEL_NAME, str(tiny_build[1]), {}, 8, None, "0.12.0"))
    return handler


def test_handler_explains_per_item_in_a_mixed_batch(tiny_build: tuple[Path, Path]) -> None:
    """/predictions and /explanations items share a batch: only the latter are explained
    (BaseHandler._is_explain would have decided from item 0 for all of them)."""
    handler = _handler(tiny_build)
    context = Context(MODEL_NAME, str(tiny_build[1]), {}, 8, None, "0.12.0")
    explain = {"explain": "True", "content-type": "application/json"}
    predict = {"content-type": "application/json"}
    data = [
        ({"body": {"text": "great day"}}, predict),
        ({"body": {"text": "great day", "image": b64(IMAGE)}}, {**explain, CLASSES: "all"}),
        ({"body": {"text": "bad"}}, {**explain, GRID: "20"}),
        ({"body": {"text": "fine"}, GRID: b"3"}, predict),  # an option field on /predictions
        ({"text": b"multipart form", "image": IMAGE, GRID: b"2"}, explain),
    ]
    context.request_processor = [RequestProcessor(headers) for _, headers in data]
    answers = [json.loads(a) for a in handler.handle([d for d, _ in data], context)]
    statuses = [context.get_response_status(i)[0] for i in range(len(data))]
    assert statuses == [200, 200, 413, 400, 200]
    assert "explanation" not in answers[0]
    assert set(answers[1]["explanation"]["classes"]) == set(handler.pipeline.cfg.labels)
    assert answers[4]["explanation"]["image"]["grid"] == [2, 2]
    assert [w["word"] for w in answers[4]["explanation"]["words"]] == ["multipart", "form"]
    assert answers[0]["probabilities"] == Exchange(handler.pipeline).predict(
        [{"body": {"text": "great day"}}])[0]["probabilities"]  # fmt: skip


def test_script_draws_png_and_html_in_process(tiny_build: tuple[Path, Path],
                                              tmp_path: Path) -> None:  # fmt: skip
    from PIL import Image

    from mmsent.evaluation.explain_picture import main as explain_main

    image = tmp_path / "in.jpg"
    image.write_bytes(IMAGE)
    args = ["--model-dir", str(tiny_build[1]), "--text", "Café 😠 is great", "--image", str(image)]
    assert explain_main([*args, "--out", str(tmp_path / "x.png"), "--json"]) == 0
    assert explain_main([*args, "--out", str(tmp_path / "x.html"), "--grid", "4"]) == 0
    answer = json.loads((tmp_path / "x.json").read_text())
    assert [w["word"] for w in answer["explanation"]["words"]] == ["Café", "😠", "is", "great"]
    assert Image.open(tmp_path / "x.png").size[0] == 760
    page = (tmp_path / "x.html").read_text()
    assert "Café" in page and "data:image/png;base64," in page
