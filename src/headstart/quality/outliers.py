"""Outliers: items far from every class in feature space.

The score is the squared Mahalanobis distance to the nearest class mean under one shared,
Ledoit-Wolf-shrunk covariance (as the out-of-scope score of :mod:`headstart.evaluation.ood`
measures it), fitted on the data set itself, on the probe's inputs (standardised features on their
top principal axes, :func:`headstart.quality.probe.probe_inputs`): a 256-wide covariance instead of
a 1280-wide one. An item is flagged when its score stands out from the rest by the modified
z-score of Iglewicz and Hoaglin (|0.6745 (s - median) / MAD| > 3.5, on log scores): a rule that does
not flag a fixed share, so clean data can have none.
"""

from __future__ import annotations

import numpy as np


__all__ = ["OUTLIER_Z", "outlier_scores", "robust_z"]

OUTLIER_Z = 3.5


def robust_z(scores: np.ndarray) -> np.ndarray:
    """Modified z-scores ``0.6745 (s - median) / MAD``; zeros when the MAD is 0."""
    s = np.asarray(scores, dtype=np.float64)
    med = np.median(s)
    mad = np.median(np.abs(s - med))
    return np.zeros_like(s) if mad == 0 else 0.6745 * (s - med) / mad


def outlier_scores(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(score, z)`` per item: the squared Mahalanobis distance to the nearest class mean and its
    robust z-score (on log scale). ``features``: the probe's inputs (or any centred-scale features)."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes])
    resid = x - means[np.searchsorted(classes, y)]
    cov = resid.T @ resid / len(x)
    shrink = float(ledoit_wolf_shrinkage(resid, assume_centered=True))
    cov = (1 - shrink) * cov + shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
    vals, vecs = np.linalg.eigh(cov)
    whiten = vecs / np.sqrt(np.maximum(vals, 1e-12 * vals.max()))
    xw, mw = x @ whiten, means @ whiten
    d2 = (xw * xw).sum(1)[:, None] - 2 * xw @ mw.T + (mw * mw).sum(1)[None, :]
    scores = np.maximum(d2.min(1), 0.0)
    return scores, robust_z(np.log(np.maximum(scores, 1e-12)))
