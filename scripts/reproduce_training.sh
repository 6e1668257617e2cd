#!/usr/bin/env bash
# Build the tweets+emoji benchmark, train the default model, the comparison heads and the two
# single-modality baselines the same way, and write the comparison report (docs/training.md,
# "Results of the default model"). CPU only: about 1.7 hours on 2 shared cores (the default model alone: see
# docs/training.md, "Training time"). Every step is seeded (a rerun of the baselines on another
# day still moved single test slices by up to 3.7 points: docs/notes/2026-12-06-congruent-gap.md); every
# train.py run resumes with --resume after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. .venv/bin/activate
DATA=data/emoji_tweets
M=$DATA/manifest.jsonl
python scripts/build_dataset.py emoji-tweets --out "$DATA" --seed 0
# default model: attention fusion over the text tokens and ONE cross-fitted image-evidence token,
# unweighted loss, temperature fitted on val; the best head is also written to
# weights/default_head.pt (~3 min on this box, plus ~12 min of feature cache on the first run)
python scripts/train.py --manifest "$M" --fusion attention --image-input evidence --balance none \
  --out-dir results/attention --save-to weights/default_head.pt
# what was tried against it (docs/notes/2026-11-25-default-head-variants.md): the previous default (image cells as keys), the
# evidence head with class-balanced loss, with per-combination balance, without cross-fitting,
# and with the last MiniLM layer fine-tuned
python scripts/train.py --manifest "$M" --fusion attention --out-dir results/attention_cells
python scripts/train.py --manifest "$M" --fusion attention --image-input evidence \
  --out-dir results/evidence_loss
python scripts/train.py --manifest "$M" --fusion attention --image-input evidence \
  --balance group --out-dir results/evidence_group
python scripts/train.py --manifest "$M" --fusion attention --image-input evidence \
  --crossfit-folds 0 --out-dir results/evidence_insample
python scripts/train.py --manifest "$M" --fusion attention --image-input evidence \
  --unfreeze-text-layers 1 --text-lr 5e-5 --epochs 4 --out-dir results/evidence_ft1
for modality in text image; do
  python scripts/train.py --manifest "$M" --fusion attention --modalities "$modality" \
    --out-dir "results/${modality}_only"
done
python scripts/evaluate.py --manifest "$M" \
  --model "attention (default)=weights/default_head.pt" \
  --model "cells (previous default)=results/attention_cells/best.pt" \
  --model "evidence, balanced loss=results/evidence_loss/best.pt" \
  --model "evidence, balanced per combination=results/evidence_group/best.pt" \
  --model "evidence, not cross-fitted=results/evidence_insample/best.pt" \
  --model "evidence, fine-tuned MiniLM layer 6=results/evidence_ft1/best.pt" \
  --baseline "text only=results/text_only/best.pt" \
  --baseline "image only=results/image_only/best.pt" \
  --splits test val test_emojify test_seen_emoji --out results/eval --docs docs/eval \
  --export-agreement 300
# concat and late fusion (--fusion concat|late, image cells) were not re-run for the new default; their
# recipe is unchanged: python scripts/train.py --manifest "$M" --fusion concat --out-dir results/concat
# the congruent-gap study (docs/notes/2026-12-06-congruent-gap.md): the same recipe on augmented training renders (val/test
# images identical), and the default against the baselines with 95 % intervals, the
# congruent/incongruent frontier and the readers' bound (docs/eval/frontier.md + frontier_*.png)
python scripts/build_dataset.py emoji-tweets --out data/emoji_tweets_aug --seed 0 --augment-train
python scripts/train.py --manifest data/emoji_tweets_aug/manifest.jsonl --cache-dir "$DATA/cache" \
  --fusion attention --image-input evidence --balance none --out-dir results/evidence_aug
python scripts/evaluate.py --manifest "$M" \
  --model "attention (default)=weights/default_head.pt" \
  --model "evidence, augmented training renders=results/evidence_aug/best.pt" \
  --splits test val --out results/eval_aug
python scripts/evaluate.py --manifest "$M" --model "attention (default)=weights/default_head.pt" \
  --baseline "text only=results/text_only/best.pt" --baseline "image only=results/image_only/best.pt" \
  --splits test val test_emojify test_seen_emoji --out results/eval_frontier --frontier
cp results/eval_frontier/report.md docs/eval/frontier.md
cp results/eval_frontier/frontier_test.png results/eval_frontier/frontier_val.png \
  results/eval_frontier/frontier_test_seen_emoji.png docs/eval/
