"""Fine-tuning strategies on the shared loop: full, partial, gradual and LP-FT (LoRA: :mod:`.lora`).

Each is a frozen config dataclass (extending :class:`FineTuneConfig`) plus a function with the
strategy signature ``run(backbone, inputs, config) -> (head, info, backbone_trained)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..train.config import FineTuneConfig
from ..train.loop import train
from ..heads import LinearHead
from .base import register_strategy
from ..train.linear_probe import LinearProbeConfig, linear_probe


@dataclass(frozen=True)
class FullConfig(FineTuneConfig):
    type: str = field(default="full", init=False)


@dataclass(frozen=True)
class PartialConfig(FineTuneConfig):
    freeze: int = 2  # the stem / embeddings and the first block stay pre-trained
    type: str = field(default="partial", init=False)


@dataclass(frozen=True)
class GradualConfig(FineTuneConfig):
    gradual: bool = True
    type: str = field(default="gradual", init=False)


@dataclass(frozen=True)
class LPFTConfig(FineTuneConfig):
    """Kumar et al. (ICLR 2022): probe first, then fine-tune everything from that head, gently."""

    lr: float = 2e-5
    head_lr: float = 2e-5  # the probed head is already good: do not wreck it (their key point)
    head_dropout: float = 0.0
    label_smoothing: float = 0.0
    type: str = field(default="lp-ft", init=False)


def split_data(inputs: Any) -> tuple[Any, Any, Any, Any]:
    s = inputs.splits
    return s.train, s.val, inputs.labels["train"], inputs.labels["val"]


def fit_backbone(backbone: Any, head: nn.Module, inputs: Any, config: FineTuneConfig, trainable: Any = None) -> dict[str, Any]:
    if not backbone.trainable:
        raise ConfigError(f"The backbone '{backbone.card.name}' cannot be fine-tuned (it is an ONNX model).",
                          fix="use --strategy linear-probe, or a torch backbone such as minilm-l6.")
    train_data, val_data, y_train, y_val = split_data(inputs)
    result = train(backbone, head, train_data, val_data, y_train, y_val, config, checkpoint_dir=inputs.checkpoint_dir,
                   resume=inputs.resume, seed=inputs.seed, device=str(inputs.device), progress=inputs.progress,
                   log=inputs.log, trainable=trainable, deadline=inputs.runtime.deadline)
    return {"best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy, "history": result.history,
            "trainable_params": result.trainable_params, "total_params": result.total_params,
            "resumed_from_epoch": result.resumed_from_epoch, "stopped_early": result.stopped_early,
            "stopped_reason": result.stopped_reason, "processes": result.processes}


def new_head(backbone: Any, num_classes: int, seed: int) -> LinearHead:
    torch.manual_seed(seed)
    return LinearHead(backbone.card.feature_dim, num_classes)


def run_finetune(backbone: Any, inputs: Any, config: FineTuneConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    """full / partial / gradual: a fresh linear head, the loop decides what trains."""
    head = new_head(backbone, inputs.num_classes, inputs.seed)
    return head, fit_backbone(backbone, head, inputs, config), True


def run_lp_ft(backbone: Any, inputs: Any, config: LPFTConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    head, probe = linear_probe(inputs.features["train"], inputs.labels["train"], inputs.features["val"],
                               inputs.labels["val"], inputs.num_classes, LinearProbeConfig(refit_on_val=False),
                               device=inputs.device, seed=inputs.seed)
    inputs.log(f"LP-FT: probe done (C = {probe['C']:.3g}, val accuracy {probe['val_accuracy']:.3f}); fine-tuning")
    info = fit_backbone(backbone, head, inputs, config)
    return head, {**info, "C": probe["C"], "probe_val_accuracy": probe["val_accuracy"]}, True


register_strategy("full", FullConfig, run_finetune, "fine-tune every layer", trains="yes")
register_strategy("partial", PartialConfig, run_finetune, "freeze the first parameter groups, fine-tune the rest",
                  trains="yes")
register_strategy("gradual", GradualConfig, run_finetune, "unfreeze one more group from the top each epoch (ULMFiT)",
                  trains="yes")
register_strategy("lp-ft", LPFTConfig, run_lp_ft, "linear probe first, then fine-tune from that head (Kumar et al. 2022)",
                  needs_features=True, trains="yes")
