"""train -> checkpoint -> TorchScript -> .mar -> TorchServe: the served answer is the eager one."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import torch

from conftest import MODEL_NAME, TINY_CFG
from mmsent.data.manifest import read_manifest
from mmsent.evaluation.metrics import prediction_agreement
from mmsent.harness.torchserve import TorchServe
from mmsent.modeling.checkpoint import load_checkpoint
from mmsent.modeling.encoders import build_tokenizer
from mmsent.serving.exchange import Exchange
from mmsent.serving.pipeline import SentimentPipeline
from mmsent.training.train import TrainConfig, train

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[2]


def test_trained_checkpoint_served_by_torchserve_matches_eager(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    tc = TrainConfig(manifest=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=3,
                     batch_size=32, lr=3e-3, cache_dir=str(tmp_path / "cache"), num_threads=1)
    train(tc, TINY_CFG)
    checkpoint = tmp_path / "run" / "best.pt"

    from mmsent.packaging.build import main as build_main

    store = tmp_path / "store"
    build_main(["--checkpoint", str(checkpoint), "--out", str(store), "--model-name", MODEL_NAME])

    model, cfg, _ = load_checkpoint(checkpoint)
    eager = SentimentPipeline(model, build_tokenizer(cfg.text_encoder), cfg)
    examples = [e for e in read_manifest(tiny_dataset, split="test") if e.has_text][:6]
    rows = []
    for e in examples:
        image = e.image_path(tiny_dataset.parent)
        rows.append({"text": (None, e.text)} | (
            {"image": ("x.png", image.read_bytes(), "image/png")} if image else {}
        ))
    expected = Exchange(eager).predict([
        {k: v[1].encode() if k == "text" else v[1] for k, v in row.items()} for row in rows
    ])
    with TorchServe(store, {MODEL_NAME: f"{MODEL_NAME}.mar"}) as ts:
        served = [
            requests.post(f"{ts.inference_url}/predictions/{MODEL_NAME}", files=row, timeout=60)
            for row in rows
        ]
    labels = cfg.labels
    got = torch.tensor([[r.json()["probabilities"][k] for k in labels] for r in served])
    want = torch.tensor([[a["probabilities"][k] for k in labels] for a in expected])
    agreement = prediction_agreement(want, got)
    assert agreement["top1_agreement"] == 1.0
    assert agreement["max_abs_prob_diff"] <= 1e-5
    assert [r.json()["modalities"] for r in served] == [a["modalities"] for a in expected]
