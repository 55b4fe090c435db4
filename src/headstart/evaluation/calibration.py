"""Temperature scaling (Guo et al., 2017): one scalar T that divides the logits, fitted on the
validation split. It never changes which class wins, so accuracy is untouched; it only makes the
confidences honest.

How T is fitted depends on the size of the validation split. With ``NLL_MIN_ITEMS`` items or more,
by minimising the negative log-likelihood (Guo et al.). With fewer, the likelihood is ruled by the
one or two items the model gets wrong, so T is set instead to make the mean confidence equal the
validation accuracy, estimated with Laplace's rule of succession ((right + 1) / (n + 2)). On the
calibration benchmark (docs/benchmarks.md) that halved the test ECE of fine-tuned models whose
validation split held 10 to 80 items.

Everything works from log-probabilities, which every head yields: softmax(log p / T) equals
softmax(z / T) for logits z, so a trained backbone and a cached-feature head are calibrated alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

LOG_T_BOUNDS = (-4.0, 4.0)  # T from 0.018 to 55: beyond that the validation split is too small to say
MIN_ITEMS = 8  # fewer validation items say too little about confidence to move it
NLL_MIN_ITEMS = 100  # from here on the likelihood fit is used; below, confidence matching
LOG_T_PRIOR_SD = 1.0  # prior belief: T within a factor of about 7 of 1 (two sd); label smoothing alone can ask for 1/3


def _nll(logp: np.ndarray, y: np.ndarray, temperature: float, smoothing: float = 0.0) -> float:
    """Cross-entropy of softmax(logp / T) against targets with ``smoothing`` spread over the other classes."""
    z = logp / temperature
    z = z - z.max(1, keepdims=True)
    logq = z - np.log(np.exp(z).sum(1, keepdims=True))
    k = logp.shape[1]
    own = logq[np.arange(len(y)), y]
    others = (logq.sum(1) - own) / max(k - 1, 1)
    return float(np.mean(-(1 - smoothing) * own - smoothing * others))


def log_proba(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(proba, 1e-12, 1.0))


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The temperature for validation probabilities ``proba`` and labels ``y``: NLL-optimal from
    ``NLL_MIN_ITEMS`` items on, confidence-matched below (``method`` says which; see the module).

    ``kept`` is True only when scaling lowers the validation NLL (against targets smoothed by
    1 / (n + 2), see below); otherwise T stays 1.
    """
    from scipy.optimize import minimize_scalar

    from ..errors import DataError

    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or len(proba) != len(y):
        raise DataError(f"Calibration needs probabilities [items, classes] and one label per item; got {proba.shape} "
                        f"and {len(y)} labels.")
    if len(y) and (y.min() < 0 or y.max() >= proba.shape[1]):
        raise DataError(f"Calibration labels must lie in 0..{proba.shape[1] - 1}, got {y.min()}..{y.max()}.")
    if not np.isfinite(proba).all():
        raise DataError("Calibration got probabilities that are NaN or infinite.",
                        fix="check the model: its validation predictions are not numbers.")
    logp = log_proba(proba)
    # A validation split that the model gets entirely right pushes the NLL-optimal T towards 0 (every
    # confidence 1.0). Laplace's rule of succession keeps it finite: with n items the error rate is
    # taken as at least 1 / (n + 2), spread over the other classes.
    smoothing = 1.0 / (len(y) + 2)
    before = _nll(logp, y, 1.0, smoothing)
    raw_before = _nll(logp, y, 1.0) if len(y) else float("nan")
    if len(y) < MIN_ITEMS or len(np.unique(y)) < 2:
        return {"temperature": 1.0, "kept": False, "val_nll_before": raw_before, "val_nll_after": raw_before,
                "reason": f"The validation split has {len(y)} item(s), too few to fit a temperature (at least "
                          f"{MIN_ITEMS}), so the confidences are the model's own, uncalibrated."}
    # A Gaussian prior on log T (sd LOG_T_PRIOR_SD) weighs as one more term of the summed NLL: with a
    # few validation items T stays near 1 unless they clearly ask otherwise; with hundreds the data rule.
    n = len(y)
    if n < NLL_MIN_ITEMS:
        t, method = _match_confidence(logp, y), "confidence matching"
    else:
        def objective(log_t: float) -> float:
            return _nll(logp, y, float(np.exp(log_t)), smoothing) + log_t ** 2 / (2 * LOG_T_PRIOR_SD ** 2 * n)

        res = minimize_scalar(objective, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
        t, method = float(np.exp(res.x)), "log-likelihood"
    after = _nll(logp, y, t, smoothing)
    raw_after = _nll(logp, y, t)
    # Kept only if it lowers the validation log-loss against the real labels, and against the smoothed
    # targets (which stop a split the model gets all right from asking for certainty).
    kept = after < before - 1e-6 and raw_after < raw_before - 1e-6
    return {"temperature": t if kept else 1.0, "kept": kept, "fitted_temperature": t, "method": method,
            "val_nll_before": raw_before, "val_nll_after": raw_after if kept else raw_before}


def _mean_confidence(logp: np.ndarray, temperature: float) -> float:
    return float(_scaled(logp, temperature).max(1).mean())


def _match_confidence(logp: np.ndarray, y: np.ndarray) -> float:
    """The T at which the mean top-class confidence equals the Laplace-smoothed validation accuracy.

    The mean confidence falls as T grows, so the root is bracketed by the bounds, or T is the bound
    nearest to it (a validation split no temperature within the bounds can match)."""
    from scipy.optimize import brentq

    right = int((logp.argmax(1) == y).sum())
    target = (right + 1) / (len(y) + 2)
    lo, hi = LOG_T_BOUNDS

    def gap(log_t: float) -> float:
        return _mean_confidence(logp, float(np.exp(log_t))) - target

    if gap(lo) <= 0:  # even the sharpest T is not confident enough
        return float(np.exp(lo))
    if gap(hi) >= 0:  # even the softest T is too confident
        return float(np.exp(hi))
    return float(np.exp(brentq(gap, lo, hi, xtol=1e-4)))


def _scaled(logp: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logp / T) from log-probabilities."""
    z = logp / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    return _scaled(log_proba(proba), temperature)


def reliability_bins(proba: np.ndarray, y: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Per equal-width confidence bin: mean confidence, accuracy and count (a reliability diagram)."""
    conf = proba.max(1)
    correct = proba.argmax(1) == np.asarray(y)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        if m.any():
            out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "confidence": float(conf[m].mean()),
                        "accuracy": float(correct[m].mean()), "n": int(m.sum())})
    return out
