"""``auto``: choose among linear probe, LP-FT, LoRA and full fine-tuning, and say why.

The rules, in order:
1. an ONNX backbone cannot be trained -> linear probe;
2. fewer than ``min_per_class`` examples in the smallest class -> linear probe (fine-tuning that
   little data mostly overfits; the probe is the stronger baseline at a few shots);
3. the estimated fine-tuning time (one timed forward + backward batch, scaled to the run) over
   ``budget_s`` -> LoRA if it fits (it skips most weight gradients), else linear probe;
4. a backbone over ``large_params`` parameters with attention projections -> LoRA;
5. otherwise LP-FT (Kumar et al., 2022: fine-tuning from a probed head keeps the pre-trained
   features and beats plain fine-tuning out of distribution).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..train.linear_probe import LinearProbeConfig, linear_probe
from ..options import Config, Constraint, Interval
from .base import register_strategy
from .finetune import LPFTConfig, run_lp_ft
from .lora import LoRAConfig, lora_targets, run_lora


@dataclass(frozen=True)
class AutoConfig(Config):
    budget_s: float = 600.0
    min_per_class: int = 16
    large_params: int = 100_000_000
    epochs: int = 4
    type: str = field(default="auto", init=False)

    constraints: ClassVar[dict[str, Constraint]] = {
        "budget_s": Interval(0, low_open=True), "min_per_class": Interval(1), "large_params": Interval(1),
        "epochs": Interval(1)}
    notes: ClassVar[dict[str, str]] = {
        "budget_s": "seconds the whole fit may take (--budget 10m)",
        "min_per_class": "below this many examples in the smallest class, fine-tuning is not tried",
        "large_params": "backbones with more parameters than this are only probed on a CPU",
        "epochs": "epochs of the fine-tuning strategy when one is chosen"}


def parse_budget(text: str) -> float:
    """'90s', '10m', '1.5h' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    raw = text.strip().lower()
    try:
        return float(raw[:-1]) * units[raw[-1]] if raw[-1] in units else float(raw)
    except (ValueError, IndexError):
        raise ConfigError(f"--budget must look like 90s, 10m or 1h, got {text!r}.") from None


def estimate_finetune_seconds(backbone: Any, inputs: Any, epochs: int, batch_size: int = 8) -> float:
    """Time one forward + backward batch on real training items and scale it to the whole run."""
    train = inputs.splits.train
    items = [train.load(i) for i in range(min(batch_size, len(train)))]
    head = nn.Linear(backbone.card.feature_dim, inputs.num_classes)
    backbone.train()
    x = backbone.preprocess(items)
    y = torch.as_tensor(inputs.labels["train"][: len(items)])
    start = time.perf_counter()
    F.cross_entropy(head(backbone(**x)), y).backward()
    per_item = (time.perf_counter() - start) / len(items)
    backbone.zero_grad(set_to_none=True)
    backbone.eval()
    # Training items every epoch, plus a forward-only pass (~1/3 of the cost) over validation.
    return per_item * epochs * (len(train) + len(inputs.splits.val) / 3)


def run_auto(backbone: Any, inputs: Any, config: AutoConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    reasons: list[str] = []
    smallest = min(Counter(inputs.labels["train"].tolist()).values())
    lora_ok = getattr(backbone, "model", None) is not None and bool(lora_targets(backbone.model))
    choice, estimate = "linear-probe", None
    if not backbone.trainable:
        reasons.append(f"'{backbone.card.name}' is an ONNX model and cannot be trained: linear probe.")
    elif smallest < config.min_per_class:
        reasons.append(f"The smallest class has {smallest} training examples (< {config.min_per_class}): fine-tuning "
                       "that little data mostly overfits, so a linear probe on frozen features is the safer choice.")
    else:
        estimate = estimate_finetune_seconds(backbone, inputs, config.epochs)
        reasons.append(f"Fine-tuning {config.epochs} epochs is estimated at {estimate:.0f} s "
                       f"(budget {config.budget_s:.0f} s).")
        if estimate > config.budget_s:
            if lora_ok and estimate * 0.6 <= config.budget_s:
                choice = "lora"
                reasons.append("Over budget for full fine-tuning; LoRA skips most weight gradients and fits.")
            else:
                reasons.append("Over budget: linear probe (seconds on cached features).")
        elif lora_ok and backbone.card.num_params > config.large_params:
            choice = "lora"
            reasons.append(f"{backbone.card.num_params / 1e6:.0f} M parameters: LoRA trains well under 1% of them.")
        else:
            choice = "lp-ft"
            reasons.append(f"{smallest}+ examples per class and time to spare: LP-FT, which fine-tunes from the "
                           "probed head and keeps the pre-trained features better than plain fine-tuning.")
    inputs.log("auto: " + " ".join(reasons))
    if choice == "linear-probe":
        head, info = linear_probe(inputs.features["train"], inputs.labels["train"], inputs.features["val"],
                                  inputs.labels["val"], inputs.num_classes, LinearProbeConfig(),
                                  device=inputs.device, seed=inputs.seed)
        trained = False
    elif choice == "lora":
        head, info, trained = run_lora(backbone, inputs, LoRAConfig(epochs=config.epochs))
    else:
        head, info, trained = run_lp_ft(backbone, inputs, LPFTConfig(epochs=config.epochs))
    return head, {**info, "chosen_strategy": choice, "reasons": reasons, "estimated_finetune_s": estimate}, trained


register_strategy("auto", AutoConfig, run_auto, "choose among the above from data size, backbone and time budget; says why",
                  needs_features=True)
