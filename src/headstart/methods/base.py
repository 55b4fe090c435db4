"""The strategy contract: what a strategy receives, what it returns, and the registry it joins.

A strategy is a frozen config dataclass plus a function
``run(backbone, inputs: StrategyInputs, config) -> (head, info, backbone_trained)``, registered by
name with :func:`register_strategy` at the bottom of its own module. Fine-tuning strategies train
the backbone too; the linear probe leaves it frozen and works on cached features only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from ..runtime import Runtime

__all__ = ["STRATEGIES", "Strategy", "StrategyInputs", "register_strategy"]


@dataclass
class StrategyInputs:
    """What every strategy receives: the splits, integer labels, cached frozen-backbone features
    when the strategy asks for them (``Strategy.needs_features``), and the runtime (its device is
    resolved: a ``torch.device``)."""

    splits: Any
    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    num_classes: int
    runtime: Runtime
    seed: int
    checkpoint_dir: Any = None
    resume: bool = False
    label_names: list[str] = field(default_factory=list)
    target: Any = None  # unlabelled target-domain Dataset (domain adaptation)
    target_labels: np.ndarray | None = None  # evaluation-only target labels, when the user has some
    pool: Any = None  # unlabelled Dataset from the same domain as the labelled data (``features["pool"]``)

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def progress(self) -> bool:
        return self.runtime.progress

    def log(self, message: str) -> None:
        self.runtime.log(message)


@dataclass(frozen=True)
class Strategy:
    name: str
    config_class: type
    run: Callable[[Any, StrategyInputs, Any], tuple[nn.Module, dict[str, Any], bool]]
    description: str
    needs_features: bool = False
    needs_target: bool = False  # domain adaptation: also needs unlabelled target data
    pool: str = "no"  # unlabelled in-domain data: "no" (refused), "optional" or "needed"
    trains: str = "no"  # does it change the backbone's weights: "no", "yes", or "may" (it depends on a choice)


STRATEGIES: Registry[Strategy] = Registry("strategy", ConfigError)


def register_strategy(name: str, config_class: type, run: Callable[..., tuple[nn.Module, dict[str, Any], bool]],
                      description: str, *, needs_features: bool = False, needs_target: bool = False,
                      pool: str = "no", trains: str = "no") -> Strategy:
    """Add a strategy under ``name`` (a duplicate name is an error) and return its entry."""
    if pool not in ("no", "optional", "needed"):
        raise ValueError(f"pool must be 'no', 'optional' or 'needed', got {pool!r}")
    if trains not in ("no", "yes", "may"):
        raise ValueError(f"trains must be 'no', 'yes' or 'may', got {trains!r}")
    entry = Strategy(name, config_class, run, description, needs_features=needs_features, needs_target=needs_target,
                     pool=pool, trains=trains)
    STRATEGIES.register(name, entry)
    return entry
