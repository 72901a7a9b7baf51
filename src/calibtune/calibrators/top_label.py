"""Top-label binning calibrators: histogram binning and isotonic regression on confidence."""
from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression

from ..defaults import N_BINS
from ..errors import ConfigError
from ..metrics.binning import assign_bins, bin_edges
from ..metrics.validation import softmax, top_label
from .base import Calibrator, DeprecatedAlias, NotFittedError, as_logits, keep_top


class TopLabelCalibrator(Calibrator):
    """Calibrates the confidence of the predicted option; subclasses map confidence → value."""

    def _top_value(self, conf: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _transform(self, z, m):
        p = softmax(z, m)
        return keep_top(p, self._top_value(p.max(1)), m)

    def calibrated_confidence(self, logits: np.ndarray, mask: np.ndarray | None = None
                              ) -> np.ndarray:
        """The calibrated confidence of each item's prediction, before the 1/K floor that a
        full distribution imposes (`transform` reports max(value, 1/K))."""
        if not self.fitted_:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
        z, m = as_logits(logits, mask, False)
        return self._top_value(softmax(z, m).max(1))


class HistogramBinning(TopLabelCalibrator):
    """Replace the top confidence by the accuracy of its confidence bin on the fit split.

    Empty bins fall back to their mid-point. The prediction is kept: the other options share
    the remaining mass without overtaking it, and a value below 1/K is raised to 1/K
    (`base.keep_top`). `calibrated_confidence` gives the unclipped value.
    Reference: Zadrozny & Elkan, ICML 2001; top-label form as in Gupta & Ramdas, ICLR 2022.

    Parameters
    ----------
    n_bins : int, default 10
        Number of confidence bins.
    strategy : {"quantile", "uniform"}, default "quantile"
        Equal-mass or equal-width bins.

    Attributes
    ----------
    edges_ : ndarray of shape (n_bins + 1,)
        Bin edges on the fit split's top confidences.
    values_ : ndarray of shape (n_bins,)
        Each bin's calibrated confidence.

    Examples
    --------
    >>> from calibtune.calibrators import HistogramBinning
    >>> from calibtune.metrics import ece, sharpened_logits
    >>> z, y = sharpened_logits(2000, factor=3.0)  # calibrated logits × 3, labels drawn
    >>> hb = HistogramBinning(n_bins=5).fit(z[:1000], y[:1000])
    >>> hb.values_.round(2)
    array([0.47, 0.56, 0.69, 0.82, 0.94])
    >>> p = hb.transform(z[1000:])
    >>> bool((p.argmax(1) == z[1000:].argmax(1)).all()), round(ece(p, y[1000:]), 3)
    (True, 0.015)
    """

    name = "histogram"
    edges = DeprecatedAlias("edges_")
    values = DeprecatedAlias("values_")

    def __init__(self, n_bins: int = N_BINS, strategy: str = "quantile") -> None:
        super().__init__()
        if n_bins < 1:
            raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins, self.strategy = n_bins, strategy
        self.edges_: np.ndarray | None = None
        self.values_: np.ndarray | None = None

    def _fit(self, z, y, m) -> None:
        conf, correct = top_label(softmax(z, m), y)
        self.edges_ = bin_edges(conf, self.n_bins, self.strategy)
        idx = assign_bins(conf, self.edges_)
        count = np.bincount(idx, minlength=self.n_bins)
        hits = np.bincount(idx, weights=correct, minlength=self.n_bins)
        mid = 0.5 * (self.edges_[:-1] + self.edges_[1:])
        self.values_ = np.where(count > 0, hits / np.maximum(count, 1), mid)

    def _top_value(self, conf: np.ndarray) -> np.ndarray:
        return self.values_[assign_bins(conf, self.edges_)]

    def fitted_params(self) -> dict:
        return {"n_bins": self.n_bins, "strategy": self.strategy, "edges": self.edges_.tolist(),
                "values": self.values_.tolist()}

    def load_fitted_params(self, params: dict) -> None:
        self.n_bins, self.strategy = int(params["n_bins"]), params["strategy"]
        self.edges_ = np.asarray(params["edges"])
        self.values_ = np.asarray(params["values"])


class IsotonicCalibration(TopLabelCalibrator):
    """Monotone map of top confidence to accuracy (scikit-learn's IsotonicRegression).

    The prediction is kept, as in `HistogramBinning`.
    Reference: Zadrozny & Elkan, KDD 2002.

    Attributes
    ----------
    x_, y_ : ndarray
        The fitted step function's thresholds and values (scikit-learn's X/y_thresholds_).

    Examples
    --------
    >>> from calibtune.calibrators import IsotonicCalibration
    >>> from calibtune.metrics import ece, sharpened_logits
    >>> z, y = sharpened_logits(2000, factor=3.0)  # calibrated logits × 3, labels drawn
    >>> iso = IsotonicCalibration().fit(z[:1000], y[:1000])
    >>> p = iso.transform(z[1000:])
    >>> bool((p.argmax(1) == z[1000:].argmax(1)).all()), round(ece(p, y[1000:]), 3)
    (True, 0.02)
    """

    name = "isotonic"

    def __init__(self) -> None:
        super().__init__()
        self.x_: np.ndarray | None = None
        self.y_: np.ndarray | None = None

    def _fit(self, z, y, m) -> None:
        conf, correct = top_label(softmax(z, m), y)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(conf, correct)
        self.x_, self.y_ = iso.X_thresholds_, iso.y_thresholds_

    def _top_value(self, conf: np.ndarray) -> np.ndarray:
        return np.interp(conf, self.x_, self.y_)

    def fitted_params(self) -> dict:
        return {"x": self.x_.tolist(), "y": self.y_.tolist()}

    def load_fitted_params(self, params: dict) -> None:
        self.x_, self.y_ = np.asarray(params["x"]), np.asarray(params["y"])
