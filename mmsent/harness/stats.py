"""The one percentile every benchmark, drill, soak and load-test report uses.

Nearest rank on the sorted values (``sorted[min(n - 1, int(q * n))]``): no interpolation, so
every reported latency is one a caller really waited, and p100 is the maximum.
"""

from __future__ import annotations

from collections.abc import Iterable


def percentile(values: Iterable[float], q: float, digits: int | None = None) -> float | None:
    """The ``q`` quantile (0..1) of ``values``, or None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    value = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return round(value, digits) if digits is not None else value
