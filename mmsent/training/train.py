"""Train a fusion head (frozen encoders by default) on a manifest.

Design choices and why:

* Frozen encoders + cached features (``mmsent.training.features``): the default run takes
  minutes on CPU.
  ``unfreeze_text_layers > 0`` fine-tunes the last BERT layers instead; text is then encoded
  live every step (slow on CPU, meant for a GPU, where AMP is used).
* Class-balanced loss (or sampling): the benchmark has fewer neutral examples than polar ones and
  MVSA is heavily positive; without balancing the head learns the prior.
* Modality dropout: per example, the text or the image is switched off (``has_text`` /
  ``has_image`` = 0) so the served model handles text-only and image-only requests. When the
  manifest gives per-modality labels the example is relabelled to the remaining modality's label
  (dropping the emoji of an ironic pair leaves a plain positive tweet).
* Each epoch re-seeds from ``(seed, epoch)``, so ``--resume`` after epoch k gives the same weights
  as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mmsent.config import ModelConfig
from mmsent.evaluation.metrics import macro_f1
from mmsent.modeling.checkpoint import read_checkpoint, restore_weights, save_checkpoint
from mmsent.modeling.model import FusionSentimentModel, build_model
from mmsent.training.crossfit import crossfit
from mmsent.training.features import (
    FeatureBatch,
    FeatureData,
    forward,
    load_data,
    predict,
    predict_logits,
    text_tokens_of,
)

MODALITY_CHOICES = ("both", "text", "image")


@dataclass
class TrainConfig:
    """Hyper-parameters of one run (saved into every checkpoint's ``extra``)."""

    manifest: str
    out_dir: str = "results/attention"
    train_split: str = "train"
    val_split: str = "val"
    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-3
    text_lr: float = 2e-5  # for unfrozen BERT layers
    weight_decay: float = 0.01
    warmup_frac: float = 0.06
    schedule: str = "cosine"  # or "linear"
    # "loss" (class-weighted CE), "group" (classes weighted within each modality combination:
    # text only / image only / both), "sampler" (weighted sampling), "none"
    balance: str = "loss"
    label_smoothing: float = 0.05
    modality_dropout: float = 0.15  # per example: P(drop text) = P(drop image) = this
    grad_clip: float = 1.0
    seed: int = 0
    modalities: str = "both"  # "text" / "image": single-modality baselines
    unfreeze_text_layers: int = 0
    # fine-tune the unfrozen top BERT layers on cached states entering them (CPU-friendly);
    # False = encode the text live every step (the GPU path, saves the whole encoders)
    text_from_cache: bool = True
    crossfit_folds: int = 5  # image_input="evidence": glyph folds for out-of-fold evidence
    calibrate: bool = True  # fit the softmax temperature on the validation split
    num_threads: int = 2
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA only
    cache_dir: str | None = None  # default: <manifest folder>/cache
    save_to: list[str] = field(default_factory=list)  # extra copies of the best head
    max_train_examples: int | None = None  # first N usable training examples (quick runs, tests)
    max_steps: int | None = None  # cap on optimiser steps (changes the LR schedule)
    stop_after_epoch: int | None = None  # interrupt here (schedule unchanged); resume later


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def modality_dropout(
    batch: FeatureBatch,
    p: float,
    text_labels: Tensor,
    image_labels: Tensor,
    generator: torch.Generator,
) -> FeatureBatch:
    """Switch one modality off for a random subset of bimodal examples, relabelling if known."""
    both = (batch.has_text > 0) & (batch.has_image > 0)
    u = torch.rand(len(both), generator=generator)
    drop_text = both & (u < p)
    drop_image = both & (u >= p) & (u < 2 * p)
    labels = batch.labels.clone()
    relabel_img = drop_text & (image_labels >= 0)
    relabel_txt = drop_image & (text_labels >= 0)
    labels[relabel_img] = image_labels[relabel_img]
    labels[relabel_txt] = text_labels[relabel_txt]
    batch.has_text = batch.has_text * (~drop_text).float()
    batch.has_image = batch.has_image * (~drop_image).float()
    batch.labels = labels
    return batch


def lr_lambda(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warmup then cosine (or linear) decay to 0."""
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = (step - warmup) / max(total - warmup, 1)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _trainable(model: FusionSentimentModel, unfreeze: int) -> list[dict[str, Any]]:
    """Freeze both encoders (and a cross-fitted image classifier), then unfreeze the last
    ``unfreeze`` BERT layers."""
    for p in model.text_encoder.parameters():
        p.requires_grad_(False)
    for p in model.image_encoder.parameters():
        p.requires_grad_(False)
    fixed = getattr(model.head, "image_classifier", None)
    skip = {id(p) for p in fixed.parameters()} if fixed is not None else set()
    for p in fixed.parameters() if fixed is not None else []:
        p.requires_grad_(False)
    head = [p for p in model.head.parameters() if id(p) not in skip]
    groups: list[dict[str, Any]] = [{"params": head, "name": "head"}]
    if unfreeze > 0:
        layers = model.text_encoder.encoder.layer[-unfreeze:]
        params = [p for layer in layers for p in layer.parameters()]
        for p in params:
            p.requires_grad_(True)
        groups.append({"params": params, "name": "text"})
    return groups



def image_evidence(
    model: FusionSentimentModel, data: FeatureData, cfg: ModelConfig, folds: int, seed: int
) -> Tensor:
    """Cross-fit the image classifier of an evidence head on the training images.

    Loads the all-glyph classifier into ``model.head.image_classifier`` and returns per-example
    out-of-fold logits (N, K) (zeros where an example has no image).
    """
    keys = sorted({k for k in data.images if k is not None})
    where = {k: n for n, k in enumerate(keys)}
    label = torch.full((len(keys),), -1, dtype=torch.long)
    emoji: list[str | None] = [None] * len(keys)
    for i, (key, e) in enumerate(zip(data.images, data.examples, strict=True)):
        if key is None:
            continue
        lab = int(data.image_labels[i]) if data.image_labels[i] >= 0 else int(data.labels[i])
        label[where[key]] = lab
        emoji[where[key]] = e.meta.get("emoji")
    pooled = torch.cat([data.image.batch(keys[i : i + 256]).mean(1)
                        for i in range(0, len(keys), 256)])
    oof, full = crossfit(pooled, label, emoji, pooled.shape[1], cfg, folds, seed)
    model.head.image_classifier.load_state_dict(full.state_dict())
    out = torch.zeros(len(data), cfg.num_labels)
    for i, key in enumerate(data.images):
        if key is not None:
            out[i] = oof[where[key]]
    return out


def _group_class_weights(data: FeatureData, keep: list[int], k: int) -> Tensor:
    """(3, K) weights: within each modality combination (text only, image only, both), class c
    gets n_group / (K * n_group_c), so every combination is balanced on its own."""
    group = [int(t is not None) + 2 * int(i is not None) - 1
             for t, i in zip(data.texts, data.images, strict=True)]
    counts = torch.ones(3, k)  # +1: a combination missing a class must not divide by zero
    for i in keep:
        counts[group[i], int(data.labels[i])] += 1
    return counts.sum(1, keepdim=True) / (k * counts)


TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The softmax temperature minimising the NLL of ``labels`` (fitted on validation).

    Clamped to TEMPERATURE_RANGE: a model no better than chance on validation drives the optimum
    towards infinity (uniform answers), which is a finding to report, not a value to ship.
    """
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    low, high = TEMPERATURE_RANGE
    return float(min(max(log_t.exp().item(), low), high))


def train(tc: TrainConfig, cfg: ModelConfig, resume: bool = False) -> dict[str, Any]:
    """Run training; returns a summary (best val metrics, checkpoint paths, wall time)."""
    if tc.modalities not in MODALITY_CHOICES:
        raise ValueError(f"modalities must be one of {MODALITY_CHOICES}")
    started = time.time()
    torch.set_num_threads(tc.num_threads)
    device = _device(tc.device)
    out = Path(tc.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.pt"

    torch.manual_seed(tc.seed)  # the tiny/random test encoders are initialised from this
    random.seed(tc.seed)
    model = build_model(cfg)
    state: dict[str, Any] | None = None
    if resume and last_path.exists():
        payload = read_checkpoint(last_path)
        state = payload["extra"]["train_state"]
        restore_weights(model, payload)
    unfreeze = tc.unfreeze_text_layers
    live_text = unfreeze > 0 and not tc.text_from_cache
    n_layers = len(model.text_encoder.encoder.layer)
    text_layer = n_layers - unfreeze if unfreeze > 0 and tc.text_from_cache else None
    # Random encoders (tests) cannot be rebuilt from a registry package: store them.
    include_encoders = live_text or cfg.text_encoder == "tiny" or cfg.image_weights == "random"

    cache_dir = Path(tc.cache_dir) if tc.cache_dir else Path(tc.manifest).parent / "cache"
    data = load_data(tc.manifest, [tc.train_split, tc.val_split], model, cfg, cache_dir,
                     tc.modalities, live_text, device, text_layer)
    train_data, val_data = data[tc.train_split], data[tc.val_split]
    evidence = cfg.image_input == "evidence" and tc.modalities != "text"
    train_image_logits = (
        image_evidence(model, train_data, cfg, tc.crossfit_folds, tc.seed) if evidence else None
    )
    if state is not None:  # the cross-fit is seeded: re-running it restores the same classifier
        restore_weights(model, payload)
    groups = _trainable(model, unfreeze)
    keep = [
        i for i, e in enumerate(train_data.examples)
        if (tc.modalities != "text" or e.has_text) and (tc.modalities != "image" or e.has_image)
    ][: tc.max_train_examples]
    model.to(device)

    counts = torch.bincount(train_data.labels[keep], minlength=cfg.num_labels).float()
    class_weights = counts.sum() / (cfg.num_labels * counts.clamp_min(1))
    loss_fn = nn.CrossEntropyLoss(
        weight=class_weights.to(device) if tc.balance == "loss" else None,
        label_smoothing=tc.label_smoothing,
    )
    group_weights = _group_class_weights(train_data, keep, cfg.num_labels).to(device)
    for g in groups:
        g["lr"] = tc.lr if g["name"] == "head" else tc.text_lr
    optimizer = torch.optim.AdamW(groups, weight_decay=tc.weight_decay)
    steps_per_epoch = math.ceil(len(keep) / tc.batch_size)
    total = tc.epochs * steps_per_epoch
    if tc.max_steps:
        total = min(total, tc.max_steps)
    warmup = int(total * tc.warmup_frac)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, total, warmup, tc.schedule)
    )
    history: list[dict[str, Any]] = []
    step, start_epoch, best = 0, 0, -1.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, start_epoch, best = state["step"], state["epoch"], state["best"]
        history = state["history"]
    use_amp = tc.amp and device.type == "cuda"
    extra_base = {"train_config": asdict(tc), "modalities": tc.modalities,
                  "class_counts": counts.tolist(), "text_from_layer": text_layer}

    def save(path: Path | str, extra: dict[str, Any], model_cfg: ModelConfig = cfg) -> None:
        save_checkpoint(model, model_cfg, path, include_encoders, extra, text_layer)

    for epoch in range(start_epoch, tc.epochs):
        if tc.max_steps and step >= total:
            break
        torch.manual_seed(tc.seed * 1000 + epoch)  # epoch-level determinism -> exact resume
        gen = torch.Generator().manual_seed(tc.seed * 1000 + epoch)
        if tc.balance == "sampler":
            w = class_weights[train_data.labels[keep]]
            order = torch.multinomial(w, len(keep), replacement=True, generator=gen)
        else:
            order = torch.randperm(len(keep), generator=gen)
        rows = [keep[i] for i in order.tolist()]
        model.head.train()
        if fixed := getattr(model.head, "image_classifier", None):
            fixed.eval()  # frozen: no dropout noise on the served branch's evidence
        if unfreeze > 0:
            model.text_encoder.train()
        running, seen = 0.0, 0
        bar = tqdm(range(0, len(rows), tc.batch_size), desc=f"epoch {epoch + 1}/{tc.epochs}",
                   unit="step", leave=False)
        for start in bar:
            if tc.max_steps and step >= total:
                break
            idx = rows[start : start + tc.batch_size]
            batch = train_data.batch(idx)
            if tc.modalities == "both" and tc.modality_dropout > 0:
                batch = modality_dropout(batch, tc.modality_dropout, train_data.text_labels[idx],
                                         train_data.image_labels[idx], gen)
            batch = batch.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                if train_image_logits is not None:  # out-of-fold image evidence
                    logits, _ = model.head.forward_evidence(
                        text_tokens_of(model, batch), batch.text_mask,
                        train_image_logits[idx].to(device), batch.has_text, batch.has_image)
                else:
                    logits, _ = forward(model, batch)
            if tc.balance == "group":
                group = (batch.has_text + 2 * batch.has_image - 1).long()
                w = group_weights[group, batch.labels]
                per = nn.functional.cross_entropy(logits.float(), batch.labels, reduction="none",
                                                  label_smoothing=tc.label_smoothing)
                loss = (per * w).sum() / w.sum()
            else:
                loss = loss_fn(logits.float(), batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for g in groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            running += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        model.eval()
        probs, _ = predict(model, val_data, device=device)
        pred = probs.argmax(-1)
        val = {
            "accuracy": (pred == val_data.labels).float().mean().item(),
            "macro_f1": macro_f1(val_data.labels, pred, cfg.num_labels),
        }
        record = {"epoch": epoch + 1, "step": step, "train_loss": running / max(seen, 1),
                  "lr": scheduler.get_last_lr()[0], **{f"val_{k}": v for k, v in val.items()}}
        history.append(record)
        tqdm.write(json.dumps(record))
        if val["macro_f1"] > best:
            best = val["macro_f1"]
            extra = {**extra_base, "val": val, "epoch": epoch + 1, "step": step}
            for path in (best_path, *tc.save_to):
                save(path, extra)
        train_state = {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "step": step, "epoch": epoch + 1, "best": best, "history": history,
        }
        save(last_path, {**extra_base, "train_state": train_state})
        if tc.stop_after_epoch is not None and epoch + 1 >= tc.stop_after_epoch:
            break
    interrupted = (tc.stop_after_epoch is not None and len(history) < tc.epochs
                   and not (tc.max_steps and step >= total))
    temperature = 1.0
    if best_path.exists() and not interrupted:
        payload = read_checkpoint(best_path)
        restore_weights(model, payload)
        if tc.calibrate:  # fitted on validation (unseen glyphs): realistic reliability
            logits, _ = predict_logits(model, val_data, device=device)
            temperature = fit_temperature(logits, val_data.labels)
            tqdm.write(json.dumps({"temperature": temperature}))
        extra = {**payload["extra"], "temperature_fitted_on": tc.val_split if tc.calibrate
                 else None}
        best_cfg = cfg.replace(temperature=temperature)
        save(best_path, extra, best_cfg)
        for copy in tc.save_to:
            save(copy, extra, best_cfg)
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    summary = {"best_val_macro_f1": best, "best": str(best_path), "last": str(last_path),
               "temperature": temperature,
               "steps": step, "train_examples": len(keep), "wall_s": time.time() - started,
               "history": history}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def add_arguments(parser: Any) -> None:
    """CLI flags for every TrainConfig field plus the model-config overrides."""
    d = TrainConfig(manifest="")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out-dir", default=d.out_dir)
    for name in ("train_split", "val_split", "schedule", "balance", "modalities", "device",
                 "cache_dir"):
        parser.add_argument(f"--{name.replace('_', '-')}", default=getattr(d, name))
    for name in ("epochs", "batch_size", "seed", "unfreeze_text_layers", "num_threads",
                 "max_steps", "stop_after_epoch", "max_train_examples", "crossfit_folds"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("lr", "text_lr", "weight_decay", "warmup_frac", "label_smoothing",
                 "modality_dropout", "grad_clip"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    parser.add_argument("--live-text", dest="text_from_cache", action="store_false",
                        help="encode text live every step when fine-tuning (GPU path)")
    parser.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                        help="do not fit the softmax temperature on the validation split")
    parser.add_argument("--save-to", action="append", default=[],
                        help="also write the best head here (e.g. weights/default_head.pt)")
    parser.add_argument("--resume", action="store_true", help="continue from <out-dir>/last.pt")
    m = ModelConfig()
    parser.add_argument("--fusion", default=m.fusion)
    parser.add_argument("--text-encoder", default=m.text_encoder)
    parser.add_argument("--image-backbone", default=m.image_backbone)
    parser.add_argument("--image-weights", default=m.image_weights)
    parser.add_argument("--image-size", type=int, default=m.image_size)
    parser.add_argument("--resize-size", type=int, default=m.resize_size)
    parser.add_argument("--fusion-dim", type=int, default=m.fusion_dim)
    parser.add_argument("--image-input", default=m.image_input, choices=("cells", "evidence"))


def configs_from_args(args: Any) -> tuple[TrainConfig, ModelConfig]:
    fields = TrainConfig.__dataclass_fields__
    tc = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    cfg = ModelConfig().replace(
        fusion=args.fusion, text_encoder=args.text_encoder, image_backbone=args.image_backbone,
        image_weights=args.image_weights, image_size=args.image_size,
        resize_size=args.resize_size, fusion_dim=args.fusion_dim, image_input=args.image_input,
    )
    return tc, cfg


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Train a multi-modal sentiment fusion head.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    tc, cfg = configs_from_args(args)
    summary = train(tc, cfg, resume=args.resume)
    summary.pop("history")
    print(json.dumps(summary, indent=1))
    return 0
