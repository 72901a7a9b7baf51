"""The reference point and the scaling family: identity, temperature, vector, matrix scaling."""
from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from ..errors import ConfigError, InputError
from ..metrics.proper import gold_nll
from ..metrics.validation import log_softmax, softmax
from .base import Calibrator

log = logging.getLogger(__name__)


def _nll(z: np.ndarray, y: np.ndarray, m: np.ndarray) -> float:
    return gold_nll(z, y, m)


class Identity(Calibrator):
    """No change: the softmax of the logits. The row every comparison starts from."""

    name = "identity"

    def _fit(self, z, y, m) -> None:
        pass

    def _transform(self, z, m):
        return softmax(z, m)

    def get_params(self) -> dict:
        return {}

    def set_params(self, params: dict) -> None:
        pass


class TemperatureScaling(Calibrator):
    """One temperature T > 0 dividing all logits, fitted by minimising NLL.

    NLL is convex in 1/T, so a bounded 1-D search on log T finds the optimum; the gradient at it
    is checked to be ~0 (stored as `grad_at_optimum`). Cannot change the argmax, so accuracy is
    kept. Reference: Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
    """

    name = "temperature"

    def __init__(self, bounds: tuple[float, float] = (1e-2, 1e2)) -> None:
        super().__init__()
        if not 0 < bounds[0] < bounds[1]:
            raise ConfigError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")
        self.bounds = bounds
        self.temperature = 1.0
        self.grad_at_optimum = float("nan")

    def _fit(self, z, y, m) -> None:
        lo, hi = np.log(self.bounds[0]), np.log(self.bounds[1])
        res = minimize_scalar(lambda lt: _nll(z / np.exp(lt), y, m), bounds=(lo, hi),
                              method="bounded", options={"xatol": 1e-10})
        self.temperature = float(np.exp(res.x))
        self.grad_at_optimum = self.nll_gradient(z, y, m, self.temperature)
        if np.isclose(res.x, lo, atol=1e-6) or np.isclose(res.x, hi, atol=1e-6):
            log.warning("temperature hit its bound %.3g: NLL keeps falling toward it, so the "
                        "logits carry (almost) no information about correctness — typical of "
                        "a model at chance accuracy", self.temperature)

    @staticmethod
    def nll_gradient(z, y, m, temperature: float) -> float:
        """d NLL / d log T at `temperature` (analytic): mean(z_y − E_p[z]) / T."""
        p = softmax(z / temperature, m)
        expected = np.sum(np.where(m, p * z, 0.0), axis=1)
        return float(np.mean(z[np.arange(len(y)), y] - expected) / temperature)

    def _transform(self, z, m):
        return softmax(z / self.temperature, m)

    def get_params(self) -> dict:
        return {"temperature": self.temperature, "grad_at_optimum": self.grad_at_optimum,
                "bounds": list(self.bounds)}

    def set_params(self, params: dict) -> None:
        self.temperature = float(params["temperature"])
        self.grad_at_optimum = float(params.get("grad_at_optimum", float("nan")))
        self.bounds = tuple(params.get("bounds", self.bounds))


class _AffineScaling(Calibrator):
    """softmax(z W + b) fitted by L-BFGS on NLL + reg·(‖W − W0‖² + ‖b‖²) with exact gradients."""

    def __init__(self, reg: float = 1e-3) -> None:
        super().__init__()
        if reg < 0:
            raise ConfigError(f"reg must be >= 0, got {reg}")
        self.reg = reg
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

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
        self.weight, self.bias = self._unpack(res.x, k)

    def _transform(self, z, m):
        if z.shape[1] != self.bias.shape[0]:
            raise InputError(f"{self.name} was fitted for K = {self.bias.shape[0]} options, "
                             f"got {z.shape[1]}")
        return softmax(self._apply(z, self.weight, self.bias), m)

    def get_params(self) -> dict:
        return {"weight": self.weight.tolist(), "bias": self.bias.tolist(), "reg": self.reg}

    def set_params(self, params: dict) -> None:
        self.weight = np.asarray(params["weight"], dtype=np.float64)
        self.bias = np.asarray(params["bias"], dtype=np.float64)
        self.reg = float(params.get("reg", self.reg))


class VectorScaling(_AffineScaling):
    """Per-option scale and bias: softmax(z ⊙ w + b). Needs a fixed K; may change the argmax.

    Reference: Guo et al., ICML 2017.
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
