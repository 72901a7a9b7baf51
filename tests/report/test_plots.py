import numpy as np
import pytest

from calibtune.metrics import bin_table, softmax
from calibtune.report import (draw_reliability, plot_classwise, plot_overlay, plot_reliability,
                              prepare_classwise, prepare_reliability)


@pytest.fixture
def probs_labels():
    rng = np.random.default_rng(0)
    return softmax(rng.normal(size=(400, 4)) * 2), rng.integers(0, 4, 400)


def test_reliability_bars_come_from_bin_table(probs_labels):
    p, y = probs_labels
    data = prepare_reliability(p, y, n_bins=10, label="m")
    table = bin_table(p, y, 10)
    fig = draw_reliability(data)
    ax, axh = fig.axes
    accuracy_bars = ax.containers[0]
    full = table.count > 0
    np.testing.assert_allclose([b.get_height() for b in accuracy_bars], table.accuracy[full])
    np.testing.assert_allclose([b.get_x() for b in accuracy_bars], table.edges[:-1][full])
    gap_bars = ax.containers[1]
    np.testing.assert_allclose([b.get_height() for b in gap_bars], np.abs(table.gap[full]))
    np.testing.assert_allclose([b.get_height() for b in axh.containers[0]], table.count)
    assert "ECE" in ax.get_title() and "n = 400" in ax.get_title()


def test_diagrams_render_png_and_svg(tmp_path, probs_labels):
    p, y = probs_labels
    data = prepare_reliability(p, y, label="aligned")
    plot_reliability(data, tmp_path / "r.png")
    plot_reliability(data, tmp_path / "r.svg")
    panels = prepare_classwise(p, y)
    assert len(panels) == 5 and panels[-1].label == "all options"
    assert panels[-1].table.n == 400 * 4  # every (item, option) probability, pooled
    plot_classwise(panels, 0.1, tmp_path / "cw.png")
    plot_overlay([data, prepare_reliability(p ** 0.5 / (p ** 0.5).sum(1, keepdims=True), y,
                                            label="tempered")], tmp_path / "o.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "r.svg").read_bytes()[:500]
    assert (tmp_path / "cw.png").stat().st_size > 1000 and (tmp_path / "o.png").exists()
    assert not list(tmp_path.glob(".*.tmp"))
