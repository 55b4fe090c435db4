"""Multinomial logistic regression: argmin_W,b  sum_i CE(x_i W^T + b, y_i) + ||W||^2 / (2C).

The objective is scikit-learn's ``LogisticRegression(C=C)`` (lbfgs, intercept unpenalised),
multinomial for two classes as well: scikit-learn fits one weight vector ``v`` there, and the
two-row model ``[-v/2, v/2]`` at ``C`` is exactly its solution at ``2C`` (the penalty of the split
rows is half that of ``v``). ``tol`` means what it means in scikit-learn.

Two solvers, one objective:

- CPU: scikit-learn's ``LogisticRegression`` (lbfgs), the maintained implementation; one BLAS
  thread for small problems (see :func:`solver_threads`).
- GPU: ``torch.optim.LBFGS`` on the device, where the data already lives and the products are cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["fit_logistic", "fit_logistic_sklearn", "fit_logistic_torch", "solver_threads"]

TOL = 1e-6  # the largest gradient entry of the scaled objective; scikit-learn's 1e-4 stops short at large C (2.5 points on MNIST at C = 1)


def solver_threads(n: int, d: int, k: int) -> Any:
    """A context in which the CPU solver's BLAS runs one thread for small problems.

    One loss evaluation of a probe on a few thousand examples is two products of a few million
    multiply-adds, and an L-BFGS step is a few dozen vector operations; BLAS threads cost more to
    wake and synchronise than they save, and on shared cores (a laptop, a CI runner) threads that
    spin while waiting for each other make every call tens of times slower. Large problems keep
    the libraries' defaults. SciPy's L-BFGS-B links its own OpenBLAS, separate from NumPy's, so it is
    loaded before the limit is set: a library loaded later would escape it.
    """
    import scipy.optimize  # noqa: F401  (loads SciPy's BLAS; see above)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1 if n * d * k < 50_000_000 else None, user_api="blas")


# A class absent from the training labels gets zero weights and this bias: its probability is
# ~e^-30 of the others', the limit the objective tends to (its unpenalised bias runs to -inf).
_ABSENT_BIAS = -30.0


def fit_logistic_sklearn(x: np.ndarray, y: np.ndarray, num_classes: int, C: float, *, max_iter: int = 500,
                         tol: float = TOL, init: tuple[np.ndarray, np.ndarray] | None = None
                         ) -> tuple[np.ndarray, np.ndarray, int]:
    """scikit-learn's lbfgs on the CPU; returns (W [num_classes, d], b [num_classes], iterations), float64.

    ``init`` = (W, b) warm-starts the solver (scikit-learn's ``warm_start``). Classes missing from
    ``y`` keep zero weights and a very negative bias (see ``_ABSENT_BIAS``).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError(f"logistic regression needs at least two classes in the labels, got {present.tolist()}")
    binary = len(present) == 2
    model = LogisticRegression(C=2 * C if binary else C, max_iter=max_iter, tol=tol, warm_start=init is not None)
    if init is not None:
        w0, b0 = np.asarray(init[0], dtype=np.float64)[present], np.asarray(init[1], dtype=np.float64)[present]
        # scikit-learn reads the starting point from the fitted attributes when warm_start is set
        model.coef_ = (w0[1:] - w0[:1]) if binary else w0.copy()
        model.intercept_ = (b0[1:] - b0[:1]) if binary else b0.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is the user's cap; reported as iterations
        model.fit(x, y)
    coef, intercept = model.coef_, model.intercept_
    if binary:
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    w = np.zeros((num_classes, x.shape[1]))
    b = np.full(num_classes, _ABSENT_BIAS)
    w[present], b[present] = coef, intercept
    return w, b, int(np.max(model.n_iter_))


def fit_logistic_torch(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, num_classes: int, C: float, *,
                       max_iter: int = 500, tol: float = TOL,
                       init: tuple[torch.Tensor, torch.Tensor] | None = None,
                       device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.optim.LBFGS`` (strong Wolfe line search) on ``device``; returns float64 (W, b) there."""
    dev = device or torch.device("cpu")
    xt = torch.as_tensor(x, dtype=torch.float64, device=dev)
    yt = torch.as_tensor(y, dtype=torch.long, device=dev)
    n, d = xt.shape
    w = torch.zeros(num_classes, d, dtype=torch.float64, device=dev) if init is None else \
        init[0].to(dev, torch.float64).clone()
    b = torch.zeros(num_classes, dtype=torch.float64, device=dev) if init is None else \
        init[1].to(dev, torch.float64).clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w.T + b, yt, reduction="sum") / n + (w * w).sum() / (2 * C * n)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, C: float, *, max_iter: int = 500, tol: float = TOL,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None,
                 device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) as float64 tensors on ``device``: scikit-learn on the CPU, torch L-BFGS elsewhere."""
    dev = device or torch.device("cpu")
    if dev.type != "cpu":
        return fit_logistic_torch(x, y, num_classes, C, max_iter=max_iter, tol=tol, init=init, device=dev)
    np_init = None if init is None else (init[0].detach().cpu().double().numpy(), init[1].detach().cpu().double().numpy())
    x = np.asarray(x)
    with solver_threads(x.shape[0], x.shape[1], num_classes):
        w, b, _ = fit_logistic_sklearn(x, np.asarray(y), num_classes, C, max_iter=max_iter, tol=tol, init=np_init)
    return torch.from_numpy(w), torch.from_numpy(b)
