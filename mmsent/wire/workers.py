"""Whether TorchServe's management API describes a model with a READY worker.

``GET <management>/models/<name>`` answers a list with one description per version, each with a
``workers`` list whose entries carry ``status``. Several places ask (the harness waiting for a
start, the health client, the KServe gateway's readiness, the pod rehearsal); this is the one
reading of that answer, tolerant of any shape a failing server might send.
"""

from __future__ import annotations

from typing import Any

READY = "READY"


def count_ready(workers: Any) -> int:
    """READY entries in one version's ``workers`` list (0 for anything that is not a list)."""
    if not isinstance(workers, list):
        return 0
    return sum(1 for w in workers if isinstance(w, dict) and w.get("status") == READY)


def ready_workers(described: Any) -> int:
    """READY workers in a ``describe model`` answer (a list of versions, or one version)."""
    versions = described if isinstance(described, list) else [described]
    return sum(count_ready(v.get("workers")) for v in versions if isinstance(v, dict))
