"""Strategies: a config dataclass plus a function, registered by name.

A strategy function takes the backbone, the splits with their cached features, its config and a
context, and returns ``(head, info, backbone_trained)``. Fine-tuning strategies will train the
backbone too; the linear probe leaves it frozen and works on cached features only.
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
from ..domain.config import AdaptConfig
from .auto import AutoConfig, run_auto
from .finetune import FullConfig, GradualConfig, LoRAConfig, LPFTConfig, PartialConfig, run_finetune, run_lora, run_lp_ft
from .linear_probe import LinearProbeConfig, linear_probe


@dataclass
class StrategyInputs:
    """What every strategy receives: the splits, integer labels, and cached frozen-backbone
    features when the strategy asks for them (``Strategy.needs_features``)."""

    splits: Any
    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    num_classes: int
    device: torch.device
    seed: int
    checkpoint_dir: Any = None
    resume: bool = False
    progress: bool = True
    log: Callable[[str], None] = field(default=lambda m: None)
    target: Any = None  # unlabelled target-domain Dataset (domain adaptation)
    target_labels: np.ndarray | None = None  # evaluation-only target labels, when the user has some


@dataclass(frozen=True)
class Strategy:
    name: str
    config_class: type
    run: Callable[[Any, StrategyInputs, Any], tuple[nn.Module, dict[str, Any], bool]]
    description: str
    needs_features: bool = False
    needs_target: bool = False  # domain adaptation: also needs unlabelled target data


STRATEGIES: Registry[Strategy] = Registry("strategy", ConfigError)


def _run_linear_probe(backbone: Any, inputs: StrategyInputs, config: LinearProbeConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    head, info = linear_probe(inputs.features["train"], inputs.labels["train"], inputs.features["val"],
                              inputs.labels["val"], inputs.num_classes, config, device=inputs.device, seed=inputs.seed)
    return head, info, False


def _run_domain_adapt(backbone: Any, inputs: StrategyInputs, config: Any) -> tuple[nn.Module, dict[str, Any], bool]:
    from ..domain.adapt import adapt_domain

    feats = {"train": inputs.features["train"], "val": inputs.features["val"], "target": inputs.features["target"]}
    result = adapt_domain(backbone, inputs.splits, inputs.target, [str(i) for i in range(inputs.num_classes)],
                          inputs.labels, config, seeds=tuple(inputs.seed + i for i in range(config.seeds)),
                          target_labels=inputs.target_labels, features=feats, device=inputs.device,
                          progress=inputs.progress, log=inputs.log)
    info = {**result.to_dict(), "chosen_strategy": result.chosen}
    return result.head, info, result.backbone_trained


STRATEGIES.register("linear-probe", Strategy("linear-probe", LinearProbeConfig, _run_linear_probe,
                                             "frozen backbone, logistic-regression (or MLP) head on cached features",
                                             needs_features=True))
STRATEGIES.register("full", Strategy("full", FullConfig, run_finetune, "fine-tune every layer"))
STRATEGIES.register("partial", Strategy("partial", PartialConfig, run_finetune,
                                        "freeze the first parameter groups, fine-tune the rest"))
STRATEGIES.register("gradual", Strategy("gradual", GradualConfig, run_finetune,
                                        "unfreeze one more group from the top each epoch (ULMFiT)"))
STRATEGIES.register("lp-ft", Strategy("lp-ft", LPFTConfig, run_lp_ft,
                                      "linear probe first, then fine-tune from that head (Kumar et al. 2022)",
                                      needs_features=True))
STRATEGIES.register("lora", Strategy("lora", LoRAConfig, run_lora, "LoRA adapters on attention (PEFT), merged"))
STRATEGIES.register("domain-adapt", Strategy(
    "domain-adapt", AdaptConfig, _run_domain_adapt,
    "align source and unlabelled target data (DANN, CDAN, CORAL, MMD, MCC), guard against negative transfer",
    needs_features=True, needs_target=True))
STRATEGIES.register("auto", Strategy("auto", AutoConfig, run_auto,
                                     "choose among the above from data size, backbone and time budget; says why",
                                     needs_features=True))


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
