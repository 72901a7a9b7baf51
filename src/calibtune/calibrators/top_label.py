"""Top-label binning calibrators: histogram binning and isotonic regression on confidence."""
from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression

from ..defaults import N_BINS
from ..errors import ConfigError
from ..metrics.binning import assign_bins, bin_edges
from ..metrics.validation import softmax, top_label
from .base import Calibrator, NotFittedError, as_logits, keep_top


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
    """

    name = "histogram"

    def __init__(self, n_bins: int = N_BINS, strategy: str = "quantile") -> None:
        super().__init__()
        if n_bins < 1:
            raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins, self.strategy = n_bins, strategy
        self.edges: np.ndarray | None = None
        self.values: np.ndarray | None = None

    def _fit(self, z, y, m) -> None:
        conf, correct = top_label(softmax(z, m), y)
        self.edges = bin_edges(conf, self.n_bins, self.strategy)
        idx = assign_bins(conf, self.edges)
        count = np.bincount(idx, minlength=self.n_bins)
        hits = np.bincount(idx, weights=correct, minlength=self.n_bins)
        mid = 0.5 * (self.edges[:-1] + self.edges[1:])
        self.values = np.where(count > 0, hits / np.maximum(count, 1), mid)

    def _top_value(self, conf: np.ndarray) -> np.ndarray:
        return self.values[assign_bins(conf, self.edges)]

    def get_params(self) -> dict:
        return {"n_bins": self.n_bins, "strategy": self.strategy, "edges": self.edges.tolist(),
                "values": self.values.tolist()}

    def set_params(self, params: dict) -> None:
        self.n_bins, self.strategy = int(params["n_bins"]), params["strategy"]
        self.edges = np.asarray(params["edges"])
        self.values = np.asarray(params["values"])


class IsotonicCalibration(TopLabelCalibrator):
    """Monotone map of top confidence to accuracy (scikit-learn's IsotonicRegression).

    The prediction is kept, as in `HistogramBinning`.
    Reference: Zadrozny & Elkan, KDD 2002.
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

    def get_params(self) -> dict:
        return {"x": self.x_.tolist(), "y": self.y_.tolist()}

    def set_params(self, params: dict) -> None:
        self.x_, self.y_ = np.asarray(params["x"]), np.asarray(params["y"])
