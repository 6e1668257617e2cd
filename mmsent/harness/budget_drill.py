"""What the most expensive admitted request costs a batch mate: measured against a real server.

    python -m mmsent.harness.budget_drill --mar model_store/fusion_sentiment.mar

Serves the archive with TorchServe and, one case at a time, sends the expensive request and
then an ordinary request (text + a 224 px JPEG). For each case it records the expensive
request's status and time, the mate's latency against an ordinary batch's, and the
worker's RSS before, at its peak and after. Cases: an Open Inference request of 32 solid 39 MP
PNGs (every item under the per-image limits), the largest decode a batch admits (a 4K-frame
PNG), the worst admitted explanation (62 words, 10x10 grid, an image) and two of them at once.
Writes ``budget_drill.json`` and prints a Markdown table (docs/reliability.md "Budgets").
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import requests
from PIL import Image

from mmsent.config import DEFAULT_MODEL_NAME
from mmsent.harness.machine import machine_info, results_dir
from mmsent.harness.torchserve import TorchServe
from mmsent.harness.workload import make_payloads

ROOT = Path(__file__).resolve().parents[2]
MODEL = DEFAULT_MODEL_NAME


def _png(side: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def cases(explain_model: str) -> dict[str, tuple[str, dict[str, Any], dict[str, str], int, float]]:
    """name -> (route, JSON body, headers, copies sent together, seconds before the mate)."""
    huge, frame = _png(6245), _png(2880)
    words = " ".join(f"word{i}" for i in range(62))
    v2 = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [32], "data": [huge] * 32}]}
    explain = {"text": words, "image": frame}
    grid = {"x-explain-grid": "10"}
    return {
        # the mate follows once the expensive request is in the worker (a 5 MB body uploads
        # and parses first), or together with it when that one is quick
        "v2: 32 x 39 MP PNG": (f"v2/models/{MODEL}/infer", v2, {}, 1, 0.3),
        "one 8.3 MP PNG (the decode budget)": (f"predictions/{MODEL}", {"image": frame}, {}, 1,
                                               0.005),
        "worst explanation (62 words, 10x10, image)": (f"explanations/{explain_model}", explain,
                                                       grid, 1, 0.3),
        "two worst explanations": (f"explanations/{explain_model}", explain, grid, 2, 0.3),
    }  # fmt: skip


class RssPeak:
    """Samples the worker's RSS every 20 ms while in a ``with`` block."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(pid) for pid in pids]
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        return sum(p.memory_info().rss for p in self.procs)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _post(base: str, route: str, body: Any, headers: dict[str, str]) -> tuple[int, float]:
    start = time.perf_counter()
    resp = requests.post(f"{base}/{route}", json=body, headers=headers, timeout=300)
    return resp.status_code, time.perf_counter() - start


def run(mar: Path, separate_explanations: bool = False) -> dict[str, Any]:
    """The drill; ``separate_explanations`` registers the archive a second time, under
    ``<model>_explain``, and sends explanations there, so they never share a prediction batch."""
    mate_body = json.loads(make_payloads(1)["both-small"][0].json_body)
    mate_route = f"predictions/{MODEL}"
    out: dict[str, Any] = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M"),
                           "mar": str(mar), "cases": {}}  # fmt: skip
    explain_model = f"{MODEL}_explain" if separate_explanations else MODEL
    out["explanations_model"] = explain_model
    with TorchServe(mar.parent, {MODEL: mar.name, explain_model: mar.name}) as ts:
        base = ts.inference_url
        with ThreadPoolExecutor(max_workers=8) as pool:  # an ordinary batch: 8 mates together
            normal = []
            for _ in range(5):
                futures = [pool.submit(_post, base, mate_route, mate_body, {}) for _ in range(8)]
                normal += [f.result()[1] for f in futures]
        out["ordinary_batch_s"] = round(statistics.median(normal), 3)
        for name, (route, body, headers, copies, lag) in cases(explain_model).items():
            pids = {m: ts.worker_pids(m) for m in ts.models}
            every = [pid for group in pids.values() for pid in group]
            with RssPeak(every) as rss, ThreadPoolExecutor(max_workers=copies + 1) as pool:
                before = rss.peak
                heavy = [pool.submit(_post, base, route, body, headers) for _ in range(copies)]
                time.sleep(lag)
                mate = pool.submit(_post, base, mate_route, mate_body, {})
                results = [f.result() for f in heavy]
                mate_status, mate_s = mate.result()
            out["cases"][name] = {
                "statuses": [s for s, _ in results], "heavy_s": [round(t, 3) for _, t in results],
                "mate_status": mate_status, "mate_s": round(mate_s, 3),
                "mate_over_ordinary_batch": round(mate_s / out["ordinary_batch_s"], 2),
                "rss_mb": {"before": before >> 20, "peak": rss.peak >> 20,
                           "after": rss.now() >> 20},
                "worker_restarted": {m: ts.worker_pids(m) for m in ts.models} != pids,
            }  # fmt: skip
            print(f"[budget] {name}: {out['cases'][name]}", flush=True)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["| case | status | its time s | mate s (x ordinary batch) | worker RSS MB "
             "before / peak / after |", "|---|---|---|---|---|"]  # fmt: skip
    for name, c in result["cases"].items():
        rss = c["rss_mb"]
        lines.append(f"| {name} | {', '.join(map(str, c['statuses']))} | "
                     f"{', '.join(map(str, c['heavy_s']))} | {c['mate_s']} "
                     f"({c['mate_over_ordinary_batch']}x) | {rss['before']} / {rss['peak']} / "
                     f"{rss['after']} |")  # fmt: skip
    return "\n".join(lines) + f"\n\nordinary batch of 8: {result['ordinary_batch_s']} s\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mar", type=Path, default=ROOT / "model_store" / f"{MODEL}.mar")
    p.add_argument("--separate-explanations", action="store_true",
                   help="serve explanations from a second registration of the archive")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    result = run(args.mar, args.separate_explanations)
    out = results_dir("budget-drill", args.out)
    (out / "budget_drill.json").write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return 1 if any(c["worker_restarted"] for c in result["cases"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
