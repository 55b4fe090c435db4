"""Linear probe on cached features: multinomial logistic regression, L2 strength chosen on val.

This is the CLIP / open_clip linear-probe protocol: sweep the inverse regularisation ``C`` on the
validation split, then refit on train + val with the chosen ``C``. The objective is scikit-learn's
``LogisticRegression(C=C)`` (sum of cross-entropies + ||W||^2 / (2C), intercept unpenalised) on
standardised features, solved by L-BFGS with its tolerance (:mod:`headstart.train.logistic`:
scikit-learn itself on the CPU, torch on a GPU). Each fit of the sweep starts from the previous ``C``'s solution, and the
refit from the chosen one. The standardisation is folded into the weights at the end: the head is a
plain ``Linear`` on raw features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .logistic import TOL, fit_logistic, fit_logistic_sklearn, solver_threads
from ..heads import LinearHead, MLPHead
from ..options import Config, Constraint, Each, Interval, OneOf

__all__ = ["DEFAULT_CS", "LinearProbeConfig", "edge_warning", "fit_logistic", "linear_probe", "standardiser"]

DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 4, 17))


@dataclass(frozen=True)
class LinearProbeConfig(Config):
    """``head="linear"`` (default) or ``"mlp"``; ``Cs`` is the inverse-L2 grid searched on val."""

    head: Literal["linear", "mlp"] = "linear"
    Cs: tuple[float, ...] = DEFAULT_CS
    max_iter: int = 500
    tol: float = TOL  # L-BFGS stops when no gradient entry of the (per-example) objective exceeds it
    refit_on_val: bool = True
    mlp_hidden: int = 512
    mlp_dropout: float = 0.2
    mlp_epochs: int = 200
    type: str = field(default="linear-probe", init=False)

    constraints: ClassVar[dict[str, Constraint]] = {
        "head": OneOf(("linear", "mlp")), "Cs": Each(Interval(0, low_open=True), non_empty=True),
        "max_iter": Interval(1), "tol": Interval(0, low_open=True), "mlp_hidden": Interval(1),
        "mlp_dropout": Interval(0, 1, high_open=True), "mlp_epochs": Interval(1)}
    notes: ClassVar[dict[str, str]] = {
        "Cs": "inverse L2 strengths tried on the validation split",
        "tol": "lbfgs stops when no gradient entry of the per-example objective exceeds it",
        "refit_on_val": "refit on train + val with the chosen C"}


def standardiser(x: np.ndarray, floor: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale; the scale is at least ``floor`` x the median feature std.

    Plain standardisation divides nearly dead features (std ~1e-3, common after ReLU6 pooling) by
    their tiny std, so the folded head gives them weights in the thousands and any small change in
    them (int8 export, a new camera) swings the prediction. The floor keeps such features at the
    scale of the others; constant features are left unscaled.
    """
    mean = x.mean(0)
    std = x.std(0)
    live = std[std > 1e-12]
    lowest = floor * float(np.median(live)) if live.size else 1.0
    std = np.where(std > 1e-12, np.maximum(std, lowest), 1.0)
    return mean, std


def _scores(logits: torch.Tensor, y: np.ndarray) -> tuple[float, float]:
    yt = torch.as_tensor(y, device=logits.device)
    acc = float((logits.argmax(1) == yt).double().mean())
    return acc, float(F.cross_entropy(logits, yt))


def edge_warning(C: float, Cs: tuple[float, ...] | list[float]) -> str | None:
    """A sentence for the user when the chosen ``C`` is the largest or smallest of a grid of several."""
    if len(set(Cs)) < 2:
        return None  # one value: the user fixed C, nothing was searched
    if C >= max(Cs):
        return (f"C={C:.6g} is the largest value tried; the best may lie beyond it "
                f"(weaker regularisation): add larger values to `Cs`.")
    if C <= min(Cs):
        return (f"C={C:.6g} is the smallest value tried; the best may lie beyond it "
                f"(stronger regularisation): add smaller values to `Cs`.")
    return None


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                 num_classes: int, config: LinearProbeConfig = LinearProbeConfig(), *,
                 device: torch.device | None = None, seed: int = 0) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fit the head; returns (head, info) where info records the sweep, the chosen ``C`` and any
    warning for the user (``info["warnings"]``, also in ``info["reasons"]``)."""
    if config.head == "mlp":
        return _mlp_probe(train_x, train_y, val_x, val_y, num_classes, config, device=device, seed=seed)
    dev = device or torch.device("cpu")
    with solver_threads(len(train_x) + len(val_x), train_x.shape[1], num_classes):
        if dev.type == "cpu":
            w, b, mean, std, C, sweep, best_acc = _fit_cpu(train_x, train_y, val_x, val_y, num_classes, config)
        else:
            w, b, mean, std, C, sweep, best_acc = _fit_device(train_x, train_y, val_x, val_y, num_classes, config, dev)
    head = LinearHead(train_x.shape[1], num_classes)
    w_raw = w / std  # fold (x - mean) / std into the weights
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(w_raw, dtype=torch.float32))
        head.bias.copy_(torch.as_tensor(b - w_raw @ mean, dtype=torch.float32))
    info: dict[str, Any] = {"C": C, "val_accuracy": best_acc, "sweep": sweep, "refit_on_val": config.refit_on_val}
    warning = edge_warning(C, config.Cs)
    if warning:
        info["warnings"] = [warning]
        info["reasons"] = [warning]
    return head, info


def _choose(sweep: list[dict[str, float]]) -> dict[str, float]:
    """Best validation accuracy, ties broken by validation loss, then by the smaller C."""
    best = sweep[0]
    for row in sweep[1:]:
        if (row["val_accuracy"], -row["val_loss"]) > (best["val_accuracy"], -best["val_loss"]):
            best = row
    return best


def _rebase(w: np.ndarray, b: np.ndarray, old: tuple[np.ndarray, np.ndarray], new: tuple[np.ndarray, np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray]:
    """The same linear function on features standardised by ``new`` instead of ``old`` (mean, std)."""
    w_raw = w / old[1]
    b_raw = b - w_raw @ old[0]
    return w_raw * new[1], b_raw + w_raw @ new[0]


def _fit_cpu(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, num_classes: int,
             config: LinearProbeConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, list, float]:
    """The sweep and the refit with scikit-learn, float64 throughout."""
    train_x = np.asarray(train_x, dtype=np.float64)
    val_x = np.asarray(val_x, dtype=np.float64)
    mean, std = standardiser(train_x)
    ztr, zva = (train_x - mean) / std, (val_x - mean) / std
    sweep, fits = [], {}
    init = None
    for C in sorted(config.Cs):  # increasing C, warm-started: each fit starts near its solution
        w, b, nit = fit_logistic_sklearn(ztr, train_y, num_classes, C, max_iter=config.max_iter, tol=config.tol,
                                       init=init)
        init = fits[C] = (w, b)
        acc, loss = _scores(torch.from_numpy(zva @ w.T + b), val_y) if len(val_y) else (float("nan"), float("nan"))
        sweep.append({"C": C, "val_accuracy": acc, "val_loss": loss, "iterations": nit})
    best = _choose(sweep) if len(val_y) else sweep[0]
    C = best["C"]
    w, b = fits[C]
    if config.refit_on_val and len(val_y):
        x_all = np.concatenate([train_x, val_x])
        y_all = np.concatenate([train_y, val_y])
        new = standardiser(x_all)
        w, b = _rebase(w, b, (mean, std), new)
        mean, std = new
        w, b, _ = fit_logistic_sklearn((x_all - mean) / std, y_all, num_classes, C, max_iter=config.max_iter,
                                     tol=config.tol, init=(w, b))
    return w, b, mean, std, C, sweep, best["val_accuracy"]


def _fit_device(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, num_classes: int,
                config: LinearProbeConfig, dev: torch.device
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, list, float]:
    """The same sweep and refit with torch L-BFGS on ``dev`` (a GPU; runs on the CPU too)."""
    from ..train.logistic import fit_logistic_torch

    mean, std = standardiser(np.asarray(train_x, dtype=np.float64))
    ztr = torch.as_tensor((train_x - mean) / std, dtype=torch.float64, device=dev)
    zva = torch.as_tensor((val_x - mean) / std, dtype=torch.float64, device=dev)
    ytr = torch.as_tensor(train_y, dtype=torch.long, device=dev)
    sweep, fits = [], {}
    init = None
    for C in sorted(config.Cs):
        w, b = fit_logistic_torch(ztr, ytr, num_classes, C, max_iter=config.max_iter, tol=config.tol, init=init,
                                  device=dev)
        init = fits[C] = (w, b)
        acc, loss = _scores(zva @ w.T + b, val_y) if len(val_y) else (float("nan"), float("nan"))
        sweep.append({"C": C, "val_accuracy": acc, "val_loss": loss})
    best = _choose(sweep) if len(val_y) else sweep[0]
    C = best["C"]
    w_np, b_np = fits[C][0].cpu().numpy(), fits[C][1].cpu().numpy()
    if config.refit_on_val and len(val_y):
        x_all = np.concatenate([train_x, val_x]).astype(np.float64)
        y_all = np.concatenate([train_y, val_y])
        new = standardiser(x_all)
        w_np, b_np = _rebase(w_np, b_np, (mean, std), new)
        mean, std = new
        w, b = fit_logistic_torch((x_all - mean) / std, y_all, num_classes, C, max_iter=config.max_iter,
                                  tol=config.tol, init=(torch.from_numpy(w_np), torch.from_numpy(b_np)), device=dev)
        w_np, b_np = w.cpu().numpy(), b.cpu().numpy()
    return w_np, b_np, mean, std, C, sweep, best["val_accuracy"]


def _mlp_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, num_classes: int,
               config: LinearProbeConfig, *, device: torch.device | None, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A small MLP head with AdamW, early-stopped on validation loss (best epoch restored)."""
    torch.manual_seed(seed)
    dev = device or torch.device("cpu")
    head = MLPHead(train_x.shape[1], num_classes, config.mlp_hidden, config.mlp_dropout).to(dev)
    mean, std = standardiser(train_x)
    head.mean.copy_(torch.as_tensor(mean))
    head.std.copy_(torch.as_tensor(std))
    xt, yt = torch.as_tensor(train_x, device=dev), torch.as_tensor(train_y, device=dev)
    xv, yv = torch.as_tensor(val_x, device=dev), torch.as_tensor(val_y, device=dev)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    best_loss, best_state, best_epoch, patience = float("inf"), None, 0, 20
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for epoch in range(config.mlp_epochs):
        head.train()
        for idx in torch.randperm(len(xt), generator=gen).split(128):
            opt.zero_grad()
            F.cross_entropy(head(xt[idx]), yt[idx], label_smoothing=0.1).backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            loss = float(F.cross_entropy(head(xv), yv)) if len(yv) else 0.0
        if loss < best_loss - 1e-4:
            best_loss, best_epoch = loss, epoch
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval().cpu()
    with torch.no_grad():
        acc = _scores(head(torch.as_tensor(val_x)), val_y)[0] if len(val_y) else float("nan")
    return head, {"best_epoch": best_epoch, "val_loss": best_loss, "val_accuracy": acc}
