"""The Examples sections of the public API run, and say what they print (numpydoc docstrings)."""
import doctest
import importlib

import numpy as np
import pytest

import calibtune as ct

MODULES = ["calibtune.metrics.calibration", "calibtune.metrics.summary", "calibtune.metrics.synthetic",
           "calibtune.option_scores",
           "calibtune.scoring.factory", "calibtune.calibrators.simple",
           "calibtune.calibrators.top_label", "calibtune.calibrators.daca",
           "calibtune.theory.diagnosis"]
PUBLIC = ["ece", "classwise_ece", "summarize", "evaluate", "score", "diagnose"]
CALIBRATORS = ["Identity", "TemperatureScaling", "VectorScaling", "MatrixScaling",
               "HistogramBinning", "IsotonicCalibration", "DACATemperature"]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = importlib.import_module(name)
    with np.printoptions(legacy=False):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                                 verbose=False, report=True)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"


@pytest.mark.parametrize("obj", [getattr(ct, n) for n in PUBLIC]
                         + [getattr(ct.calibrators, n) for n in CALIBRATORS],
                         ids=PUBLIC + CALIBRATORS)
def test_the_public_api_has_numpydoc_examples(obj):
    doc = obj.__doc__ or ""
    assert "Examples\n    --------" in doc and ">>> " in doc
    if obj.__name__ not in ("Identity", "IsotonicCalibration"):  # no hyper-parameters
        assert "Parameters\n    ----------" in doc
