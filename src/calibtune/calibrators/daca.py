"""DACA: label-free temperature for an aligned model, taken from its base model's confidence.

On items where the aligned and the base model pick the same option, fit T so that the aligned
model's softmax(z / T) matches the base model's distribution (minimum KL(base ‖ aligned_T)).
Needs no labels. Reference: Luo et al., "Your Pre-trained LLM is Secretly an Unsupervised
Confidence Calibrator", NeurIPS 2025.
"""
from __future__ import annotations

import numpy as np
from ..errors import ConfigError, InputError
from ..metrics.validation import softmax
from .base import DeprecatedAlias
from .simple import TemperatureScaling, fit_inverse_temperature


class DACATemperature(TemperatureScaling):
    """Temperature scaling fitted without labels to the base model's distribution (see above).

    Parameters
    ----------
    min_temperature : float, default 0.01
        Lower bound of T in the search.

    Attributes
    ----------
    temperature_, inverse_temperature_, at_bound_ : as in `TemperatureScaling`
    n_agree_ : int
        Items the fit used: those where both models predict the same option.

    Examples
    --------
    An aligned model whose logits are the base model's, three times sharper:

    >>> import numpy as np
    >>> from calibtune.calibrators import DACATemperature
    >>> base = np.random.default_rng(0).normal(size=(500, 4))
    >>> d = DACATemperature().fit_unsupervised(3 * base, base)
    >>> round(d.temperature_, 3), d.n_agree_
    (3.0, 500)
    """

    name = "daca"
    n_agree = DeprecatedAlias("n_agree_")

    def __init__(self, min_temperature: float = 1e-2) -> None:
        super().__init__(min_temperature)
        self.n_agree_ = 0

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
        za, ma = np.where(m, z, 0.0)[agree], m[agree]
        # min KL(base ‖ aligned_T) = min cross-entropy to the base distribution: convex in 1/T
        self.inverse_temperature_, self.at_bound_ = fit_inverse_temperature(
            za, ma, softmax(r[agree], ma), 1.0 / self.min_temperature)
        self._warn_at_bound()
        self.n_agree_ = int(agree.sum())
        self.fitted_ = True
        return self

    def _fit(self, z, y, m) -> None:
        raise ConfigError("DACA is unsupervised: call fit_unsupervised(logits, reference_logits)")

    def fitted_params(self) -> dict:
        return super().fitted_params() | {"n_agree": self.n_agree_}

    def load_fitted_params(self, params: dict) -> None:
        super().load_fitted_params(params)
        self.n_agree_ = int(params.get("n_agree", 0))
