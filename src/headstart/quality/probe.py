"""Out-of-fold class probabilities from a K-fold linear probe on frozen features.

Confident learning needs, for every item, probabilities from a model that never saw that item's
label; K-fold cross-fitting gives them at the cost of K probe fits. The probe is the one
:mod:`headstart.train.linear_probe` uses (multinomial logistic regression on features standardised
with the floored standardiser), with ``C`` chosen once, on the first fold, by held-out log-loss
(calibrated probabilities matter more here than accuracy), and each fold warm-started from the
previous fold's solution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import DataError
from ..train.linear_probe import standardiser
from ..train.logistic import fit_logistic

__all__ = ["OOF_CS", "choose_c", "fit_probe", "fold_ids", "out_of_fold_proba", "principal_axes", "probe_inputs"]

OOF_CS = (0.01, 0.1, 1.0)
OOF_TOL = 1e-4  # loose: fold probabilities rank items; the last digits of the optimum change no ranking
MAX_DIMS = 256


def fold_ids(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """A fold number per item, stratified: each class is dealt round-robin over the folds after a
    seeded shuffle, so every fold holds about ``1 / folds`` of every class."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        out[idx] = (np.arange(len(idx)) + offset) % folds
        offset += len(idx)  # the next class starts where this one stopped, so fold sizes stay even
    return out


def principal_axes(x: np.ndarray, dims: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(mean, std, axes)`` mapping features to the probe's inputs: floored standardisation, then,
    when the features are wider than ``dims`` (or than the number of items), their top principal axes
    (``axes`` is None when nothing is cut; ``dims=None``: never). The probe's cost grows with the width
    and its out-of-fold rankings barely move (docs/concepts/data-quality.md); with fewer items than
    features, the items' own span loses nothing a linear model could use. The axes come from the
    ``d x d`` covariance's eigenvectors, or from an SVD of the items when they are fewer, in float32."""
    from threadpoolctl import threadpool_limits

    x = np.asarray(x, dtype=np.float64)
    mean, std = standardiser(x)
    n, d = x.shape
    k = min(dims, d, n) if dims else d
    if k >= d:
        return mean, std, None
    z = ((x - mean) / std).astype(np.float32)  # the probe's own scaling first, so the axes kept are the ones it weighs
    with threadpool_limits(1, user_api="blas"):  # on shared cores, BLAS threads spin against each other
        if n < d:
            axes = np.linalg.svd(z, full_matrices=False)[2][:k].T
        else:
            axes = np.linalg.eigh(z.T @ z)[1][:, ::-1][:, :k]
    return mean, std, np.ascontiguousarray(axes)


def apply_axes(x: np.ndarray, mean: np.ndarray, std: np.ndarray, axes: np.ndarray | None) -> np.ndarray:
    z = (np.asarray(x, dtype=np.float64) - mean) / std
    return z if axes is None else (z.astype(np.float32) @ axes).astype(np.float64)


def probe_inputs(x: np.ndarray, dims: int | None = MAX_DIMS) -> np.ndarray:
    """What the probe reads: standardised features, on their top ``dims`` principal axes when wider."""
    return apply_axes(x, *principal_axes(x, dims))


def fit_probe(x: np.ndarray, y: np.ndarray, num_classes: int, C: float, *, dims: int | None = MAX_DIMS,
              tol: float = OOF_TOL) -> Callable[[np.ndarray], np.ndarray]:
    """The same probe fitted on all of ``x``; returns a function features -> probabilities."""
    mean, std, axes = principal_axes(x, dims)
    w, b = _fit(apply_axes(x, mean, std, axes), np.asarray(y, dtype=np.int64), num_classes, C, tol, None)
    return lambda new: _softmax(apply_axes(new, mean, std, axes) @ w.T + b)


def out_of_fold_proba(features: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = 5, seed: int = 0,
                      Cs: tuple[float, ...] = OOF_CS, dims: int | None = MAX_DIMS, tol: float = OOF_TOL,
                      prepared: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """``[N, num_classes]`` probabilities, each row from the probe fitted on the other folds.

    ``dims``: project wider features onto that many principal axes first (``None``: never);
    ``prepared``: ``features`` are already :func:`probe_inputs` (computed once for several checks).
    Returns the probabilities and ``{"C", "folds", "dims", "sweep"}``.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(y):
        raise DataError(f"features {x.shape} and labels ({len(y)}) do not match.")
    counts = np.bincount(y, minlength=num_classes)
    present = counts[counts > 0]
    if len(present) < 2:
        raise DataError("Label issues need at least two classes.", fix="check the label column.")
    folds = int(min(folds, present.min())) if present.min() >= 2 else 2
    if present.min() < 2:
        raise DataError(f"Every class needs at least 2 items for cross-fitting; the smallest has {present.min()}.",
                        fix="add items to that class or remove it.")
    if not np.isfinite(x).all():
        raise DataError("Some features are NaN or infinite.", fix="check the backbone and the inputs.")
    # Standardised (and projected) once on all items: no labels are used, so no fold's labels leak.
    z = x if prepared else probe_inputs(x, dims)
    fold = fold_ids(y, folds, seed)
    proba = np.zeros((len(y), num_classes))
    chosen, sweep, init = _sweep(z, y, fold == 0, num_classes, Cs, tol)
    for k in range(folds):
        tr, te = fold != k, fold == k
        if k:  # fold 0's fit at the chosen C came with the sweep
            init = _fit(z[tr], y[tr], num_classes, chosen, tol, init)
        w, b = init
        proba[te] = _softmax(z[te] @ w.T + b)
    return proba, {"C": chosen, "folds": folds, "dims": int(z.shape[1]), "sweep": sweep}


def _sweep(z: np.ndarray, y: np.ndarray, held: np.ndarray, k: int, Cs: tuple[float, ...], tol: float
           ) -> tuple[float, list[dict[str, float]], tuple[np.ndarray, np.ndarray]]:
    """``C`` by held-out log-loss on the items ``held`` (fitted on the others), warm-started along the
    increasing grid and stopped once the loss rises; returns the C, the sweep and its fit."""
    sweep: list[dict[str, float]] = []
    fits = {}
    init = None
    for C in sorted(Cs):
        init = fits[C] = _fit(z[~held], y[~held], k, C, tol, init)
        p = _softmax(z[held] @ init[0].T + init[1])
        sweep.append({"C": C, "log_loss": float(-np.log(np.clip(p[np.arange(len(p)), y[held]], 1e-12, 1)).mean())})
        if len(sweep) > 1 and sweep[-1]["log_loss"] > sweep[-2]["log_loss"]:
            break  # past the best: weaker regularisation only costs more iterations from here
    chosen = min(sweep, key=lambda r: r["log_loss"])["C"]
    return chosen, sweep, fits[chosen]


def choose_c(x: np.ndarray, y: np.ndarray, num_classes: int, *, Cs: tuple[float, ...] = OOF_CS, seed: int = 0,
             tol: float = OOF_TOL, prepared: bool = False) -> float:
    """The ``C`` the out-of-fold probe would use on these labels (one held-out fifth, stratified)."""
    z = x if prepared else probe_inputs(np.asarray(x, dtype=np.float64))
    y = np.asarray(y, dtype=np.int64)
    return _sweep(z, y, fold_ids(y, 5, seed) == 0, num_classes, Cs, tol)[0]


def _fit(x: np.ndarray, y: np.ndarray, k: int, C: float, tol: float, init: tuple[np.ndarray, np.ndarray] | None
         ) -> tuple[np.ndarray, np.ndarray]:
    import torch

    start = None if init is None else (torch.from_numpy(init[0]), torch.from_numpy(init[1]))
    w, b = fit_logistic(x, y, k, C, tol=tol, init=start)
    return w.numpy(), b.numpy()


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)
