"""scikit-learn conventions: hyper-parameters through get_params/set_params/clone, fitted
attributes ending in `_`, the old attribute names as read-only deprecated aliases."""
import json

import numpy as np
import pytest
from sklearn.base import clone

from calibtune.calibrators import (REGISTRY, DACATemperature, HistogramBinning, TemperatureScaling,
                                   VectorScaling, make_calibrator)
from calibtune.calibrators.base import Calibrator
from calibtune.metrics import softmax

HYPER = {"identity": {}, "temperature": {"min_temperature": 0.01}, "vector": {"reg": 1e-3},
         "matrix": {"reg": 1e-2}, "histogram": {"n_bins": 10, "strategy": "quantile"},
         "isotonic": {}, "daca": {"min_temperature": 0.01}}


def data(n=400, k=4, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 3
    return z, np.where(rng.random(n) < 0.6, z.argmax(1), rng.integers(0, k, n))  # informative


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_get_params_are_the_constructor_arguments_and_clone_copies_them(method):
    cal = make_calibrator(method)
    assert cal.get_params() == HYPER[method]
    if HYPER[method]:
        name = next(iter(HYPER[method]))
        new = {"min_temperature": 0.5, "reg": 0.25, "n_bins": 4}[name]
        assert cal.set_params(**{name: new}) is cal and cal.get_params()[name] == new
        twin = clone(cal)
        assert twin is not cal and twin.get_params() == cal.get_params() and not twin.fitted_
    with pytest.raises(ValueError, match="Invalid parameter"):
        cal.set_params(no_such_option=1)


def test_fitted_attributes_end_in_underscore_and_old_names_warn():
    z, y = data()
    ts = TemperatureScaling().fit(z, y)
    for old in ("temperature", "inverse_temperature", "at_bound", "grad_at_optimum"):
        with pytest.warns(DeprecationWarning, match=f"{old} is deprecated; use .{old}_"):
            assert getattr(ts, old) == getattr(ts, old + "_")
        with pytest.raises(AttributeError, match="read-only"):
            setattr(ts, old, 1.0)
    assert ts.temperature_ == pytest.approx(1 / ts.inverse_temperature_)
    vs = VectorScaling().fit(z, y)
    with pytest.warns(DeprecationWarning):
        np.testing.assert_array_equal(vs.bias, vs.bias_)
    hb = HistogramBinning(n_bins=5).fit(z, y)
    with pytest.warns(DeprecationWarning):
        np.testing.assert_array_equal(hb.values, hb.values_)
    d = DACATemperature().fit_unsupervised(z * 2, z)
    with pytest.warns(DeprecationWarning):
        assert d.n_agree == d.n_agree_ == 400


def test_saved_files_keep_their_keys_and_old_files_load(tmp_path):
    z, y = data()
    ts = TemperatureScaling().fit(z, y)
    ts.save(tmp_path / "t.json")
    params = json.loads((tmp_path / "t.json").read_text())["params"]
    assert set(params) == {"temperature", "inverse_temperature", "at_bound", "grad_at_optimum",
                           "min_temperature"}
    assert Calibrator.load(tmp_path / "t.json").temperature_ == pytest.approx(ts.temperature_)
    # a file written before β was stored: the temperature alone
    (tmp_path / "old.json").write_text(json.dumps({"method": "temperature",
                                                   "params": {"temperature": 2.5}}))
    old = Calibrator.load(tmp_path / "old.json")
    assert old.temperature_ == pytest.approx(2.5) and old.fitted_
    np.testing.assert_allclose(old.transform(z), softmax(z / 2.5), atol=1e-12)
