"""Input checks shared by every metric: shapes, finiteness, simplex, labels, masks."""
from __future__ import annotations

import numpy as np

from ..errors import InputError

#: The name metrics raised before `InputError` served every library function; the same class.
MetricInputError = InputError


def softmax(logits: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Row-wise softmax; masked entries get probability exactly 0."""
    z = np.asarray(logits, dtype=np.float64)
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(logits: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def check_inputs(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
                 from_logits: bool = False, atol: float = 1e-6) -> tuple[np.ndarray, np.ndarray,
                                                                         np.ndarray]:
    """Validate and return (probs [n, K] float64, labels [n] int64, mask [n, K] bool).

    With `from_logits=True` the first array holds logits and is soft-maxed over unmasked entries;
    otherwise it must already be probabilities whose unmasked entries sum to 1 per row.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2:
        raise MetricInputError(f"probabilities must be 2-D [n_items, n_options], got shape {p.shape}")
    n, k = p.shape
    if n == 0:
        raise MetricInputError("no items: metrics need at least one row")
    if k < 2:
        raise MetricInputError(f"need at least 2 options per item, got {k}")
    if y.shape != (n,):
        raise MetricInputError(f"labels must have shape ({n},) to match the {n} rows, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise MetricInputError(f"labels must be integer option indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    m = np.ones((n, k), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != (n, k):
        raise MetricInputError(f"mask shape {m.shape} does not match probabilities {p.shape}")
    if (m.sum(axis=1) < 2).any():
        raise MetricInputError(f"row {int(np.flatnonzero(m.sum(axis=1) < 2)[0])} has fewer than 2 "
                               "unmasked options")
    bad = (y < 0) | (y >= k)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MetricInputError(f"label {y[i]} in row {i} is out of range for {k} options")
    if not m[np.arange(n), y].all():
        i = int(np.flatnonzero(~m[np.arange(n), y])[0])
        raise MetricInputError(f"label {y[i]} in row {i} points at a masked option")
    finite = np.isfinite(p) | ~m
    if not finite.all():
        i = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise MetricInputError(f"row {i} holds NaN or inf ({p[i].tolist()[:8]})")
    if from_logits:
        return softmax(p, m), y, m
    pm = np.where(m, p, 0.0)
    if (pm < -atol).any() or (pm > 1 + atol).any():
        raise MetricInputError("probabilities must lie in [0, 1]; pass from_logits=True for logits")
    sums = pm.sum(axis=1)
    off = np.abs(sums - 1.0) > atol
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise MetricInputError(f"row {i} sums to {sums[i]:.6g}, not 1; pass from_logits=True if "
                               "these are logits, or normalise them")
    if (np.where(m, 0.0, p) != 0).any():
        raise MetricInputError("masked options must have probability 0")
    return np.clip(pm, 0.0, 1.0), y, m


def top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) per item; ties go to the first (lowest-index) option, as argmax."""
    pred = probs.argmax(axis=1)
    return probs[np.arange(len(labels)), pred], (pred == labels).astype(np.float64)


def normalised(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Rows divided by their unmasked sum (masked entries stay 0; every argmax is unchanged).

    `check_inputs` accepts rows whose sum misses 1 by up to 1e-6 and returns them as they are; the
    bounds of docs/theory.md hold exactly only for rows that sum to 1 (c_i ≥ 1/K_i), so the
    diagnosis works on renormalised rows. Its numbers can therefore differ from the metrics on the
    raw rows by about 1e-6 (relative); for rows that already sum to 1 they agree.
    """
    s = np.where(m, p, 0.0).sum(axis=1, keepdims=True)
    return np.where(m, p / s, 0.0)

