"""Bootstrap 95% intervals for the numbers that decide something: accuracy, macro-F1 and the gain
of one model over another measured on the same test items (a paired bootstrap).

The test items are resampled with replacement ``n_boot`` times; every statistic is computed from
the same resamples, vectorised as multinomial weights over the items, so 1000 resamples of a
few thousand items take milliseconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SMALL_TEST = 50  # below this many test items an interval is wide enough to say so in words


def _weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)  # [B, N] counts


def _accuracy(w: np.ndarray, correct: np.ndarray) -> np.ndarray:
    return (w @ correct) / w.sum(1)


def _macro_f1(w: np.ndarray, y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    y1, p1 = np.eye(k)[y], np.eye(k)[pred]  # one-hot [N, K]
    tp = w @ (y1 * p1)
    true, predicted = w @ y1, w @ p1
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(true + predicted > 0, 2 * tp / (true + predicted), 0.0)
    present = true > 0  # as in the point estimate, classes absent from a resample are not scored
    return (f1 * present).sum(1) / np.maximum(present.sum(1), 1)


def _interval(samples: np.ndarray) -> list[float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def bootstrap_metrics(y: np.ndarray, proba: np.ndarray, *, reference: np.ndarray | None = None,
                      n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """95% percentile intervals for accuracy and macro-F1 of ``proba`` on labels ``y``; with
    ``reference`` (another model's probabilities on the same items), also for the differences
    ``proba - reference`` (the transfer gain), from the same resamples."""
    y = np.asarray(y, dtype=np.int64)
    n, k = proba.shape
    if n == 0:
        return {}
    w = _weights(n, n_boot, seed)
    pred = proba.argmax(1)
    acc, f1 = _accuracy(w, (pred == y).astype(np.float64)), _macro_f1(w, y, pred, k)
    out: dict[str, Any] = {"n_boot": n_boot, "accuracy": _interval(acc), "macro_f1": _interval(f1)}
    if reference is not None:
        rpred = reference.argmax(1)
        racc, rf1 = _accuracy(w, (rpred == y).astype(np.float64)), _macro_f1(w, y, rpred, k)
        out["gain"] = {"accuracy": _interval(acc - racc), "macro_f1": _interval(f1 - rf1),
                       # share of resamples in which the model is not better: a one-sided bootstrap p-value
                       "p_not_better": float(np.mean(acc - racc <= 0))}
    return out


def interval_words(n: int, interval: list[float]) -> str | None:
    """A plain warning when the test split is too small for its scores to be trusted to a point."""
    if n >= SMALL_TEST:
        return None
    width = 100 * (interval[1] - interval[0])
    return (f"Only {n} test items: the accuracy is known to within about +-{width / 2:.0f} points "
            f"(95% interval {100 * interval[0]:.0f}-{100 * interval[1]:.0f}%). Treat it as a rough guide; "
            "more labelled data (or a larger --test) narrows it.")


def gain_words(gain: float, interval: list[float]) -> str:
    """Whether a measured gain is distinguishable from no gain at all."""
    lo, hi = (100 * v for v in interval)
    if lo > 0:
        return f"95% interval {lo:+.1f} to {hi:+.1f} points: the gain is real on this test split."
    if hi < 0:
        return f"95% interval {lo:+.1f} to {hi:+.1f} points: the loss is real on this test split."
    return (f"95% interval {lo:+.1f} to {hi:+.1f} points, which includes 0: this test split cannot tell the "
            "two apart.")
