"""Per-group table: per-group figures equal the pooled functions on the subset; flags; order."""
import json

import numpy as np
import pytest

from calibtune.metrics import ece
from calibtune.metrics.groups import MIN_GROUP_ITEMS, group_table, groups_from_ids
from calibtune.metrics.validation import MetricInputError


def two_option_probs(conf):
    """K=2 probabilities whose top option (index 0) has confidence `conf`."""
    return np.stack([conf, 1 - conf], axis=1)


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    parts, labels, groups = [], [], []
    # "calibrated": correct with probability equal to the confidence
    c = rng.uniform(0.55, 1.0, 1500)
    parts.append(two_option_probs(c))
    labels.append(np.where(rng.random(1500) < c, 0, 1))
    groups += ["calibrated"] * 1500
    # "overconfident": confidence ~0.95, right half of the time
    c = rng.uniform(0.9, 1.0, 400)
    parts.append(two_option_probs(c))
    labels.append(np.where(rng.random(400) < 0.5, 0, 1))
    groups += ["overconfident"] * 400
    # "mild": confidence ~0.8, right 70 % of the time
    c = rng.uniform(0.7, 0.9, 600)
    parts.append(two_option_probs(c))
    labels.append(np.where(rng.random(600) < 0.7, 0, 1))
    groups += ["mild"] * 600
    # "tiny": too few items, badly calibrated
    c = np.full(8, 0.99)
    parts.append(two_option_probs(c))
    labels.append(np.r_[np.zeros(2), np.ones(6)].astype(int))
    groups += ["tiny"] * 8
    return np.concatenate(parts), np.concatenate(labels), np.array(groups)


def test_rows_match_subset_metrics_and_are_sorted_worst_first():
    p, y, g = make_data()
    table = group_table(p, y, g, n_boot=200, n_sim=300)
    names = [r.group for r in table.rows]
    # unflagged worst first, then the flagged ones (tiny: too few items; calibrated: within noise)
    assert names == ["overconfident", "mild", "tiny", "calibrated"]
    for r in table.rows:
        sel = g == r.group
        assert r.n == sel.sum()
        assert r.ece == pytest.approx(ece(p[sel], y[sel]))
        assert r.accuracy == pytest.approx(np.mean(p[sel].argmax(1) == y[sel]))
        assert r.mean_confidence == pytest.approx(p[sel].max(1).mean())
        assert r.ece_low <= r.ece_high
    rows = {r.group: r for r in table.rows}
    assert not rows["overconfident"].flagged and rows["overconfident"].ece_low > 0.3
    assert rows["calibrated"].within_noise and not rows["calibrated"].too_small
    assert rows["calibrated"].ece <= rows["calibrated"].noise_floor_q95
    assert rows["tiny"].too_small and rows["tiny"].n < MIN_GROUP_ITEMS
    assert "too few items" in rows["tiny"].flag and rows["overconfident"].flag == ""
    json.dumps(table.to_dict())


def test_flagged_last_can_be_turned_off():
    p, y, g = make_data()
    table = group_table(p, y, g, n_boot=50, n_sim=100, flagged_last=False)
    eces = [r.ece for r in table.rows]
    assert eces == sorted(eces, reverse=True)
    assert table.rows[0].group == "tiny"  # its ECE is the largest, read it with its flag


def test_is_seeded_and_validates():
    p, y, g = make_data()
    a = group_table(p, y, g, n_boot=50, n_sim=100, seed=3).to_dict()
    assert a == group_table(p, y, g, n_boot=50, n_sim=100, seed=3).to_dict()
    with pytest.raises(MetricInputError, match="groups"):
        group_table(p, y, g[:-1], n_boot=10)


def test_groups_from_ids():
    assert groups_from_ids(["mmlu_law/3", "arc/0", "plain"]).tolist() == ["mmlu_law", "arc", "plain"]
