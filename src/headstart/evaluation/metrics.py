"""Metrics: accuracy, macro-F1, per-class precision / recall / F1, confusion matrix, ECE."""

from __future__ import annotations

from typing import Any

import numpy as np


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins (Guo et al., 2017)."""
    conf = proba.max(1)
    correct = (proba.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def classification_metrics(y: np.ndarray, proba: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """All scores for integer labels ``y`` and probabilities ``proba`` ``[N, K]``."""
    from sklearn.metrics import confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

    y = np.asarray(y)
    pred = proba.argmax(1)
    labels = list(range(len(label_names)))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    present = [k for k in labels if s[k] > 0]  # classes absent from the test set are not scored
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-12, 1.0), labels=labels)),
        "ece": expected_calibration_error(proba, y),
        "per_class": {label_names[k]: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]),
                                       "support": int(s[k])} for k in labels},
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
    }
