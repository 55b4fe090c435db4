"""Fine-tuning strategies on the shared loop: full, partial, gradual, LP-FT and LoRA.

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
from .linear_probe import LinearProbeConfig, linear_probe


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


@dataclass(frozen=True)
class LoRAConfig(FineTuneConfig):
    r: int = 8
    alpha: int = 16
    lora_dropout: float = 0.1
    lr: float = 5e-4  # adapters start at zero and need a larger rate than full fine-tuning
    target_modules: tuple[str, ...] = ()  # () = the attention query / value projections, found by name
    type: str = field(default="lora", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 1:
            raise ConfigError(f"`r` must be >= 1, got {self.r}.")


def _split_data(inputs: Any) -> tuple[Any, Any, Any, Any]:
    s = inputs.splits
    return s.train, s.val, inputs.labels["train"], inputs.labels["val"]


def _fit(backbone: Any, head: nn.Module, inputs: Any, config: FineTuneConfig, trainable: Any = None) -> dict[str, Any]:
    if not backbone.trainable:
        raise ConfigError(f"The backbone '{backbone.card.name}' cannot be fine-tuned (it is an ONNX model).",
                          fix="use --strategy linear-probe, or a torch backbone such as minilm-l6.")
    train_data, val_data, y_train, y_val = _split_data(inputs)
    result = train(backbone, head, train_data, val_data, y_train, y_val, config, checkpoint_dir=inputs.checkpoint_dir,
                   resume=inputs.resume, seed=inputs.seed, device=str(inputs.device), progress=inputs.progress,
                   log=inputs.log, trainable=trainable)
    return {"best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy, "history": result.history,
            "trainable_params": result.trainable_params, "total_params": result.total_params,
            "resumed_from_epoch": result.resumed_from_epoch, "stopped_early": result.stopped_early,
            "processes": result.processes}


def _new_head(backbone: Any, num_classes: int, seed: int) -> LinearHead:
    torch.manual_seed(seed)
    return LinearHead(backbone.card.feature_dim, num_classes)


def run_finetune(backbone: Any, inputs: Any, config: FineTuneConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    """full / partial / gradual: a fresh linear head, the loop decides what trains."""
    head = _new_head(backbone, inputs.num_classes, inputs.seed)
    return head, _fit(backbone, head, inputs, config), True


def run_lp_ft(backbone: Any, inputs: Any, config: LPFTConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    head, probe = linear_probe(inputs.features["train"], inputs.labels["train"], inputs.features["val"],
                               inputs.labels["val"], inputs.num_classes, LinearProbeConfig(refit_on_val=False),
                               device=inputs.device, seed=inputs.seed)
    inputs.log(f"LP-FT: probe done (C = {probe['C']:.3g}, val accuracy {probe['val_accuracy']:.3f}); fine-tuning")
    info = _fit(backbone, head, inputs, config)
    return head, {**info, "C": probe["C"], "probe_val_accuracy": probe["val_accuracy"]}, True


def lora_targets(model: nn.Module) -> list[str]:
    """Attention query / value projections by their usual names (BERT, ViT, DINOv2: query / value;
    LLaMA-style: q_proj / v_proj; timm ViT: qkv)."""
    names = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for wanted in (("query", "value"), ("q_proj", "v_proj"), ("qkv",)):
        if set(wanted) <= names:
            return list(wanted)
    return []


def run_lora(backbone: Any, inputs: Any, config: LoRAConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    """LoRA adapters (PEFT) on the attention projections, trained with the head, then merged.

    Merging folds ``B @ A * alpha / r`` into the frozen weights, so the saved artifact is a plain
    backbone that loads, predicts and exports like any other; the adapter's size is reported.
    """
    from peft import LoraConfig, get_peft_model

    inner = getattr(backbone, "model", None)
    targets = list(config.target_modules) or (lora_targets(inner) if inner is not None else [])
    if inner is None or not targets:
        raise ConfigError(f"LoRA needs a transformer backbone with attention projections; '{backbone.card.name}' "
                          "has none.", fix="use minilm-l6 or an hf: text / ViT backbone, or --strategy lp-ft.")
    peft_model = get_peft_model(inner, LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.lora_dropout,
                                                  target_modules=targets, bias="none"))
    backbone.model = peft_model
    adapter = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)

    def only_adapters(model: nn.Module) -> None:
        for n, p in backbone.named_parameters():
            p.requires_grad_("lora_" in n)

    head = _new_head(backbone, inputs.num_classes, inputs.seed)
    info = _fit(backbone, head, inputs, config, trainable=only_adapters)
    # Merge, and check on validation inputs that the merged backbone computes what the adapter did.
    val = inputs.splits.val
    probe_items = [val.load(i) for i in range(min(16, len(val)))]
    backbone.eval()
    with torch.no_grad():
        x = backbone.preprocess(probe_items)
        before = backbone(**x)
        backbone.model = peft_model.merge_and_unload()
        after = backbone(**x)
    diff = float((before - after).abs().max()) if len(probe_items) else 0.0
    inputs.log(f"LoRA merged into the backbone (max feature difference {diff:.1e})")
    return head, {**info, "adapter_params": adapter, "lora_targets": targets, "merged": True,
                  "merge_max_abs_diff": diff}, True
