"""One interface for post-hoc calibrators: fit(logits, labels) / transform(logits) → probs.

Inputs are option **logits** [n, K] (masked options allowed); probabilities are accepted only
with `from_probs=True`, which converts them with log. As in scikit-learn (whose `BaseEstimator`
the base class is): hyper-parameters are the constructor's arguments (`get_params` /
`set_params`), fitted attributes end in `_` (`temperature_`); `fitted_params` /
`load_fitted_params` are the JSON a saved calibrator holds. The names fitted attributes had
before the `_` stay readable as deprecated aliases.
"""
from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from ..errors import CalibtuneError, ConfigError, InputError, SavedFileError
from ..integrity import atomic_write_json
from ..metrics.validation import check_inputs, softmax

REGISTRY: dict[str, type["Calibrator"]] = {}


class NotFittedError(CalibtuneError):
    """transform() was called before fit()."""


def as_logits(values: np.ndarray, mask: np.ndarray | None, from_probs: bool) -> tuple[np.ndarray,
                                                                                      np.ndarray]:
    """(logits, mask) as float64 / bool, converting probabilities with log when asked."""
    z = np.asarray(values, dtype=np.float64)
    if z.ndim != 2:
        raise InputError(f"calibrators take a 2-D array [n_items, n_options], got shape {z.shape}")
    m = np.ones(z.shape, bool) if mask is None else np.asarray(mask, bool)
    if m.shape != z.shape:
        raise InputError(f"mask shape {m.shape} does not match logits {z.shape}")
    if from_probs:
        if (z[m] < 0).any() or (z[m] > 1).any():
            raise InputError("from_probs=True but values lie outside [0, 1]")
        z = np.log(np.clip(z, 1e-300, 1.0))
    if not np.isfinite(np.where(m, z, 0.0)).all():
        raise InputError("logits hold NaN or inf")
    return np.where(m, z, 0.0), m


class DeprecatedAlias:
    """A read-only old name for a fitted attribute: reading it warns and returns the new one."""

    def __init__(self, new: str) -> None:
        self.new = new

    def __set_name__(self, owner: type, name: str) -> None:
        self.old = name

    def __get__(self, obj: object, owner: type | None = None):
        if obj is None:
            return self
        warnings.warn(f"{type(obj).__name__}.{self.old} is deprecated; use .{self.new}",
                      DeprecationWarning, stacklevel=2)
        return getattr(obj, self.new)

    def __set__(self, obj: object, value) -> None:
        raise AttributeError(f"{type(obj).__name__}.{self.old} is a read-only deprecated alias; "
                             f"set .{self.new}")


class Calibrator(BaseEstimator, ABC):
    """Base class: subclasses implement `_fit` and `_transform` on (logits, mask), and
    `fitted_params` / `load_fitted_params` for the saved file.

    Constructor arguments are the hyper-parameters, stored under their own names, so that
    scikit-learn's `get_params()` / `set_params(**params)` / `clone` work on every calibrator.
    """

    name: ClassVar[str] = ""
    changes_ranking: ClassVar[bool] = False  # may the calibrated argmax differ from the input's?

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            REGISTRY[cls.name] = cls

    def __init__(self) -> None:
        self.fitted_ = False

    def fit(self, logits: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
            from_probs: bool = False) -> "Calibrator":
        """Fit on option logits [n, K] and gold labels [n]. Returns self."""
        z, m = as_logits(logits, mask, from_probs)
        check_inputs(softmax(z, m), labels, m)
        self._fit(z, np.asarray(labels, dtype=np.int64), m)
        self.fitted_ = True
        return self

    def transform(self, logits: np.ndarray, mask: np.ndarray | None = None, *,
                  from_probs: bool = False) -> np.ndarray:
        """Calibrated probabilities [n, K] (masked options get 0; rows sum to 1)."""
        if not self.fitted_:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
        z, m = as_logits(logits, mask, from_probs)
        p = self._transform(z, m)
        p = np.where(m, p, 0.0)
        return p / p.sum(axis=1, keepdims=True)

    @abstractmethod
    def _fit(self, z: np.ndarray, y: np.ndarray, m: np.ndarray) -> None: ...

    @abstractmethod
    def _transform(self, z: np.ndarray, m: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def fitted_params(self) -> dict:
        """Fitted parameters (and the hyper-parameters they depend on) as JSON-ready data."""

    @abstractmethod
    def load_fitted_params(self, params: dict) -> None:
        """Restore what `fitted_params` returned (also from files older versions wrote)."""

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, {"method": self.name, "params": self.fitted_params()})

    @staticmethod
    def load(path: str | Path) -> "Calibrator":
        """A fitted calibrator from `save`'s JSON; a bad file raises `SavedFileError`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            cal = make_calibrator(data["method"])
            cal.load_fitted_params(data["params"])
        except OSError as err:
            raise SavedFileError(f"{path}: cannot read calibrator file ({err.strerror})") from None
        except (ValueError, KeyError, TypeError, ConfigError) as err:
            reason = f"missing {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
            raise SavedFileError(f"{path}: not a calibtune calibrator file ({reason})") from None
        cal.fitted_ = True
        return cal


def make_calibrator(method: str, **kwargs) -> Calibrator:
    if method not in REGISTRY:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of "
                          f"{', '.join(sorted(REGISTRY))}")
    return REGISTRY[method](**kwargs)


def keep_top(probs: np.ndarray, new_top: np.ndarray, mask: np.ndarray | None = None
             ) -> np.ndarray:
    """Distributions whose top option is each row's current argmax, with mass `new_top` there.

    A top-label calibrator calibrates the confidence *of the predicted option*, so the
    prediction must not change. The other options share 1 − c in proportion to their current
    probabilities, each capped just below c (water-filling: capped options give their excess to
    the uncapped ones in proportion), so none overtakes the prediction. A value c below 1/K
    cannot be the top of a K-option distribution: it is raised to 1/K (the other options then
    sit just below it), so the reported confidence is max(c, 1/K) — the 1/K floor of
    docs/theory.md. Rows sum to 1 over `mask`.
    """
    p = np.where(mask, probs, 0.0) if mask is not None else np.asarray(probs, dtype=np.float64)
    m = np.ones(p.shape, bool) if mask is None else np.asarray(mask, bool)
    n = len(p)
    rows = np.arange(n)
    top = np.where(m, p, -np.inf).argmax(axis=1)
    k = m.sum(axis=1)
    c = np.maximum(np.clip(np.asarray(new_top, dtype=np.float64), 0.0, 1.0), 1.0 / k)
    rest = m.copy()
    rest[rows, top] = False
    weight = np.where(rest, p, 0.0)
    weight = np.where(rest, np.maximum(weight, 1e-300), 0.0)  # probability 0: a share still
    cap = c * (1.0 - 1e-9)
    share = np.zeros_like(p)
    free = rest.copy()
    left = 1.0 - c
    for _ in range(p.shape[1]):
        w = np.where(free, weight, 0.0)
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            proposal = np.where(free, left[:, None] * w / np.where(total > 0, total, 1.0)[:, None],
                                0.0)
        over = free & (proposal > cap[:, None])
        if not over.any():
            share = np.where(free, proposal, share)
            break
        share = np.where(over, cap[:, None], share)
        left = left - np.where(over, cap[:, None], 0.0).sum(axis=1)
        free &= ~over
    out = share
    out[rows, top] = 1.0 - share.sum(axis=1)  # = c, or a hair above it where every cap binds
    return np.where(m, out, 0.0)
