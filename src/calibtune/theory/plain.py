"""Shared by the diagnosis modules: renormalised rows, and JSON-ready values (`plain`, the
package's one conversion, `integrity.json_ready`)."""
from __future__ import annotations

import numpy as np

from ..integrity import json_ready as plain

__all__ = ["normalised", "plain"]


def normalised(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Rows divided by their unmasked sum (masked entries stay 0; every argmax is unchanged).

    `check_inputs` accepts rows whose sum misses 1 by up to 1e-6 and returns them as they are; the
    bounds of docs/theory.md hold exactly only for rows that sum to 1 (c_i ≥ 1/K_i), so the
    diagnosis works on renormalised rows. Its numbers can therefore differ from the metrics on the
    raw rows by about 1e-6 (relative); for rows that already sum to 1 they agree.
    """
    s = np.where(m, p, 0.0).sum(axis=1, keepdims=True)
    return np.where(m, p / s, 0.0)

