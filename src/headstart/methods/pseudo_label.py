"""Pseudo-labels: learn from unlabelled items of the same kind as the labelled ones (self-training).

On the frozen features, standardised with the statistics of the labelled and unlabelled items
together and L2-normalised: a logistic probe on the labelled training items, then curriculum
self-training (Cascante-Bonilla et al. 2021): pseudo-label the unlabelled pool, keep the most
confident share of each predicted class, refit on both, and widen the share round by round. The
probe's C is chosen on the validation split, and the self-trained probe is kept only if it scores
at least as well there as the same probe without the pool: wrong pseudo-labels can teach the probe
its own mistakes, and the validation split is the only place that would show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from torch import nn

from ..domain.self_training import C_GRID, CURRICULUM, as_bottleneck_head, curriculum_self_train, normalise
from ..errors import ConfigError
from ..options import Config, Constraint, Each, Interval
from .base import StrategyInputs, register_strategy


@dataclass(frozen=True)
class PseudoLabelConfig(Config):
    curriculum: tuple[float, ...] = CURRICULUM
    type: str = field(default="pseudo-label", init=False)

    constraints: ClassVar[dict[str, Constraint]] = {
        "curriculum": Each(Interval(0, 1, low_open=True), non_empty=True)}
    notes: ClassVar[dict[str, str]] = {
        "curriculum": "share of each predicted class of the unlabelled items pseudo-labelled, round by round"}


def choose_strength_by_folds(z: np.ndarray, y: np.ndarray, k: int, folds: int = 3) -> tuple[float, dict[float, float]]:
    """The C with the lowest held-out log-loss over stratified folds of the labelled items.

    Log-loss, not accuracy: on a few dozen items many values of C tie on accuracy, and the tie
    would go to the strongest regularisation, whose flat probabilities pseudo-label every unlabelled
    item as one class."""
    from scipy.special import log_softmax
    from sklearn.model_selection import StratifiedKFold

    from ..train.logistic import fit_logistic

    n = min(folds, int(np.bincount(y, minlength=k).min()))
    if n < 2:
        return 1.0, {}
    losses: dict[float, float] = {}
    for C in C_GRID:
        total = 0.0
        for fit_idx, score_idx in StratifiedKFold(n, shuffle=True, random_state=0).split(z, y):
            w, b = fit_logistic(z[fit_idx], y[fit_idx], k, C=C, max_iter=300)
            logp = log_softmax(z[score_idx] @ w.numpy().T + b.numpy(), axis=1)
            total -= float(logp[np.arange(len(score_idx)), y[score_idx]].sum())
        losses[C] = total / len(y)
    return min(C_GRID, key=lambda c: losses[c]), losses


def run_pseudo_label(backbone: Any, inputs: StrategyInputs, config: PseudoLabelConfig
                     ) -> tuple[nn.Module, dict[str, Any], bool]:
    pool = inputs.features.get("pool")
    if pool is None:
        raise ConfigError("pseudo-label needs unlabelled items.", fix="pass --unlabelled DATA.")
    xs, xv = inputs.features["train"], inputs.features["val"]
    ys, yv = inputs.labels["train"], inputs.labels["val"]
    k = inputs.num_classes
    both = np.concatenate([xs, pool]).astype(np.float64)
    mean = both.mean(0).astype(np.float32)
    # a constant feature has no spread to divide by: leave it as it is
    scale = np.where(both.std(0) > 1e-6, both.std(0), 1.0).astype(np.float32)
    zs, zv, zt = (normalise(x, mean, scale) for x in (xs, xv, pool))
    C, sweep = choose_strength_by_folds(np.concatenate([zs, zv]), np.concatenate([ys, yv]), k)
    plain = curriculum_self_train(zs, ys, zt[:0], k, C, curriculum=(1.0,))  # the probe without the pool
    trained = curriculum_self_train(zs, ys, zt, k, C, curriculum=tuple(config.curriculum))

    def val_acc(fit: Any) -> float:
        return float((fit.proba(zv).argmax(1) == yv).mean()) if len(yv) else float("nan")

    from .linear_probe import LinearProbeConfig, run_linear_probe

    # The bar is the better of the same probe without the pool and the default linear probe (its own C,
    # chosen on validation): "kept" must mean better than what --strategy linear-probe would give.
    probe_head, probe_info, _ = run_linear_probe(backbone, inputs, LinearProbeConfig())
    plain_acc, self_acc, probe_acc = val_acc(plain), val_acc(trained), float(probe_info["val_accuracy"])
    used = not self_acc < max(plain_acc, probe_acc)
    reasons = [f"Self-training on {len(pool)} unlabelled items: validation accuracy {self_acc:.3f} against "
               f"{plain_acc:.3f} for the same probe without them and {probe_acc:.3f} for the default linear probe; "
               + ("kept." if used else "the pseudo-labels did not beat both, so the model is the default linear "
                  "probe (labelled items only, refit on train + val).")]
    inputs.log("pseudo-label: " + reasons[0])
    info = {"log_loss_by_C": {str(c): v for c, v in sweep.items()}, "val_accuracy_without_pool": plain_acc,
            "val_accuracy_linear_probe": probe_acc, "rounds": trained.rounds, "used_pool": used,
            "pool_size": int(len(pool)), "reasons": reasons}
    if not used:
        # Nothing of the pool may remain: not even its statistics in the standardisation.
        return probe_head, {**probe_info, **info, "val_accuracy": probe_acc}, False
    head = as_bottleneck_head(trained.weight, trained.bias, mean, scale)
    return head, {**info, "C": C, "val_accuracy": self_acc}, False


register_strategy("pseudo-label", PseudoLabelConfig, run_pseudo_label,
                  "learn from unlabelled items too (--unlabelled): curriculum self-training of a probe, kept only if "
                  "it helps on validation", needs_features=True, pool="needed")
