"""The reference point and the scaling family: identity, temperature, vector, matrix scaling."""
from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from ..errors import ConfigError, InputError
from ..metrics.proper import gold_nll
from ..metrics.validation import log_softmax, softmax
from .base import Calibrator, DeprecatedAlias

log = logging.getLogger(__name__)


def _nll(z: np.ndarray, y: np.ndarray, m: np.ndarray) -> float:
    return gold_nll(z, y, m)


class Identity(Calibrator):
    """No change: the softmax of the logits. The row every comparison starts from.

    Examples
    --------
    >>> import numpy as np
    >>> from calibtune.calibrators import Identity
    >>> z = np.array([[2.0, 0.0], [0.0, 0.0]])
    >>> Identity().fit(z, np.array([0, 1])).transform(z).round(3)
    array([[0.881, 0.119],
           [0.5  , 0.5  ]])
    """

    name = "identity"

    def _fit(self, z, y, m) -> None:
        pass

    def _transform(self, z, m):
        return softmax(z, m)

    def fitted_params(self) -> dict:
        return {}

    def load_fitted_params(self, params: dict) -> None:
        pass


def fit_inverse_temperature(z: np.ndarray, m: np.ndarray, target: np.ndarray, beta_max: float
                            ) -> tuple[float, str | None]:
    """β = 1/T minimising mean_i −Σ_j t_ij log softmax(β z_i)_j over β ∈ [0, beta_max].

    The objective is convex in β, so the search is exact, and β = 0 (T = ∞: the uniform
    distribution) is a legitimate answer: it is the optimum exactly when the slope at β = 0,
    mean_i Σ_j (1/K_i − t_ij) z_ij, is ≥ 0 — the logits then say nothing about the target (a
    model at chance accuracy). Returns (β, where the fit stopped: None, "upper" for T = ∞ or
    "lower" for T at its lower bound 1/beta_max).
    """
    uniform = m / m.sum(axis=1, keepdims=True)
    slope_at_zero = float(np.mean(np.sum(np.where(m, (uniform - target) * z, 0.0), axis=1)))
    if slope_at_zero >= 0:
        return 0.0, "upper"

    def objective(beta: float) -> float:
        logp = np.where(m, log_softmax(z * beta, m), 0.0)
        return float(-np.mean(np.sum(target * logp, axis=1)))

    res = minimize_scalar(objective, bounds=(0.0, beta_max), method="bounded",
                          options={"xatol": 1e-12})
    beta = float(res.x)
    return beta, ("lower" if beta >= beta_max * (1 - 1e-6) else None)


INFINITE_T_BETA = 1e-10  # β used to apply T = ∞: keeps the argmax, uniform to ~1e-9


class TemperatureScaling(Calibrator):
    """One temperature T > 0 dividing all logits, fitted by minimising NLL.

    NLL is convex in β = 1/T, so a bounded search on β ∈ [0, 1/T_min] is exact; T = ∞ (β = 0,
    the uniform distribution) is allowed, because it is the honest answer when the logits carry
    no information about correctness. Where the fit stops at a limit, `at_bound` says so
    ("upper": T = ∞; "lower": T = T_min) and the run folder and report record it. The gradient
    at the optimum is stored as `grad_at_optimum`. Cannot change the argmax, so accuracy is
    kept. Reference: Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.

    Parameters
    ----------
    min_temperature : float, default 0.01
        Lower bound of T (upper bound of β = 1/T) in the search.

    Attributes
    ----------
    temperature_ : float
        The fitted T (inf: the uniform distribution).
    inverse_temperature_ : float
        β = 1/T, what the fit searches (0 for T = inf).
    at_bound_ : {None, "upper", "lower"}
        Where the fit stopped at a limit of its search.
    grad_at_optimum_ : float
        d NLL / dβ at the fitted β (about 0 at an interior optimum).

    Examples
    --------
    Logits three times too sharp: the fit on one half finds T ≈ 3, and ECE on the other half
    falls to the noise.

    >>> from calibtune.calibrators import TemperatureScaling
    >>> from calibtune.metrics import ece, sharpened_logits
    >>> z, y = sharpened_logits(2000, factor=3.0)  # calibrated logits × 3, labels drawn
    >>> ts = TemperatureScaling().fit(z[:1000], y[:1000])
    >>> round(ts.temperature_, 1), ts.at_bound_
    (2.9, None)
    >>> round(ece(z[1000:], y[1000:], from_logits=True), 2)
    0.19
    >>> round(ece(ts.transform(z[1000:]), y[1000:]), 3)  # the true logits': 0.015
    0.012
    >>> ts.get_params()  # hyper-parameters, as in scikit-learn
    {'min_temperature': 0.01}
    """

    name = "temperature"
    inverse_temperature = DeprecatedAlias("inverse_temperature_")
    temperature = DeprecatedAlias("temperature_")
    at_bound = DeprecatedAlias("at_bound_")
    grad_at_optimum = DeprecatedAlias("grad_at_optimum_")

    def __init__(self, min_temperature: float = 1e-2) -> None:
        super().__init__()
        if not min_temperature > 0:
            raise ConfigError(f"min_temperature must be > 0, got {min_temperature}")
        self.min_temperature = float(min_temperature)
        self.inverse_temperature_ = 1.0
        self.at_bound_: str | None = None
        self.grad_at_optimum_ = float("nan")

    @property
    def temperature_(self) -> float:
        """T = 1/β; inf when the fit chose the uniform distribution."""
        return 1.0 / self.inverse_temperature_ if self.inverse_temperature_ > 0 else float("inf")

    def _fit(self, z, y, m) -> None:
        onehot = np.eye(z.shape[1])[y]
        self.inverse_temperature_, self.at_bound_ = fit_inverse_temperature(
            z, m, onehot, 1.0 / self.min_temperature)
        self.grad_at_optimum_ = self.nll_gradient(z, y, m, self.inverse_temperature_)
        self._warn_at_bound()

    def _warn_at_bound(self) -> None:
        if self.at_bound_ == "upper":
            log.warning("%s: T = inf (uniform probabilities): NLL falls all the way to the "
                        "uniform distribution, so the logits carry no information about "
                        "correctness — typical of a model at chance accuracy", self.name)
        elif self.at_bound_ == "lower":
            log.warning("%s: T stopped at its lower bound %.3g", self.name, self.min_temperature)

    @staticmethod
    def nll_gradient(z, y, m, inverse_temperature: float) -> float:
        """d NLL / dβ at β = 1/T (analytic): mean(E_p[z] − z_y); 0 at an interior optimum."""
        p = softmax(z * inverse_temperature, m)
        expected = np.sum(np.where(m, p * z, 0.0), axis=1)
        return float(np.mean(expected - z[np.arange(len(y)), y]))

    def _transform(self, z, m):
        # T = ∞ is applied as its limit: probabilities uniform to ~1e-9, the ranking of the
        # logits kept (exactly uniform rows would hand every prediction to the first option)
        return softmax(z * max(self.inverse_temperature_, INFINITE_T_BETA), m)

    def fitted_params(self) -> dict:
        return {"temperature": self.temperature_, "inverse_temperature": self.inverse_temperature_,
                "at_bound": self.at_bound_, "grad_at_optimum": self.grad_at_optimum_,
                "min_temperature": self.min_temperature}

    def load_fitted_params(self, params: dict) -> None:
        if "inverse_temperature" in params:
            self.inverse_temperature_ = float(params["inverse_temperature"])
        else:  # files written before β was stored (KeyError: not a temperature file)
            t = params["temperature"]
            self.inverse_temperature_ = 0.0 if t is None else 1.0 / float(t)
        self.at_bound_ = params.get("at_bound")
        g = params.get("grad_at_optimum")
        self.grad_at_optimum_ = float("nan") if g is None else float(g)
        self.min_temperature = float(params.get("min_temperature", self.min_temperature))


class _AffineScaling(Calibrator):
    """softmax(z W + b) fitted by L-BFGS on NLL + reg·(‖W − W0‖² + ‖b‖²) with exact gradients."""

    weight = DeprecatedAlias("weight_")
    bias = DeprecatedAlias("bias_")

    def __init__(self, reg: float = 1e-3) -> None:
        super().__init__()
        if reg < 0:
            raise ConfigError(f"reg must be >= 0, got {reg}")
        self.reg = reg
        self.weight_: np.ndarray | None = None
        self.bias_: np.ndarray | None = None

    def _unpack(self, theta: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _identity_theta(self, k: int) -> np.ndarray:
        raise NotImplementedError

    def _grad_weight(self, z: np.ndarray, g: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _apply(self, z, w, b):
        return z @ w + b if w.ndim == 2 else z * w + b

    def _fit(self, z, y, m) -> None:
        n, k = z.shape
        onehot = np.eye(k)[y]
        theta0 = self._identity_theta(k)

        def objective(theta):
            w, b = self._unpack(theta, k)
            logp = log_softmax(self._apply(z, w, b), m)
            loss = -np.mean(logp[np.arange(n), y])
            g = (np.where(m, np.exp(logp), 0.0) - onehot) / n  # d loss / d scaled logits
            grad = np.concatenate([self._grad_weight(z, g).ravel(), g.sum(0)])
            diff = theta - theta0
            return loss + self.reg * diff @ diff, grad + 2 * self.reg * diff

        res = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                       options={"maxiter": 2000, "gtol": 1e-9})
        self.weight_, self.bias_ = self._unpack(res.x, k)

    def _transform(self, z, m):
        if z.shape[1] != self.bias_.shape[0]:
            raise InputError(f"{self.name} was fitted for K = {self.bias_.shape[0]} options, "
                             f"got {z.shape[1]}")
        return softmax(self._apply(z, self.weight_, self.bias_), m)

    def fitted_params(self) -> dict:
        return {"weight": self.weight_.tolist(), "bias": self.bias_.tolist(), "reg": self.reg}

    def load_fitted_params(self, params: dict) -> None:
        self.weight_ = np.asarray(params["weight"], dtype=np.float64)
        self.bias_ = np.asarray(params["bias"], dtype=np.float64)
        self.reg = float(params.get("reg", self.reg))


class VectorScaling(_AffineScaling):
    """Per-option scale and bias: softmax(z ⊙ w + b). Needs a fixed K; may change the argmax.

    Reference: Guo et al., ICML 2017.

    Parameters
    ----------
    reg : float, default 1e-3
        L2 pull of (w, b) toward (1, 0).

    Attributes
    ----------
    weight_, bias_ : ndarray of shape (K,)
        The fitted per-option scale and bias.

    Examples
    --------
    >>> from calibtune.calibrators import VectorScaling
    >>> from calibtune.metrics import ece, sharpened_logits
    >>> z, y = sharpened_logits(2000, factor=3.0)  # calibrated logits × 3, labels drawn
    >>> vs = VectorScaling().fit(z[:1000], y[:1000])
    >>> vs.weight_.round(1), round(ece(vs.transform(z[1000:]), y[1000:]), 3)
    (array([0.4, 0.3, 0.3, 0.3]), 0.03)
    """

    name = "vector"
    changes_ranking = True

    def _identity_theta(self, k):
        return np.concatenate([np.ones(k), np.zeros(k)])

    def _unpack(self, theta, k):
        return theta[:k], theta[k:]

    def _grad_weight(self, z, g):
        return (g * z).sum(0)


class MatrixScaling(_AffineScaling):
    """Full affine map softmax(z W + b) with L2 pull toward W = I, b = 0. Needs a fixed K.

    Reference: Guo et al., ICML 2017; regularised as in Kull et al., NeurIPS 2019.

    Parameters
    ----------
    reg : float, default 1e-2
        L2 pull of (W, b) toward (I, 0).

    Attributes
    ----------
    weight_ : ndarray of shape (K, K)
    bias_ : ndarray of shape (K,)

    Examples
    --------
    >>> from calibtune.calibrators import MatrixScaling
    >>> from calibtune.metrics import ece, sharpened_logits
    >>> z, y = sharpened_logits(2000, factor=3.0)  # calibrated logits × 3, labels drawn
    >>> ms = MatrixScaling().fit(z[:1000], y[:1000])
    >>> ms.weight_.shape, round(ece(ms.transform(z[1000:]), y[1000:]), 3)
    ((4, 4), 0.035)
    """

    name = "matrix"
    changes_ranking = True

    def __init__(self, reg: float = 1e-2) -> None:
        super().__init__(reg)

    def _identity_theta(self, k):
        return np.concatenate([np.eye(k).ravel(), np.zeros(k)])

    def _unpack(self, theta, k):
        return theta[: k * k].reshape(k, k), theta[k * k:]

    def _grad_weight(self, z, g):
        return z.T @ g
