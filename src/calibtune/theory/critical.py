"""Critical accuracy a*: where a series of checkpoints leaves its noise band (docs/theory.md §4)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..integrity import json_ready
from ..metrics.validation import MetricInputError


@dataclass(frozen=True)
class CriticalAccuracy:
    """a*: the lowest accuracy from which every checkpoint's statistic is above its noise band.

    `last_within` is the highest accuracy below a* at which the statistic was within the band.
    `critical` is None when the most accurate checkpoint is still within its band.
    """

    critical: float | None
    last_within: float | None
    n_points: int

    def to_dict(self) -> dict:
        return json_ready(asdict(self))


def critical_accuracy(accuracy: Sequence[float], statistic: Sequence[float],
                      band: Sequence[float]) -> CriticalAccuracy:
    """Empirical critical accuracy over checkpoints (docs/theory.md §4).

    a* is the smallest accuracy a_j such that the statistic (held-out ECE of calibration-aware
    checkpoints, or the P6 floor) exceeds its noise band (the noise-floor q95) at every
    checkpoint whose accuracy is ≥ a_j. Ties: checkpoints of equal accuracy count together, and
    one of them inside its band puts that accuracy inside; the result never depends on the
    order of the input.
    """
    a = np.asarray(accuracy, dtype=np.float64)
    s = np.asarray(statistic, dtype=np.float64)
    q = np.asarray(band, dtype=np.float64)
    if a.ndim != 1 or a.shape != s.shape or a.shape != q.shape or a.size == 0:
        raise MetricInputError("accuracy, statistic and band must be 1-D of the same non-zero length")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(s)) and np.all(np.isfinite(q))):
        raise MetricInputError("accuracy, statistic and band must be finite")
    out = s > q
    # order-free, also at ties: a* is the least accuracy a with every checkpoint of accuracy
    # ≥ a outside its band; a tie at which any checkpoint is inside the band is inside
    if out.all():
        return CriticalAccuracy(float(a.min()), None, a.size)
    last_in = float(a[~out].max())
    if last_in >= a.max():
        return CriticalAccuracy(None, last_in, a.size)
    return CriticalAccuracy(float(a[out & (a > last_in)].min()), last_in, a.size)
