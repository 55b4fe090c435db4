"""95% intervals for the numbers that decide something: accuracy, macro-F1 and the gain of one
model over another measured on the same test items.

Accuracy is a proportion: its interval is Wilson's score interval, which stays honest at 0% and
100% (a percentile bootstrap of 9 out of 9 right collapses to "100-100%"). The accuracy gain is a
difference of paired proportions: Bonett & Price's (2012) adjusted interval, honest when both
models are right on every item. Macro-F1 has no closed form: a percentile bootstrap (the test
items resampled ``n_boot`` times, vectorised as multinomial weights), paired for its gain.
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


Z95 = 1.959964


def wilson(correct: float, n: int, z: float = Z95) -> list[float]:
    """Wilson's score interval for ``correct`` successes out of ``n``."""
    if n == 0:
        return [0.0, 1.0]
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def paired_difference(a_right: np.ndarray, b_right: np.ndarray, z: float = Z95) -> list[float]:
    """Bonett & Price's adjusted interval for accuracy(a) - accuracy(b) on the same items."""
    n = len(a_right)
    only_a = float(np.sum(a_right & ~b_right))
    only_b = float(np.sum(~a_right & b_right))
    p12, p21 = (only_a + 1) / (n + 2), (only_b + 1) / (n + 2)
    diff = (only_a - only_b) / max(n, 1)  # centred on the observed difference, widened by the +1s
    se = np.sqrt(max(p12 + p21 - (p12 - p21) ** 2, 0.0) / (n + 2))
    return [float(max(-1.0, diff - z * se)), float(min(1.0, diff + z * se))]


def _interval(samples: np.ndarray) -> list[float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def bootstrap_metrics(y: np.ndarray, proba: np.ndarray, *, reference: np.ndarray | None = None,
                      n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """95% intervals for accuracy (Wilson) and macro-F1 (bootstrap) of ``proba`` on labels ``y``;
    with ``reference`` (another model's probabilities on the same items), also for the differences
    ``proba - reference`` (the transfer gain: Bonett-Price for accuracy, paired bootstrap for F1)."""
    y = np.asarray(y, dtype=np.int64)
    n, k = proba.shape
    if n == 0:
        return {}
    w = _weights(n, n_boot, seed)
    pred = proba.argmax(1)
    right = pred == y
    acc, f1 = _accuracy(w, right.astype(np.float64)), _macro_f1(w, y, pred, k)
    out: dict[str, Any] = {"n_boot": n_boot, "accuracy": wilson(float(right.sum()), n), "macro_f1": _interval(f1)}
    if reference is not None:
        rpred = reference.argmax(1)
        rright = rpred == y
        racc, rf1 = _accuracy(w, rright.astype(np.float64)), _macro_f1(w, y, rpred, k)
        out["gain"] = {"accuracy": paired_difference(right, rright), "macro_f1": _interval(f1 - rf1),
                       # share of resamples in which the model is not better: a one-sided bootstrap p-value
                       "p_not_better": float(np.mean(acc - racc <= 0))}
    return out


def interval_words(n: int, interval: list[float]) -> str | None:
    """A plain warning when the test split is too small for its scores to be trusted to a point."""
    if n >= SMALL_TEST:
        return None
    width = 100 * (interval[1] - interval[0])
    return (f"Only {n} test items: the accuracy is known only to within about +-{width / 2:.0f} points "
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
