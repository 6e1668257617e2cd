"""TorchScript export: one file, class-free, numerically identical to the eager model."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from mmsent.config import FUSIONS, MODEL_FILENAME, ModelConfig
from mmsent.modeling.export import example_inputs, export_model_dir
from mmsent.modeling.model import build_model

TOL = 1e-4


def _cases(cfg: ModelConfig) -> dict[str, tuple[torch.Tensor, ...]]:
    one = example_inputs(cfg, batch=1, seq=7, seed=3)
    five = example_inputs(cfg, batch=5, seq=10, seed=4)
    ids, mask, px, _, _ = example_inputs(cfg, batch=4, seq=6, seed=5)
    ones, zeros = torch.ones(4), torch.zeros(4)
    return {
        "batch1": one,
        "batch5": five,
        "text_only": (ids, mask, torch.zeros_like(px), ones, zeros),
        "image_only": (ids, mask, px, zeros, ones),
    }


def _load(path: Path) -> torch.jit.ScriptModule:
    return torch.jit.load(str(path / MODEL_FILENAME)).eval()


def _assert_parity(model: torch.nn.Module, scripted: torch.nn.Module, cfg: ModelConfig) -> None:
    for name, inputs in _cases(cfg).items():
        with torch.no_grad():
            eager_logits, eager_contrib = model(*inputs)
            ts_logits, ts_contrib = scripted(*inputs)
        diff = (eager_logits - ts_logits).abs().max().item()
        assert diff <= TOL, f"{name}: logits differ by {diff:.2e}"
        assert (eager_contrib - ts_contrib).abs().max().item() <= TOL, name
        assert ts_logits.shape == (inputs[0].shape[0], cfg.num_labels)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_tiny_export_matches_eager_for_every_fusion(tmp_path: Path, fusion: str) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(fusion=fusion)
    model = build_model(cfg)
    export_model_dir(model, cfg, tmp_path)
    _assert_parity(model, _load(tmp_path), cfg)


def test_default_encoders_export_matches_eager(tmp_path: Path) -> None:
    """The real MiniLM + ImageNet MobileNetV2 model, as the default archive ships it."""
    torch.manual_seed(0)
    cfg = ModelConfig()
    model = build_model(cfg)
    export_model_dir(model, cfg, tmp_path)
    _assert_parity(model, _load(tmp_path), cfg)
    assert ModelConfig.load(tmp_path) == cfg
    assert (tmp_path / "vocab.txt").exists() and (tmp_path / "tokenizer.json").exists()


def test_missing_modality_changes_nothing_it_should_not(tmp_path: Path) -> None:
    """Image-only answers must not depend on the (masked) text tokens, and vice versa."""
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg)
    export_model_dir(model, cfg, tmp_path)
    scripted = _load(tmp_path)
    ids, mask, px, _, _ = example_inputs(cfg, batch=2, seq=8, seed=9)
    other_ids = torch.randint(1000, 20000, ids.shape)
    ones, zeros = torch.ones(2), torch.zeros(2)
    with torch.no_grad():
        a, ca = scripted(ids, mask, px, zeros, ones)
        b, cb = scripted(other_ids, mask, px, zeros, ones)
        c, _ = scripted(ids, mask, px, ones, zeros)
        d, _ = scripted(ids, mask, torch.randn_like(px), ones, zeros)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(c, d)
    assert torch.allclose(ca, torch.tensor([[0.0, 1.0]] * 2))


def test_exported_file_runs_without_any_model_code(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny_config()
    export_model_dir(build_model(cfg), cfg, tmp_path)
    script = textwrap.dedent(
        f"""
        import sys, torch
        m = torch.jit.load({str(tmp_path / MODEL_FILENAME)!r})
        ids = torch.tensor([[101, 7592, 102]]); mask = torch.ones_like(ids)
        px = torch.zeros(1, 3, {cfg.image_size}, {cfg.image_size})
        logits, contrib = m(ids, mask, px, torch.ones(1), torch.zeros(1))
        assert logits.shape == (1, 3), logits.shape
        assert not any(name.startswith(("mmsent", "transformers", "torchvision"))
                       for name in sys.modules), "model code was imported"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
