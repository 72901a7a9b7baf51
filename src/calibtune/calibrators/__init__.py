"""Post-hoc calibrators with one interface: fit(logits, labels, mask) / transform(logits)."""
from .base import REGISTRY, Calibrator, NotFittedError, make_calibrator
from .top_label import HistogramBinning, IsotonicCalibration
from .daca import DACATemperature
from .simple import Identity, MatrixScaling, TemperatureScaling, VectorScaling

__all__ = ["REGISTRY", "Calibrator", "DACATemperature", "HistogramBinning", "Identity",
           "IsotonicCalibration", "MatrixScaling", "NotFittedError", "TemperatureScaling",
           "VectorScaling", "make_calibrator"]
