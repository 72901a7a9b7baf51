import json

import numpy as np
import pytest
from typer.testing import CliRunner

from calibtune.calibrators import (REGISTRY, Calibrator, DACATemperature, NotFittedError,
                                   TemperatureScaling, make_calibrator)
from calibtune.cli import app
from calibtune.metrics import ece, nll, softmax
from calibtune.metrics.synthetic import sharpened_logits
from calibtune.scores import OptionScores


def calibrated_then_sharpened(n=6000, k=4, factor=3.0, seed=0):
    """Labels drawn from softmax(z): calibrated by construction; logits × factor overconfident."""
    return sharpened_logits(n, k, factor, scale=1.5, seed=seed)


def test_temperature_recovers_known_factor():
    z, y = calibrated_then_sharpened(factor=3.0)
    ts = TemperatureScaling().fit(z, y)
    assert ts.temperature_ == pytest.approx(3.0, rel=0.05)
    assert abs(ts.grad_at_optimum_) < 1e-5  # the optimum is a stationary point
    assert nll(ts.transform(z), y) <= nll(z, y, from_logits=True)
    assert (ts.transform(z).argmax(1) == z.argmax(1)).all()


def test_temperature_agrees_with_brute_force_grid_and_netcal():
    z, y = calibrated_then_sharpened(n=2000, factor=2.0, seed=1)
    grid = np.exp(np.linspace(np.log(0.5), np.log(8), 4001))
    nlls = [nll(z / t, y, from_logits=True) for t in grid]
    best = grid[int(np.argmin(nlls))]
    ts = TemperatureScaling().fit(z, y)
    assert ts.temperature_ == pytest.approx(best, rel=2e-3)
    from netcal.scaling import TemperatureScaling as NetcalTS

    ref = NetcalTS()
    ref.fit(softmax(z), y)
    p_ref = ref.transform(softmax(z))
    # netcal fits on log-probabilities with its own optimiser: agree to optimiser tolerance
    assert nll(p_ref, y) == pytest.approx(nll(ts.transform(z), y), rel=1e-3)


@pytest.mark.parametrize("method", sorted(set(REGISTRY) - {"daca"}))
def test_every_calibrator_rows_sum_to_one_masks_and_roundtrip(method, tmp_path):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(300, 5)) * 3
    mask = np.ones_like(z, bool)
    mask[::3, 4] = False  # every third item has 4 options
    y = rng.integers(0, 4, 300)
    cal = make_calibrator(method).fit(z, y, mask)
    p = cal.transform(z, mask)
    assert p.shape == z.shape
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    assert (p[~mask] == 0).all() and (p >= 0).all()
    cal.save(tmp_path / "c.json")
    back = Calibrator.load(tmp_path / "c.json")
    np.testing.assert_allclose(back.transform(z, mask), p, atol=1e-12)
    if not cal.changes_ranking:
        assert (p.argmax(1) == np.where(mask, z, -np.inf).argmax(1)).all()


@pytest.mark.parametrize("method", ["temperature", "vector", "matrix", "histogram", "isotonic"])
def test_every_calibrator_lowers_held_out_ece_of_overconfident_model(method):
    z, y = calibrated_then_sharpened(n=8000, factor=3.0, seed=3)
    cal = make_calibrator(method).fit(z[:4000], y[:4000])
    before = ece(z[4000:], y[4000:], from_logits=True)
    after = ece(cal.transform(z[4000:]), y[4000:])
    assert after < before / 2


def test_vector_scaling_recovers_per_option_bias():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(6000, 3))
    y = (rng.random(6000)[:, None] > np.cumsum(softmax(z), 1)).sum(1)
    shifted = z + np.array([2.0, 0.0, 0.0])  # a letter prior toward A
    cal = make_calibrator("vector", reg=0.0).fit(shifted, y)
    b = cal.bias_ - cal.bias_.mean()
    np.testing.assert_allclose(b, [-4 / 3, 2 / 3, 2 / 3], atol=0.15)


def test_not_fitted_and_probability_inputs():
    with pytest.raises(NotFittedError):
        TemperatureScaling().transform(np.zeros((2, 2)))
    z, y = calibrated_then_sharpened(n=500)
    a = TemperatureScaling().fit(softmax(z), y, from_probs=True)
    b = TemperatureScaling().fit(z, y)
    assert a.temperature_ == pytest.approx(b.temperature_, rel=1e-6)


def test_daca_matches_base_confidence_without_labels():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(3000, 4)) * 1.2
    aligned = base * 4.0 + rng.normal(size=base.shape) * 0.1
    d = DACATemperature().fit_unsupervised(aligned, base)
    assert d.temperature_ == pytest.approx(4.0, rel=0.05)
    assert d.n_agree_ > 2500


def test_posthoc_cli_end_to_end(tmp_path):
    z, y = calibrated_then_sharpened(n=4000, factor=3.0, seed=6)
    OptionScores(z, y, np.ones_like(z, bool), [str(i) for i in range(4000)]).save(
        tmp_path / "scores.npz")
    out = tmp_path / "ts"
    res = CliRunner().invoke(app, ["posthoc", "--scores", str(tmp_path / "scores.npz"),
                                   "--method", "temperature", "--fit-fraction", "0.5",
                                   "--out", str(out), "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_fit"] == 2000 and m["n_report"] == 2000
    assert m["accuracy"] == m["before"]["accuracy"]
    assert m["ece"] < m["before"]["ece"] and m["temperature"] == pytest.approx(3, rel=0.1)
    assert (out / "before_after.png").stat().st_size > 1000
    saved = Calibrator.load(out / "calibrator.json")  # the calibrator that made metrics.json
    assert saved.temperature_ == pytest.approx(m["temperature"], rel=1e-9)
    assert "Before and after" in (out / "report.md").read_text()
    res = CliRunner().invoke(app, ["posthoc", "--scores", str(tmp_path / "scores.npz"),
                                   "--method", "daca", "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "--reference" in res.output


def test_posthoc_daca_cli_with_reference(tmp_path):
    rng = np.random.default_rng(7)
    base = rng.normal(size=(600, 4))
    y = rng.integers(0, 4, 600)
    ids = [str(i) for i in range(600)]
    mask = np.ones((600, 4), bool)
    OptionScores(base, y, mask, ids).save(tmp_path / "base.npz")
    OptionScores(base * 5, y, mask, ids).save(tmp_path / "aligned.npz")
    out = tmp_path / "daca"
    res = CliRunner().invoke(app, ["posthoc", "--scores", str(tmp_path / "aligned.npz"),
                                   "--method", "daca", "--reference", str(tmp_path / "base.npz"),
                                   "--fit-fraction", "0.5", "--out", str(out), "--n-boot", "0"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["temperature"] == pytest.approx(5.0, rel=1e-3)
    assert m["calibrator"]["n_agree"] == 300
