"""Multinomial logistic regression: argmin_W,b  sum_i CE(x_i W^T + b, y_i) + ||W||^2 / (2C).

The objective is scikit-learn's ``LogisticRegression(C=C)`` (lbfgs, intercept unpenalised),
multinomial for two classes as well (scikit-learn fits one weight vector there, which is the same
model at ``2C``). It is minimised divided by ``n`` (the same minimiser, better scaled), with the
tolerances scikit-learn uses, so ``tol`` means what it means there.

Two solvers, one objective:

- CPU: SciPy's L-BFGS-B on a NumPy function that returns the loss and its gradient together, the
  way scikit-learn runs lbfgs. One evaluation is two BLAS products and a softmax; the optimiser's
  own bookkeeping is compiled. ``torch.optim.LBFGS`` instead spends its time in hundreds of tiny
  Python-dispatched vector operations per step, each slow when the cores are shared.
- GPU: ``torch.optim.LBFGS`` on the device, where the data already lives and the products are cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["fit_logistic", "fit_logistic_numpy", "fit_logistic_torch", "solver_threads"]

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


def _loss_grad(params: np.ndarray, x: np.ndarray, onehot: np.ndarray, alpha: float) -> tuple[float, np.ndarray]:
    """Mean cross-entropy + alpha/2 ||W||^2 and its gradient; params = [W | b] flattened (k, d + 1)."""
    n, d = x.shape
    k = onehot.shape[1]
    wb = params.reshape(k, d + 1)
    w, b = wb[:, :d], wb[:, d]
    z = x @ w.T
    z += b
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    s = e.sum(1, keepdims=True)
    # sum_i (log sum_c exp z_ic - z_i,y_i), with z shifted by its row maximum for stability
    loss = (float(np.log(s).sum()) - float((z * onehot).sum())) / n + 0.5 * alpha * float((w * w).sum())
    e /= s
    e -= onehot  # dLoss/dz * n
    grad = np.empty_like(wb)
    np.matmul(e.T, x, out=grad[:, :d])
    grad[:, :d] /= n
    grad[:, :d] += alpha * w
    grad[:, d] = e.sum(0) / n
    return loss, grad.ravel()


def fit_logistic_numpy(x: np.ndarray, y: np.ndarray, num_classes: int, C: float, *, max_iter: int = 500,
                       tol: float = TOL, init: tuple[np.ndarray, np.ndarray] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, int]:
    """L-BFGS-B on the CPU; returns (W [k, d], b [k], iterations), float64."""
    from scipy.optimize import minimize

    x = np.ascontiguousarray(x, dtype=np.float64)
    n, d = x.shape
    onehot = np.zeros((n, num_classes))
    onehot[np.arange(n), np.asarray(y, dtype=np.int64)] = 1.0
    p0 = np.zeros((num_classes, d + 1))
    if init is not None:
        p0[:, :d], p0[:, d] = init[0], init[1]
    res = minimize(_loss_grad, p0.ravel(), args=(x, onehot, 1.0 / (C * n)), method="L-BFGS-B", jac=True,
                   options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps})
    wb = res.x.reshape(num_classes, d + 1)
    return wb[:, :d].copy(), wb[:, d].copy(), int(res.nit)


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
    """(W, b) as float64 tensors on ``device``: SciPy L-BFGS on the CPU, torch L-BFGS elsewhere."""
    dev = device or torch.device("cpu")
    if dev.type != "cpu":
        return fit_logistic_torch(x, y, num_classes, C, max_iter=max_iter, tol=tol, init=init, device=dev)
    np_init = None if init is None else (init[0].detach().cpu().double().numpy(), init[1].detach().cpu().double().numpy())
    x = np.asarray(x)
    with solver_threads(x.shape[0], x.shape[1], num_classes):
        w, b, _ = fit_logistic_numpy(x, np.asarray(y), num_classes, C, max_iter=max_iter, tol=tol, init=np_init)
    return torch.from_numpy(w), torch.from_numpy(b)
