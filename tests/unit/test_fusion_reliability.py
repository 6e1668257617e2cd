"""Issue 13: cross-fitted image evidence, fine-tuning the top BERT layer on cached states, and a
calibrated temperature that the archive carries and serving applies."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import TINY_CFG
from mmsent.config import ModelConfig
from mmsent.evaluation.metrics import calibration, recall_gap
from mmsent.modeling.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from mmsent.modeling.encoders import build_tokenizer
from mmsent.modeling.export import export_model_dir
from mmsent.modeling.model import build_model
from mmsent.serving.pipeline import SentimentPipeline
from mmsent.serving.tokenizer import tokenize
from mmsent.training.crossfit import glyph_folds, glyphs_of
from mmsent.training.features import load_data, predict, run_top_layers
from mmsent.training.train import TrainConfig, fit_temperature, train

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHECKPOINT = ROOT / "weights" / "default_head.pt"
EVIDENCE_CFG = replace(TINY_CFG, image_input="evidence")


def _config(manifest: Path, out: Path, **changes) -> TrainConfig:
    base = TrainConfig(
        manifest=str(manifest),
        out_dir=str(out),
        epochs=2,
        batch_size=32,
        lr=3e-3,
        cache_dir=str(out.parent / "cache"),
        num_threads=1,
    )
    return replace(base, **changes)


def test_top_layers_on_cached_states_equal_the_full_encoder() -> None:
    torch.manual_seed(0)
    encoder = build_model(TINY_CFG).text_encoder
    enc = tokenize(
        build_tokenizer("tiny"), ["a short one", "a much longer text, padded less"], TINY_CFG
    )
    with torch.no_grad():
        out = encoder(
            **{k: enc[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True
        )
        top = run_top_layers(encoder, out.hidden_states[1], enc["attention_mask"], 1)
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(top[real], out.last_hidden_state[real], atol=1e-5, rtol=0)


def test_checkpoint_stores_only_the_fine_tuned_layers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(TINY_CFG)
    with torch.no_grad():
        for p in model.text_encoder.encoder.layer[1].parameters():
            p.add_(0.5)
    save_checkpoint(model, TINY_CFG, tmp_path / "ft.pt", text_layers_from=1)
    payload = read_checkpoint(tmp_path / "ft.pt")
    assert "text_encoder" not in payload and payload["text_layers"]["from"] == 1
    assert all(k.startswith("0.") for k in payload["text_layers"]["state"])  # layer 1 only
    torch.manual_seed(0)  # the same random tiny encoder, as a registry package would rebuild it
    loaded, _, _ = load_checkpoint(tmp_path / "ft.pt")
    for key, value in model.text_encoder.state_dict().items():
        torch.testing.assert_close(loaded.text_encoder.state_dict()[key], value, msg=key)


def test_glyph_folds_are_stratified_and_cover_every_glyph() -> None:
    labels = {chr(0x1F600 + i): i % 3 for i in range(30)}
    folds = glyph_folds(labels, 5, seed=0)
    assert set(folds) == set(labels) and set(folds.values()) == set(range(5))
    for f in range(5):
        assert sorted(labels[g] for g in folds if folds[g] == f) == [0, 0, 1, 1, 2, 2]
    assert glyphs_of("\u2764\ufe0f\U0001f600") == ["\u2764", "\U0001f600"]


def test_evidence_head_trains_cross_fitted_and_exports(tiny_dataset: Path, tmp_path: Path) -> None:
    summary = train(_config(tiny_dataset, tmp_path / "ev", crossfit_folds=3), EVIDENCE_CFG)
    assert summary["temperature"] > 0
    model, cfg, _ = load_checkpoint(tmp_path / "ev" / "best.pt")
    assert cfg.image_input == "evidence" and cfg.temperature == pytest.approx(
        summary["temperature"]
    )
    # the served image branch is the classifier the cross-fit trained on all glyphs: frozen,
    # so it is the same in best.pt and last.pt
    best = read_checkpoint(tmp_path / "ev" / "best.pt")["head"]
    last = read_checkpoint(tmp_path / "ev" / "last.pt")["head"]
    for key in (k for k in best if k.startswith("image_classifier.")):
        torch.testing.assert_close(best[key], last[key], msg=key)
    export_model_dir(model, cfg, tmp_path / "export")  # raises on parity / portability failures
    assert ModelConfig.load(tmp_path / "export").temperature == cfg.temperature
    data = load_data(tiny_dataset, ["test"], model, cfg, tmp_path / "cache")["test"]
    probs, parts = predict(model, data, temperature=cfg.temperature)
    assert torch.allclose(probs.sum(-1), torch.ones(len(probs)), atol=1e-5)
    assert torch.allclose(parts.sum(-1), torch.ones(len(parts)), atol=1e-4)


def test_served_probabilities_are_softmax_of_logits_over_temperature(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = replace(TINY_CFG, temperature=2.5)
    model = build_model(cfg)
    export_model_dir(model, cfg, tmp_path / "export")
    pipeline = SentimentPipeline.from_dir(tmp_path / "export")
    assert pipeline.cfg.temperature == 2.5
    batch = pipeline.preprocess([{"text": "what a day"}, {"text": "meh, fine"}])
    probs, _ = pipeline.infer(batch)
    with torch.no_grad():
        logits, _ = pipeline.model(*pipeline.model_inputs(batch))
    torch.testing.assert_close(probs, torch.softmax(logits.float() / 2.5, -1), atol=1e-6, rtol=0)
    assert not torch.allclose(probs, torch.softmax(logits.float(), -1), atol=1e-3)


def test_old_archives_without_a_temperature_load_as_uncalibrated(tmp_path: Path) -> None:
    data = TINY_CFG.to_dict()
    data.pop("temperature")
    data.pop("image_input")
    (tmp_path / "model_config.json").write_text(json.dumps(data))
    cfg = ModelConfig.load(tmp_path)
    assert cfg.temperature == 1.0 and cfg.image_input == "cells"
    with pytest.raises(ValueError):
        replace(TINY_CFG, temperature=0.0)


def test_fit_temperature_recovers_a_known_scale() -> None:
    gen = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 3, generator=gen) * 2
    labels = torch.multinomial(true_logits.softmax(-1), 1, generator=gen)[:, 0]
    assert fit_temperature(true_logits * 3, labels) == pytest.approx(3.0, rel=0.1)


def test_ece_and_recall_gap() -> None:
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    cal = calibration(probs, [0, 1, 1, 2], bins=10)
    # bins: 0.9 (right), 0.6 (wrong), 0.7 (right), 0.8 (right)
    assert cal["ece"] == pytest.approx((0.1 + 0.6 + 0.3 + 0.2) / 4)
    assert recall_gap(
        {
            "per_class": {
                "a": {"recall": 0.9, "support": 3},
                "b": {"recall": 0.5, "support": 2},
                "c": {"recall": 0.0, "support": 0},
            }
        }
    ) == pytest.approx(0.4)


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason="no default head")
def test_default_archive_carries_its_fitted_temperature(tmp_path: Path) -> None:
    payload = read_checkpoint(DEFAULT_CHECKPOINT)
    cfg = ModelConfig.from_dict(payload["config"])
    assert cfg.temperature != 1.0 and payload["extra"].get("temperature_fitted_on") == "val"
    model, cfg, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    export_model_dir(model, cfg, tmp_path / "export")
    written = json.loads((tmp_path / "export" / "model_config.json").read_text())
    assert written["temperature"] == cfg.temperature
    pipeline = SentimentPipeline.from_dir(tmp_path / "export")
    batch = pipeline.preprocess([{"text": "Best concert ever, I loved every minute"}])
    probs, _ = pipeline.infer(batch)
    with torch.no_grad():
        logits, _ = pipeline.model(*pipeline.model_inputs(batch))
    torch.testing.assert_close(
        probs, torch.softmax(logits / cfg.temperature, -1), atol=1e-6, rtol=0
    )


def test_fine_tuning_on_cached_states_resumes_exactly(tiny_dataset: Path, tmp_path: Path) -> None:
    changes = dict(epochs=2, unfreeze_text_layers=1, max_train_examples=64, batch_size=16)
    full = train(_config(tiny_dataset, tmp_path / "full", **changes), TINY_CFG)
    part = _config(tiny_dataset, tmp_path / "part", stop_after_epoch=1, **changes)
    train(part, TINY_CFG)
    resumed = train(replace(part, stop_after_epoch=None), TINY_CFG, resume=True)
    assert resumed["steps"] == full["steps"]
    a = read_checkpoint(tmp_path / "full" / "last.pt")
    b = read_checkpoint(tmp_path / "part" / "last.pt")
    assert a["extra"]["text_from_layer"] == 1  # trained on the cached states entering layer 1
    for key in a["text_encoder"]:
        torch.testing.assert_close(a["text_encoder"][key], b["text_encoder"][key], msg=key)
    for key in a["head"]:
        torch.testing.assert_close(a["head"][key], b["head"][key], msg=key)
