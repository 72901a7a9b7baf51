"""Bin edges are exactly k/M: a confidence on an edge opens its own bin (docs/metrics.md, Definitions)."""
import numpy as np
import pytest

from calibtune.metrics import ece
from calibtune.metrics.binning import assign_bins, bin_edges

@pytest.mark.parametrize("m", [10, 15, 20])
def test_every_interior_edge_opens_its_own_bin(m):
    edges = bin_edges(None, m)
    for k in range(1, m):
        edge = k / m
        assert edges[k] == edge
        below, above = np.nextafter(edge, 0.0), np.nextafter(edge, 1.0)
        assert assign_bins(np.array([edge, below, above]), edges).tolist() == [k, k - 1, k]
    assert assign_bins(np.array([0.0, 1.0]), edges).tolist() == [0, m - 1]


def test_ece_with_confidence_exactly_on_an_edge():
    # two items at confidence exactly 0.3, one right and one wrong
    p = np.array([[0.3, 0.25, 0.25, 0.2]] * 2)
    conf = p.max(1)
    assert (conf == 0.3).all()
    # bin [0.3, 0.4): accuracy 0.5, confidence 0.3 → ECE 0.2 (bin [0.2, 0.3) would say the same
    # gap, so check the bin index too)
    assert assign_bins(conf, bin_edges(None, 10)).tolist() == [3, 3]
    assert ece(p, np.array([0, 1]), 10) == pytest.approx(0.2)
