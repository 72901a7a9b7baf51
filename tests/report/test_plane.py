"""The accuracy–ECE plane read from training run folders."""
import json

import pytest

from calibtune.errors import ConfigError
from calibtune.report.plane import prepare_plane, save_plane
from calibtune.workflows.train import run_training

from conftest import make_items, tiny_train_config, write_train_eval


def fake_run(folder, points, k=4):
    """A run folder whose epoch points are (accuracy, ece, q95) triples."""
    folder.mkdir()
    log = [{"epoch": i + 1.0, "step": i + 1, "heldout_accuracy": a, "heldout_ece": e,
            "heldout_confidence": a + e, "heldout_noise_q95": q, "heldout_n": 100,
            "train_accuracy": min(1.0, a + 0.2), "train_ece": 0.05, "train_confidence": a + 0.2,
            "train_accuracy_ci": [a, a + 0.3], "train_ece_ci": [0.0, 0.1]}
           for i, (a, e, q) in enumerate(points)]
    (folder / "train_log.json").write_text(json.dumps(log))
    (folder / "summary.json").write_text(json.dumps({"method": "cft"}))
    (folder / "eval").mkdir()
    (folder / "eval" / "metrics.json").write_text(json.dumps({
        "accuracy": points[-1][0], "ece": points[-1][1], "mean_confidence": 0.5,
        "n_options_max": k, "ece_noise_floor": {"q95": points[-1][2]}}))
    return folder


def test_critical_accuracy_is_where_ece_leaves_the_noise_band(tmp_path):
    run = fake_run(tmp_path / "r", [(0.30, 0.02, 0.05), (0.40, 0.03, 0.05), (0.50, 0.08, 0.05),
                                    (0.60, 0.12, 0.05)])
    plane = prepare_plane(run)
    assert [p.label for p in plane.heldout] == ["epoch 1", "epoch 2", "epoch 3", "epoch 4", "after"]
    assert plane.critical_accuracy["critical"] == pytest.approx(0.50)
    assert plane.critical_accuracy["last_within"] == pytest.approx(0.40)
    # Proposition 6 at each point: (|A_T − A_H| − |C_H − A_T|)+ with C_H = A_H + ECE here
    assert plane.heldout[0].gap_floor == pytest.approx(max(0.2 - abs(0.32 - 0.5), 0))
    save_plane([plane], tmp_path / "plane.png")
    assert (tmp_path / "plane.png").stat().st_size > 10_000
    json.dumps(plane.to_dict(), allow_nan=False)


def test_a_folder_that_is_not_a_training_run_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="train_log.json"):
        prepare_plane(tmp_path)


def test_plane_of_a_real_tiny_training_run(tiny_llama, tmp_path):
    (tmp_path / "d").mkdir()
    data = write_train_eval(tmp_path / "d", make_items(16, k=[4, 3], seed=5), make_items(8, seed=6))
    cfg = tiny_train_config(tiny_llama, data, tmp_path, method="cft", epochs=2, save_steps=50)
    run_training(cfg)
    plane = prepare_plane(cfg.out)
    assert [p.label for p in plane.heldout] == ["before", "epoch 1", "epoch 2", "after"]
    assert len(plane.train) == 2 and all(p.ece_ci for p in plane.train)
    assert plane.heldout[-1].accuracy == pytest.approx(plane.heldout[-2].accuracy)  # same model
