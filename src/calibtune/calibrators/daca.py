"""DACA: label-free temperature for an aligned model, taken from its base model's confidence.

On items where the aligned and the base model pick the same option, fit T so that the aligned
model's softmax(z / T) matches the base model's distribution (minimum KL(base ‖ aligned_T)).
Needs no labels. Reference: Luo et al., "Your Pre-trained LLM is Secretly an Unsupervised
Confidence Calibrator", NeurIPS 2025.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from ..errors import ConfigError, InputError
from ..metrics.validation import log_softmax, softmax
from .simple import TemperatureScaling


class DACATemperature(TemperatureScaling):
    name = "daca"

    def __init__(self, bounds: tuple[float, float] = (1e-2, 1e2)) -> None:
        super().__init__(bounds)
        self.n_agree = 0

    def fit_unsupervised(self, logits: np.ndarray, reference_logits: np.ndarray,
                         mask: np.ndarray | None = None) -> "DACATemperature":
        """Fit T from the aligned logits and the base model's logits on the same items."""
        z = np.asarray(logits, float)
        r = np.asarray(reference_logits, float)
        if z.shape != r.shape:
            raise InputError(f"aligned scores {z.shape} and reference scores {r.shape} differ in "
                             "shape; score the same items with both models")
        m = np.ones(z.shape, bool) if mask is None else np.asarray(mask, bool)
        agree = softmax(z, m).argmax(1) == softmax(r, m).argmax(1)
        if agree.sum() == 0:
            raise InputError("the two models agree on no item; DACA cannot fit a temperature")
        za, ma, target = z[agree], m[agree], softmax(r[agree], m[agree])

        def kl(log_t):
            logq = log_softmax(za / np.exp(log_t), ma)
            return float(-np.mean(np.sum(np.where(ma, target * logq, 0.0), axis=1)))

        lo, hi = np.log(self.bounds[0]), np.log(self.bounds[1])
        res = minimize_scalar(kl, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
        self.temperature = float(np.exp(res.x))
        self.n_agree = int(agree.sum())
        self.fitted_ = True
        return self

    def _fit(self, z, y, m) -> None:
        raise ConfigError("DACA is unsupervised: call fit_unsupervised(logits, reference_logits)")

    def get_params(self) -> dict:
        return super().get_params() | {"n_agree": self.n_agree}

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        self.n_agree = int(params.get("n_agree", 0))
