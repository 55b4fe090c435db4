"""Metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from headstart.evaluation.metrics import classification_metrics, expected_calibration_error


def test_ece_hand_computed() -> None:
    # Bin 0.9: two items, one right -> |0.5 - 0.9| = 0.4, weight 1/2. Bin 0.6: two right -> |1 - 0.6| = 0.4.
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    assert np.isclose(expected_calibration_error(proba, y), 0.5 * 0.4 + 0.5 * 0.4)
    perfect = np.eye(2)[[0, 1, 1]]
    assert expected_calibration_error(perfect, np.array([0, 1, 1])) == 0.0


def test_classification_metrics() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    proba = rng.dirichlet(np.ones(3), 50)
    m = classification_metrics(y, proba, ["a", "b", "c"])
    pred = proba.argmax(1)
    assert m["accuracy"] == (pred == y).mean()
    assert np.isclose(m["macro_f1"], f1_score(y, pred, average="macro"))
    assert np.array(m["confusion_matrix"]).sum() == 50
    assert np.trace(np.array(m["confusion_matrix"])) == (pred == y).sum()
    assert sum(s["support"] for s in m["per_class"].values()) == 50
