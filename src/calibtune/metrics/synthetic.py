"""Score sets whose calibration is known by construction: for examples, tests and simulations."""
from __future__ import annotations

import numpy as np

from .validation import softmax


def sharpened_logits(n: int, k: int = 4, factor: float = 3.0, *, scale: float = 2.0,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(logits × factor, labels): labels drawn from softmax(logits), so the logits are calibrated
    and `factor` > 1 makes them overconfident by a known temperature (`factor` itself).

    Examples
    --------
    >>> from calibtune.metrics.synthetic import sharpened_logits
    >>> z, y = sharpened_logits(1000, factor=1.0)
    >>> z.shape, y.shape, int(y.max())
    ((1000, 4), (1000,), 3)
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    y = (rng.random(n)[:, None] > np.cumsum(softmax(z), 1)).sum(1)
    return z * factor, np.minimum(y, k - 1)
