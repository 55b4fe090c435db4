"""Linear probe on cached features: multinomial logistic regression, L2 strength chosen on val.

This is the CLIP / open_clip linear-probe protocol: sweep the inverse regularisation ``C`` on the
validation split, then refit on train + val with the chosen ``C``. The solver is full-batch L-BFGS
in float64 on standardised features, minimising the same objective as scikit-learn's
``LogisticRegression(C=C)`` (sum of cross-entropies + ||W||^2 / (2C), intercept unpenalised), so the
two agree; it runs in torch so that it uses a GPU when there is one. The standardisation is folded
into the weights at the end: the head is a plain ``Linear`` on raw features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .heads import LinearHead, MLPHead

DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 4, 17))


@dataclass(frozen=True)
class LinearProbeConfig:
    """``head="linear"`` (default) or ``"mlp"``; ``Cs`` is the inverse-L2 grid searched on val."""

    head: Literal["linear", "mlp"] = "linear"
    Cs: tuple[float, ...] = DEFAULT_CS
    max_iter: int = 500
    refit_on_val: bool = True
    mlp_hidden: int = 512
    mlp_dropout: float = 0.2
    mlp_epochs: int = 200
    type: str = field(default="linear-probe", init=False)

    def __post_init__(self) -> None:
        if self.head not in ("linear", "mlp"):
            raise ConfigError(f"`head` must be 'linear' or 'mlp', got {self.head!r}.")
        if not self.Cs or any(c <= 0 for c in self.Cs):
            raise ConfigError(f"`Cs` must be positive numbers, got {self.Cs}.")
        if self.max_iter < 1:
            raise ConfigError(f"`max_iter` must be >= 1, got {self.max_iter}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, C: float, *, max_iter: int = 500,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None,
                 device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by L-BFGS: argmin sum CE + ||W||^2 / (2C). Returns (W, b)."""
    dev = device or torch.device("cpu")
    xt = torch.as_tensor(x, dtype=torch.float64, device=dev)
    yt = torch.as_tensor(y, dtype=torch.long, device=dev)
    n, d = xt.shape
    w = torch.zeros(num_classes, d, dtype=torch.float64, device=dev) if init is None else init[0].clone().to(dev)
    b = torch.zeros(num_classes, dtype=torch.float64, device=dev) if init is None else init[1].clone().to(dev)
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        # Divided by n: the same minimiser as scikit-learn's objective, better scaled for L-BFGS.
        loss = F.cross_entropy(xt @ w.T + b, yt, reduction="sum") / n + (w * w).sum() / (2 * C * n)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


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


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                 num_classes: int, config: LinearProbeConfig = LinearProbeConfig(), *,
                 device: torch.device | None = None, seed: int = 0) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fit the head; returns (head, info) where info records the sweep and the chosen ``C``."""
    if config.head == "mlp":
        return _mlp_probe(train_x, train_y, val_x, val_y, num_classes, config, device=device, seed=seed)
    mean, std = standardiser(train_x)
    ztr, zva = (train_x - mean) / std, (val_x - mean) / std
    sweep = []
    init = None
    best: tuple[float, float, float] | None = None  # (acc, -loss, C)
    for C in sorted(config.Cs):  # increasing C, warm-started: each fit starts near its solution
        w, b = fit_logistic(ztr, train_y, num_classes, C, max_iter=config.max_iter, init=init, device=device)
        init = (w, b)
        acc, loss = _scores(torch.as_tensor(zva, dtype=torch.float64, device=w.device) @ w.T + b, val_y)
        sweep.append({"C": C, "val_accuracy": acc, "val_loss": loss})
        if best is None or (acc, -loss) > best[:2]:
            best = (acc, -loss, C)
    assert best is not None
    C = best[2]
    if config.refit_on_val and len(val_y):
        x_all = np.concatenate([train_x, val_x])
        y_all = np.concatenate([train_y, val_y])
        mean, std = standardiser(x_all)
        w, b = fit_logistic((x_all - mean) / std, y_all, num_classes, C, max_iter=config.max_iter, device=device)
    else:
        w, b = fit_logistic(ztr, train_y, num_classes, C, max_iter=config.max_iter, device=device)
    head = LinearHead(train_x.shape[1], num_classes)
    std_t = torch.as_tensor(std, dtype=torch.float64, device=w.device)
    mean_t = torch.as_tensor(mean, dtype=torch.float64, device=w.device)
    with torch.no_grad():  # fold (x - mean) / std into the weights
        head.weight.copy_((w / std_t).float().cpu())
        head.bias.copy_((b - (w / std_t) @ mean_t).float().cpu())
    return head, {"C": C, "val_accuracy": best[0], "sweep": sweep, "refit_on_val": config.refit_on_val}


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
