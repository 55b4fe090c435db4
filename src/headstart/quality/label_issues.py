"""Likely mislabelled items by confident learning (Northcutt, Jiang & Chuang, 2021), through cleanlab.

Given out-of-fold probabilities, confident learning estimates the joint distribution of given and
true labels from per-class confidence thresholds and prunes the items that distribution says are
off-diagonal. cleanlab implements it and is kept up; this module chooses its settings, scores each
item and names the label the model would give instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .probe import out_of_fold_proba

__all__ = ["FILTERS", "DEFAULT_FILTER", "LabelIssues", "WARN_SHARE", "find_label_issues", "screen_labels"]

# cleanlab's ``filter_by`` options. bench/label_issues.py compares them on MNIST and BBC News with
# injected flips (docs/benchmarks.md); the default is the one with the best mean F1 there.
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")
DEFAULT_FILTER = "both"


@dataclass(frozen=True)
class LabelIssues:
    """``indices`` of flagged items, worst first; per item (all of them) its ``quality`` (cleanlab's
    self-confidence: the probability of the given label, low is suspicious) and ``suggested`` label."""

    indices: np.ndarray
    quality: np.ndarray
    suggested: np.ndarray
    filter_by: str

    def to_dict(self) -> dict[str, Any]:
        return {"filter_by": self.filter_by, "count": int(len(self.indices)), "indices": self.indices.tolist()}


def find_label_issues(labels: np.ndarray, proba: np.ndarray, *, filter_by: str = DEFAULT_FILTER) -> LabelIssues:
    """Flag likely label errors from integer ``labels`` and out-of-fold ``proba`` ``[N, K]``."""
    if filter_by not in FILTERS:
        raise ConfigError(f"`filter_by` must be one of {', '.join(FILTERS)}, got {filter_by!r}.",
                          fix=f"leave it at '{DEFAULT_FILTER}' (the measured default).")
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(y):
        raise DataError(f"proba {p.shape} does not match {len(y)} labels.")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise DataError(f"labels must lie in 0..{p.shape[1] - 1}.")
    from cleanlab.filter import find_label_issues as cl_find
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(y, p, method="self_confidence")
    ranked = cl_find(y, p, filter_by=filter_by, return_indices_ranked_by="self_confidence")
    return LabelIssues(np.asarray(ranked, dtype=np.int64), np.asarray(quality), p.argmax(1), filter_by)


# `fit` warns above this share of flagged training items. On the clean built-in sets (measured in
# docs/benchmarks.md, "Label issues on clean data") confident learning flags well under it, so a share
# this high says more about the labels than about the method's false alarms.
WARN_SHARE = 0.03
# ... and above what clean labels give by chance on a small split: the count must exceed the 95th
# percentile of a binomial at CLEAN_SHARE (twice the clean sets' 0.4-0.5%), e.g. 2 of 65 items is not enough.
CLEAN_SHARE = 0.01
SCREEN_FOLDS = 3  # fewer folds than `check --deep`: a screen during fit, not the full audit
# `check --deep` sweeps C on the first fold; on MNIST and BBC News it chose the smallest every time, so
# the screen fixes it there and saves the sweep's extra fits.
SCREEN_C = 0.01


def screen_labels(features: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int = 0
                  ) -> dict[str, Any] | None:
    """A quick label screen for ``fit``: out-of-fold probe on ``features`` + confident learning.

    Returns ``{"count", "share", "warn", "indices"}`` (``indices``: the 20 worst, into ``labels``), or
    ``None`` when the data are too small to cross-fit (a class with fewer than ``SCREEN_FOLDS`` items).
    """
    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=num_classes)
    if (counts[counts > 0] < SCREEN_FOLDS).any() or (counts > 0).sum() < 2:
        return None
    proba, _ = out_of_fold_proba(features, y, num_classes, folds=SCREEN_FOLDS, seed=seed, Cs=(SCREEN_C,))
    issues = find_label_issues(y, proba)
    from scipy.stats import binom

    count = len(issues.indices)
    share = count / len(y)
    by_chance = int(binom.ppf(0.95, len(y), CLEAN_SHARE))
    return {"count": int(count), "n": int(len(y)), "share": round(float(share), 4),
            "warn": bool(share >= WARN_SHARE and count > by_chance), "indices": issues.indices[:20].tolist()}
