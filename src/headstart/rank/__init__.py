"""Transferability rankers: a registry of pure scores, and input checks shared by all of them."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from ..registry import Registry
from . import scores


@dataclass(frozen=True)
class Ranker:
    name: str
    fn: Callable[..., float]
    needs_source_probs: bool
    description: str
    slow: bool = False


RANKERS: Registry[Ranker] = Registry("ranker", ConfigError)
for _r in (
    Ranker("logme", scores.logme, False, "LogME evidence (You et al. 2021)"),
    Ranker("hscore", scores.hscore, False, "H-score (Bao et al. 2019)"),
    Ranker("hscore-shrink", scores.hscore_shrinkage, False, "H-score with Ledoit-Wolf shrinkage (Ibrahim et al. 2022)"),
    Ranker("nce", scores.nce, True, "negative conditional entropy (Tran et al. 2019)"),
    Ranker("leep", scores.leep, True, "LEEP (Nguyen et al. 2020)"),
    Ranker("knn", scores.knn_accuracy, False, "leave-one-out 5-NN accuracy"),
    Ranker("probe-cv", scores.probe_cv_accuracy, False, "3-fold linear-probe accuracy (slow reference)", slow=True),
):
    RANKERS.register(_r.name, _r)


class RankWarning(UserWarning):
    """Inputs a score can take but that make it less meaningful (e.g. constant features)."""


def check_inputs(features: np.ndarray, labels: np.ndarray, where: str = "features") -> None:
    """Clear errors for inputs no score can use; a warning for ones that weaken every score."""
    f = np.asarray(features)
    labels = np.asarray(labels)
    if f.ndim != 2 or len(f) != len(labels):
        raise DataError(f"{where}: expected features [N, D] and N labels, got {f.shape} and {labels.shape}.")
    bad = ~np.isfinite(f)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        raise DataError(f"{where}: {bad.sum()} NaN or infinite value(s) in {len(rows)} row(s), first rows "
                        f"{rows[:5].tolist()}.", fix="check the backbone's inputs (empty images or texts?).")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"{where}: only one class ({classes[0] if len(classes) else 'none'}); ranking needs two or more.")
    if len(labels) <= len(classes):
        raise DataError(f"{where}: {len(labels)} examples for {len(classes)} classes; scores need more examples "
                        "than classes.", fix="label at least two examples per class.")
    constant = np.ptp(f, axis=0) == 0
    if constant.all():
        raise DataError(f"{where}: every feature is constant, so nothing can be ranked.",
                        fix="check that the backbone receives real inputs.")
    if constant.mean() > 0.5:
        warnings.warn(f"{where}: {constant.sum()} of {f.shape[1]} features are constant.", RankWarning, stacklevel=2)


def score(name: str, features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None = None) -> float:
    ranker = RANKERS.get(name)
    check_inputs(features, labels)
    if ranker.needs_source_probs:
        if source_probs is None:
            raise ConfigError(f"The score '{name}' needs the backbone's pre-training head (source probabilities).",
                              fix="use a backbone that kept its head (efficientnet-lite*), or another score.")
        return ranker.fn(source_probs, labels)
    return ranker.fn(features, labels)


__all__ = ["RANKERS", "Ranker", "RankWarning", "check_inputs", "score"]
