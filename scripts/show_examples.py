#!/usr/bin/env python
"""Send a fixed set of examples to a running server and print a Markdown table of the answers.

The "served examples" table of docs/training.md is this script's output against the default archive
(`bash scripts/quickstart.sh` first). Mixes text-only, image-only, congruent and incongruent
(ironic) pairs. ``--model-dir DIR`` answers the same requests in-process with the serving
pipeline on an exported model folder or unpacked archive (no server needed; same answers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmsent.clients.rest import DEFAULT_URL, predict
from mmsent.serving.exchange import Exchange

ROOT = Path(__file__).resolve().parent.parent

EXAMPLES: list[tuple[str | None, str | None, str]] = [
    ("Best concert ever, I loved every minute", None, "text only"),
    ("My flight was cancelled and nobody at the desk could help", None, "text only"),
    ("The meeting is moved to 3pm in room 204", None, "text only"),
    (None, "party_popper.png", "image only"),
    (None, "angry_face.png", "image only"),
    ("Best concert ever, I loved every minute", "party_popper.png", "congruent"),
    ("Oh great, another two hour delay", "angry_face.png", "incongruent (irony)"),
    ("I hate that this is the last episode", "party_popper.png", "incongruent"),
    ("The meeting is moved to 3pm in room 204", "eyes.png", "congruent neutral"),
    # 😐 is *negative* in the Emoji Sentiment Ranking (score -0.39): the model follows its data
    ("The meeting is moved to 3pm in room 204", "neutral_face.png", "label quirk"),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default=DEFAULT_URL)
    p.add_argument("--model-dir", type=Path, default=None,
                   help="answer in-process from this exported model folder instead of a server")
    args = p.parse_args(argv)
    pipeline = None
    if args.model_dir:
        from mmsent.serving.pipeline import SentimentPipeline

        pipeline = SentimentPipeline.from_dir(args.model_dir)
    print("| text | image | kind | label | p(neg / neu / pos) | text / image contribution |")
    print("|---|---|---|---|---|---|")
    for text, image, kind in EXAMPLES:
        path = ROOT / "examples" / image if image else None
        if pipeline is not None:
            fields = {"text": text, "image": path.read_bytes() if path else None}
            given = {k: v for k, v in fields.items() if v is not None}
            answer = Exchange(pipeline).predict([given])[0]
        else:
            answer = predict(args.url, text, path).json()
        probs = " / ".join(f"{v:.2f}" for v in answer["probabilities"].values())
        contrib = " / ".join(f"{v:.2f}" for v in answer["contributions"].values())
        print(f"| {text or '–'} | {image or '–'} | {kind} | **{answer['label']}** | {probs} "
              f"| {contrib} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
