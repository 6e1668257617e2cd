"""Training on cached features: it learns, it resumes exactly, and train == serve maths."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import TINY_CFG
from mmsent.evaluation.evaluate import ModelSpec, evaluate_models
from mmsent.evaluation.report import write_report
from mmsent.modeling.checkpoint import load_checkpoint
from mmsent.modeling.encoders import build_tokenizer
from mmsent.serving.imaging import decode_image
from mmsent.serving.tokenizer import tokenize
from mmsent.training.features import load_data, predict
from mmsent.training.train import TrainConfig, lr_lambda, modality_dropout, train


def _config(manifest: Path, out: Path, **changes) -> TrainConfig:
    base = TrainConfig(
        manifest=str(manifest), out_dir=str(out), epochs=4, batch_size=32, lr=3e-3,
        cache_dir=str(out.parent / "cache"), num_threads=1,
    )
    return replace(base, **changes)


def test_loss_decreases_and_checkpoint_matches_serving(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    # Random tiny encoders give weak features, so ask for what they allow: fitting 64 examples.
    tc = _config(tiny_dataset, tmp_path / "run", epochs=40, batch_size=16,
                 max_train_examples=64, modality_dropout=0.0, label_smoothing=0.0)
    summary = train(tc, TINY_CFG)
    losses = [h["train_loss"] for h in summary["history"]]
    assert sum(losses[-3:]) < 0.75 * sum(losses[:3]), losses
    assert (tmp_path / "run" / "best.pt").is_file()

    # The saved checkpoint rebuilt from disk, run end to end on raw text + image bytes (the
    # serving path), gives the same probabilities as the head on cached features (training).
    model, cfg, extra = load_checkpoint(tmp_path / "run" / "best.pt")
    # the fitted temperature is the only config change training makes
    assert cfg.replace(temperature=1.0) == TINY_CFG and cfg.temperature > 0
    assert extra["modalities"] == "both" and extra["epoch"] >= 1
    assert extra["temperature_fitted_on"] == "val"
    data = load_data(tiny_dataset, ["test"], model, cfg, tmp_path / "cache")["test"]
    probs, _ = predict(model, data)
    rows = [i for i, e in enumerate(data.examples) if e.has_text and e.has_image][:8]
    examples = [data.examples[i] for i in rows]
    enc = tokenize(build_tokenizer(cfg.text_encoder), [e.text for e in examples], cfg)
    pixels = torch.stack([
        decode_image(e.image_path(tiny_dataset.parent).read_bytes(), cfg) for e in examples
    ])
    ones = torch.ones(len(examples))
    with torch.no_grad():
        logits, parts = model(enc["input_ids"], enc["attention_mask"], pixels, ones, ones)
    torch.testing.assert_close(logits.softmax(-1), probs[rows], atol=2e-3, rtol=0)
    assert torch.allclose(parts.sum(-1), ones, atol=1e-4)


def test_resume_reproduces_an_uninterrupted_run(tiny_dataset: Path, tmp_path: Path) -> None:
    full = train(_config(tiny_dataset, tmp_path / "full", epochs=3), TINY_CFG)
    part = _config(tiny_dataset, tmp_path / "part", epochs=3, stop_after_epoch=1)
    first = train(part, TINY_CFG)
    assert len(first["history"]) == 1
    resumed = train(replace(part, stop_after_epoch=None), TINY_CFG, resume=True)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["steps"] == full["steps"]
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)["head"]
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=False)["head"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_unfreezing_last_bert_layer_trains_only_that_layer(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    tc = _config(tiny_dataset, tmp_path / "ft", epochs=1, unfreeze_text_layers=1,
                 max_train_examples=32, batch_size=16)
    train(tc, TINY_CFG)
    payload = torch.load(tmp_path / "ft" / "best.pt", weights_only=False)
    assert "text_encoder" in payload  # fine-tuned encoders travel with the checkpoint
    torch.manual_seed(tc.seed)  # the same initial encoders train() started from
    from mmsent.modeling.model import build_model

    start = build_model(TINY_CFG).text_encoder.state_dict()
    tuned = payload["text_encoder"]
    first = [k for k in start if k.startswith("encoder.layer.0.")]
    last = [k for k in start if k.startswith("encoder.layer.1.")]
    assert all(torch.equal(start[k], tuned[k]) for k in first)
    assert any(not torch.equal(start[k], tuned[k]) for k in last)


def test_modality_dropout_relabels_to_remaining_modality() -> None:
    from mmsent.training.features import FeatureBatch as Batch

    n = 4000
    batch = Batch(None, torch.ones(n, 3, dtype=torch.long), None, torch.zeros(n, 2, 5),
                  torch.ones(n), torch.ones(n), torch.full((n,), 0))
    text_labels = torch.full((n,), 2)  # positive tweet ...
    image_labels = torch.full((n,), 0)  # ... with a negative emoji: label negative (0)
    out = modality_dropout(batch, 0.25, text_labels, image_labels, torch.Generator().manual_seed(0))
    no_text, no_image = out.has_text == 0, out.has_image == 0
    assert not (no_text & no_image).any()
    assert 0.2 < no_text.float().mean() < 0.3 and 0.2 < no_image.float().mean() < 0.3
    assert (out.labels[no_image] == 2).all() and (out.labels[~no_image] == 0).all()


def test_lr_schedule_warms_up_then_decays() -> None:
    values = [lr_lambda(s, 100, 10, "cosine") for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))
    assert values[-1] < 0.01 and lr_lambda(99, 100, 10, "linear") < 0.02


def test_evaluate_writes_report(tiny_dataset: Path, tmp_path: Path) -> None:
    train(_config(tiny_dataset, tmp_path / "att", epochs=1), TINY_CFG)
    train(_config(tiny_dataset, tmp_path / "txt", epochs=1, modalities="text"), TINY_CFG)
    results = evaluate_models(
        tiny_dataset,
        [ModelSpec("attention", str(tmp_path / "att" / "best.pt")),
         ModelSpec("text only", str(tmp_path / "txt" / "best.pt"), "baseline")],
        ["test", "test_emojify"], cache_dir=tmp_path / "cache", num_threads=1,
    )
    paths = write_report(results, tmp_path / "eval", command="pytest")
    metrics = json.loads(paths["json"].read_text())
    test = metrics["models"]["attention"]["splits"]["test"]
    assert set(test) >= {"all", "text_only", "image_only", "both", "incongruent"}
    assert sum(map(sum, test["all"]["confusion"])) == 60
    # the text-only baseline never sees images: on image-only examples it predicts one class
    text_only = metrics["models"]["text only"]["splits"]["test"]["image_only"]["confusion"]
    assert sum(1 for col in zip(*text_only, strict=True) if sum(col)) == 1
    report = paths["markdown"].read_text()
    assert "| attention |" in report and "chance: majority class" in report
    assert paths["confusion_test"].stat().st_size > 1000
    # per slice: attention minus the (only) baseline, with a paired interval around it
    for group, c in metrics["comparisons"]["test"].items():
        ours = test[group]["accuracy"]
        theirs = metrics["models"]["text only"]["splits"]["test"][group]["accuracy"]
        assert c["baseline"] == "text only" and c["diff"] == pytest.approx(ours - theirs)
        assert c["low"] <= c["diff"] <= c["high"]
    assert "95 % interval" in report
