"""Strategies: a config dataclass plus a function, registered by name.

A strategy function takes the backbone, the splits with their cached features, its config and a
context, and returns ``(head, info, backbone_trained)``. Fine-tuning strategies will train the
backbone too; the linear probe leaves it frozen and works on cached features only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from .linear_probe import LinearProbeConfig, linear_probe


@dataclass
class StrategyInputs:
    """What every strategy receives: features (cached) and integer labels per split."""

    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    num_classes: int
    device: torch.device
    seed: int


@dataclass(frozen=True)
class Strategy:
    name: str
    config_class: type
    run: Callable[[Any, StrategyInputs, Any], tuple[nn.Module, dict[str, Any], bool]]
    description: str


STRATEGIES: Registry[Strategy] = Registry("strategy", ConfigError)


def _run_linear_probe(backbone: Any, inputs: StrategyInputs, config: LinearProbeConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    head, info = linear_probe(inputs.features["train"], inputs.labels["train"], inputs.features["val"],
                              inputs.labels["val"], inputs.num_classes, config, device=inputs.device, seed=inputs.seed)
    return head, info, False


STRATEGIES.register("linear-probe", Strategy("linear-probe", LinearProbeConfig, _run_linear_probe,
                                             "frozen backbone, logistic-regression (or MLP) head on cached features"))


def make_config(strategy: str, **options: Any) -> Any:
    """The strategy's config from keyword options; unknown names are an error, not ignored."""
    entry = STRATEGIES.get(strategy)
    import dataclasses

    known = {f.name for f in dataclasses.fields(entry.config_class) if f.init}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"Strategy '{strategy}' has no option(s) {', '.join(unknown)}.",
                          fix=f"its options are: {', '.join(sorted(known))}.")
    return entry.config_class(**options)


__all__ = ["STRATEGIES", "Strategy", "StrategyInputs", "LinearProbeConfig", "make_config"]
