"""Bootstrap intervals: coverage-shaped checks against values computed independently of the code."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from headstart.evaluation.intervals import bootstrap_metrics, gain_words, interval_words


def _proba(pred: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[pred] * 0.9 + 0.1 / k


def test_interval_brackets_the_point_estimate_and_narrows_with_n() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 400, 4000):
        y = rng.integers(0, 3, n)
        pred = np.where(rng.random(n) < 0.8, y, (y + 1) % 3)  # about 80% right
        ci = bootstrap_metrics(y, _proba(pred, 3))
        acc = (pred == y).mean()
        assert ci["accuracy"][0] <= acc <= ci["accuracy"][1]
        f1 = f1_score(y, pred, average="macro")
        assert ci["macro_f1"][0] <= f1 <= ci["macro_f1"][1]
        widths.append(ci["accuracy"][1] - ci["accuracy"][0])
    assert widths[0] > 2.5 * widths[1] > 2.5 * 2.5 * widths[2] * 0.9  # ~ 1/sqrt(n)
    # the normal approximation of a proportion's interval at n = 400: 2 * 1.96 * sqrt(p (1-p) / n) ~ 0.078
    assert 0.06 < widths[1] < 0.10


def test_paired_gain_interval_excludes_zero_only_for_a_real_gain() -> None:
    rng = np.random.default_rng(1)
    n = 300
    y = rng.integers(0, 2, n)
    good = np.where(rng.random(n) < 0.95, y, 1 - y)
    bad = np.where(rng.random(n) < 0.70, y, 1 - y)
    real = bootstrap_metrics(y, _proba(good, 2), reference=_proba(bad, 2))["gain"]
    assert real["accuracy"][0] > 0 and real["p_not_better"] < 0.01
    same = bootstrap_metrics(y, _proba(good, 2), reference=_proba(good, 2))["gain"]
    assert same["accuracy"][0] < 0 < same["accuracy"][1] and same["p_not_better"] == 1.0
    assert "includes 0" in gain_words(0.01, [-0.02, 0.04]) and "real" in gain_words(0.1, [0.05, 0.15])


def test_small_test_split_is_said_in_words() -> None:
    assert interval_words(12, [0.5, 0.9]).startswith("Only 12 test items: the accuracy is known only to within about +-20")
    assert interval_words(500, [0.7, 0.8]) is None


def test_perfect_scores_on_a_few_items_keep_an_honest_interval() -> None:
    # 9 of 9 right: Wilson's interval is about 70-100% (a percentile bootstrap would say 100-100%).
    y = np.arange(9) % 3
    ci = bootstrap_metrics(y, _proba(y, 3), reference=_proba(y, 3))
    assert 0.65 < ci["accuracy"][0] < 0.72 and ci["accuracy"][1] == 1.0
    # both models perfect: the gain is 0 give or take about 20 points, not exactly 0
    assert -0.3 < ci["gain"]["accuracy"][0] < -0.1 and 0.1 < ci["gain"]["accuracy"][1] < 0.3
    assert "+-15" in interval_words(9, ci["accuracy"])


def test_wilson_matches_the_textbook_value() -> None:
    from headstart.evaluation.intervals import wilson

    # Wilson (1927) / Newcombe (1998), 81 of 263: 0.2553 to 0.3662
    lo, hi = wilson(81, 263)
    assert abs(lo - 0.2553) < 5e-4 and abs(hi - 0.3662) < 5e-4
