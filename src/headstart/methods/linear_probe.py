"""``linear-probe``: a logistic-regression (or MLP) head on cached frozen-backbone features.

The probe itself (the ``C`` sweep, the L-BFGS solve, the folded standardisation) is a training
routine shared with the baselines and the rankers, so it lives in :mod:`headstart.train.linear_probe`;
this module makes it a strategy.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..train.linear_probe import LinearProbeConfig, linear_probe
from .base import StrategyInputs, register_strategy

__all__ = ["LinearProbeConfig", "run_linear_probe"]


def run_linear_probe(backbone: Any, inputs: StrategyInputs, config: LinearProbeConfig
                     ) -> tuple[nn.Module, dict[str, Any], bool]:
    head, info = linear_probe(inputs.features["train"], inputs.labels["train"], inputs.features["val"],
                              inputs.labels["val"], inputs.num_classes, config, device=inputs.device, seed=inputs.seed)
    return head, info, False


register_strategy("linear-probe", LinearProbeConfig, run_linear_probe,
                  "frozen backbone, logistic-regression (or MLP) head on cached features", needs_features=True)
