"""Prototypes: the nearest class mean in embedding space (Snell et al. 2017; SimpleShot's
centre-then-L2-normalise, Wang et al. 2019). No training, no hyper-parameters but the softmax scale,
which is chosen by validation log-loss so that the probabilities mean something."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..heads import CosineHead
from ..options import Config
from .base import StrategyInputs, register_strategy


def prototype_head(x: np.ndarray, y: np.ndarray, num_classes: int, *, x_val: np.ndarray | None = None,
                   y_val: np.ndarray | None = None) -> CosineHead:
    """Class means of centred, L2-normalised support features; scale fitted on (x_val, y_val)."""
    centre = torch.as_tensor(x.mean(0))
    z = F.normalize(torch.as_tensor(x) - centre, dim=1)
    yt = torch.as_tensor(y)
    missing = sorted(set(range(num_classes)) - set(yt.tolist()))
    if missing:
        raise ValueError(f"classes {missing} have no support examples")
    protos = torch.stack([z[yt == c].mean(0) for c in range(num_classes)])
    head = CosineHead(protos, centre, scale=10.0)
    if x_val is not None and y_val is not None and len(y_val):
        with torch.no_grad():
            cos = head(torch.as_tensor(x_val)) / head.scale
            target = torch.as_tensor(y_val)
            scales = [2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0]
            losses = [float(F.cross_entropy(s * cos, target)) for s in scales]
            head.scale.fill_(scales[int(np.argmin(losses))])
    return head


@dataclass(frozen=True)
class PrototypeConfig(Config):
    type: str = field(default="prototypes", init=False)


def run_prototypes(backbone: Any, inputs: StrategyInputs, config: PrototypeConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    head = prototype_head(inputs.features["train"], inputs.labels["train"], inputs.num_classes,
                          x_val=inputs.features["val"], y_val=inputs.labels["val"])
    return head, {"scale": float(head.scale)}, False


register_strategy("prototypes", PrototypeConfig, run_prototypes, "nearest class mean of the frozen features (few-shot)",
                  needs_features=True)
