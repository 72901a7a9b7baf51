import matplotlib.pyplot as plt
import numpy as np
import pytest

from calibtune.metrics import bin_table, softmax
from calibtune.report import (draw_bin_counts, draw_classwise, draw_overlay, draw_reliability,
                              prepare_classwise, prepare_reliability, save_classwise,
                              save_overlay, save_reliability)


@pytest.fixture
def probs_labels():
    rng = np.random.default_rng(0)
    return softmax(rng.normal(size=(400, 4)) * 2), rng.integers(0, 4, 400)


def test_reliability_bars_come_from_bin_table(probs_labels):
    p, y = probs_labels
    data = prepare_reliability(p, y, n_bins=10, label="m")
    table = bin_table(p, y, 10)
    fig, (ax, axh) = plt.subplots(2, 1)
    draw_reliability(ax, data)
    draw_bin_counts(axh, data)
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
    save_reliability(data, tmp_path / "r.png")
    save_reliability(data, tmp_path / "r.svg")
    panels = prepare_classwise(p, y)
    assert len(panels) == 5 and panels[-1].label == "all options"
    assert panels[-1].table.n == 400 * 4  # every (item, option) probability, pooled
    save_classwise(panels, 0.1, tmp_path / "cw.png")
    save_overlay([data, prepare_reliability(p ** 0.5 / (p ** 0.5).sum(1, keepdims=True), y,
                                            label="tempered")], tmp_path / "o.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "r.svg").read_bytes()[:500]
    for name in ("cw.png", "o.png"):
        png = (tmp_path / name).read_bytes()
        assert png[:4] == b"\x89PNG" and len(png) > 1000, name
    assert not list(tmp_path.glob(".*.tmp"))


def test_draw_functions_take_the_callers_axes(probs_labels):
    """A paper figure: the three diagrams as panels of one figure, nothing saved."""
    p, y = probs_labels
    data = prepare_reliability(p, y, label="aligned")
    panels = prepare_classwise(p, y)
    fig, axes = plt.subplots(1, 3 + len(panels))
    draw_reliability(axes[0], data, title="(a)")
    draw_overlay(axes[1], [data])
    draw_bin_counts(axes[2], data)
    draw_classwise(axes[3:], panels)
    assert axes[0].get_title() == "(a)" and len(axes[0].containers) == 2
    assert axes[1].get_legend() is not None and axes[2].get_ylabel() == "items"
    assert [ax.get_title().split(":")[0] for ax in axes[3:]] == \
        ["option A", "option B", "option C", "option D", "all options"]
    plt.close(fig)
