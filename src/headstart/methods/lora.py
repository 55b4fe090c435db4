"""``lora``: LoRA adapters (PEFT) on the attention projections, trained with the head, then merged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..train.config import FineTuneConfig
from ..options import Constraint, Interval
from .base import register_strategy
from .finetune import fit_backbone, new_head


@dataclass(frozen=True)
class LoRAConfig(FineTuneConfig):
    r: int = 8
    alpha: int = 16
    lora_dropout: float = 0.1
    lr: float = 5e-4  # adapters start at zero and need a larger rate than full fine-tuning
    target_modules: tuple[str, ...] = ()  # () = the attention query / value projections, found by name
    type: str = field(default="lora", init=False)

    constraints: ClassVar[dict[str, Constraint]] = {
        "r": Interval(1), "alpha": Interval(0, low_open=True), "lora_dropout": Interval(0, 1, high_open=True)}
    notes: ClassVar[dict[str, str]] = {
        "r": "rank of the low-rank update", "alpha": "scale of the update is alpha / r",
        "lr": "adapters start at zero and need a larger rate than full fine-tuning",
        "target_modules": "empty = the attention query / value projections, found by name"}


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

    head = new_head(backbone, inputs.num_classes, inputs.seed)
    info = fit_backbone(backbone, head, inputs, config, trainable=only_adapters)
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


register_strategy("lora", LoRAConfig, run_lora, "LoRA adapters on attention (PEFT), merged", trains="yes")
