#!/usr/bin/env bash
# Build the tweets+emoji benchmark, train the three fusion heads and the two single-modality
# baselines the same way, and write the comparison report (docs/TRAINING.md, "Results").
# CPU only: ~35-45 min on 2 shared cores. Every step is deterministic given the seed.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. .venv/bin/activate
DATA=data/emoji_tweets
M=$DATA/manifest.jsonl
python scripts/build_dataset.py emoji-tweets --out "$DATA" --seed 0
# default model (attention); its best head is also written to weights/default_head.pt
python scripts/train.py --manifest "$M" --fusion attention --out-dir results/attention \
  --save-to weights/default_head.pt
for fusion in concat late; do
  python scripts/train.py --manifest "$M" --fusion "$fusion" --out-dir "results/$fusion"
done
for modality in text image; do
  python scripts/train.py --manifest "$M" --fusion attention --modalities "$modality" \
    --out-dir "results/${modality}_only"
done
python scripts/evaluate.py --manifest "$M" \
  --model attention=weights/default_head.pt --model concat=results/concat/best.pt \
  --model late=results/late/best.pt \
  --baseline "text only=results/text_only/best.pt" \
  --baseline "image only=results/image_only/best.pt" \
  --splits test test_emojify test_seen_emoji --out results/eval --docs docs/eval \
  --export-agreement 300
