"""Outliers: items far from every class in feature space.

The score is the squared Mahalanobis distance to the nearest class mean under one shared,
Ledoit-Wolf-shrunk covariance (the out-of-scope score of :mod:`headstart.evaluation.ood`), fitted
on the data set itself. An item is flagged when its score stands out from the rest by the modified
z-score of Iglewicz and Hoaglin (|0.6745 (s - median) / MAD| > 3.5, on log scores): a rule that does
not flag a fixed share, so clean data can have none.
"""

from __future__ import annotations

import numpy as np

from ..evaluation.ood import OODScorer

__all__ = ["OUTLIER_Z", "outlier_scores", "robust_z"]

OUTLIER_Z = 3.5


def robust_z(scores: np.ndarray) -> np.ndarray:
    """Modified z-scores ``0.6745 (s - median) / MAD``; zeros when the MAD is 0."""
    s = np.asarray(scores, dtype=np.float64)
    med = np.median(s)
    mad = np.median(np.abs(s - med))
    return np.zeros_like(s) if mad == 0 else 0.6745 * (s - med) / mad


def outlier_scores(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(score, z)`` per item: the distance to the nearest class and its robust z-score (on log scale)."""
    x = np.asarray(features, dtype=np.float32)
    scorer = OODScorer("mahalanobis").fit(x, np.asarray(labels, dtype=np.int64), x[: min(len(x), 64)])
    scores = scorer.score(x).astype(np.float64)
    return scores, robust_z(np.log(np.maximum(scores, 1e-12)))
