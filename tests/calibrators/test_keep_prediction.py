"""Top-label calibrators keep the prediction; temperature may be infinite, and says so."""
import json

import numpy as np
import pytest

from calibtune.calibrators import HistogramBinning, IsotonicCalibration, TemperatureScaling
from calibtune.calibrators.base import keep_top
from calibtune.metrics import ece, ece_noise_floor
from calibtune.metrics.validation import softmax
from calibtune.scores import OptionScores


def strict_json(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=refuse)

def test_keep_top_never_changes_the_argmax_and_sets_the_top_mass():
    rng = np.random.default_rng(1)
    for k in (2, 3, 4, 7):
        p = rng.dirichlet(np.full(k, 0.3), size=2000)
        c = rng.random(2000)
        q = keep_top(p, c)
        assert (q.argmax(1) == p.argmax(1)).all()
        np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-12)
        assert (q >= 0).all()
        np.testing.assert_allclose(q.max(1), np.maximum(c, 1 / k), atol=1e-8)
    # masked options get nothing and K is each row's own
    p = np.array([[0.5, 0.49, 0.01, 0.0]])
    q = keep_top(p, np.array([0.2]), np.array([[True, True, True, False]]))
    assert q[0, 3] == 0 and q.argmax() == 0 and q[0, 0] == pytest.approx(1 / 3, abs=1e-8)


def known_model(n, seed, sharpen=3.0, k=4):
    """Labels drawn from softmax(z); the model reports softmax(sharpen · z): overconfident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 1.5
    y = (rng.random(n)[:, None] > np.cumsum(softmax(z), 1)).sum(1)
    return z * sharpen, y


@pytest.mark.parametrize("cls", [HistogramBinning, IsotonicCalibration])
def test_top_label_calibrators_reach_the_noise_floor_and_keep_predictions(cls):
    z, y = known_model(12000, seed=2)
    cal = cls().fit(z[:6000], y[:6000])
    p = cal.transform(z[6000:])
    assert (p.argmax(1) == z[6000:].argmax(1)).all()
    after = ece(p, y[6000:])
    floor = ece_noise_floor(p.max(1), n_sim=200)
    assert after <= floor.q95, (after, floor)
    assert ece(z[6000:], y[6000:], from_logits=True) > 5 * after


@pytest.mark.parametrize("cls", [HistogramBinning, IsotonicCalibration])
def test_top_label_calibrators_at_chance_report_at_least_one_over_k(cls):
    # an overconfident model at chance: calibrated values fall below 1/K, and the distribution
    # floors them at 1/K without moving any prediction
    rng = np.random.default_rng(3)
    z = rng.normal(size=(4000, 4)) * 5
    y = rng.integers(0, 4, 4000)
    cal = cls().fit(z[:2000], y[:2000])
    p = cal.transform(z[2000:])
    assert (p.argmax(1) == z[2000:].argmax(1)).all()
    assert p.max(1).min() >= 0.25 - 1e-9
    assert cal.calibrated_confidence(z[2000:]).min() < 0.25  # the unclipped values


def test_temperature_at_infinity_is_recorded_in_the_run_folder(tmp_path):
    from typer.testing import CliRunner

    from calibtune.cli import app

    rng = np.random.default_rng(4)
    z = rng.normal(size=(400, 4)) * 4
    y = rng.integers(0, 4, 400)  # labels independent of the logits
    ts = TemperatureScaling().fit(z, y)
    assert ts.at_bound_ == "upper" and ts.temperature_ == float("inf")
    np.testing.assert_allclose(ts.transform(z), 0.25)
    path = tmp_path / "s.npz"
    OptionScores(z, y, np.ones_like(z, bool), [f"q{i}" for i in range(400)]).save(path)
    out = tmp_path / "ts"
    res = CliRunner().invoke(app, ["posthoc", "--scores", str(path), "--method", "temperature",
                                   "--fit-fraction", "0.5", "--n-boot", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "inf" in res.output
    cal = strict_json((out / "calibrator.json").read_text())
    assert cal["params"]["at_bound"] == "upper" and cal["params"]["temperature"] is None
    metrics = strict_json((out / "metrics.json").read_text())
    assert metrics["temperature_at_bound"] == "upper"
    assert "T = ∞" in (out / "report.md").read_text()


def test_interior_temperature_fit_has_zero_gradient():
    z, y = known_model(3000, seed=5)
    ts = TemperatureScaling().fit(z, y)
    assert ts.at_bound_ is None and 2.0 < ts.temperature_ < 4.5
    assert abs(ts.grad_at_optimum_) < 1e-5


def test_infinite_temperature_keeps_the_predictions():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(300, 4)) * 4
    ts = TemperatureScaling().fit(z, rng.integers(0, 4, 300))
    assert ts.temperature_ == float("inf")
    p = ts.transform(z)
    assert (p.argmax(1) == z.argmax(1)).all()
    np.testing.assert_allclose(p, 0.25, atol=1e-8)
