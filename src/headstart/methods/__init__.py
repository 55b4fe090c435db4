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
from ..options import parse_options
from ..registry import Registry
from ..domain.config import AdaptConfig
from ..fewshot.contrastive import ContrastiveConfig
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
    label_names: list[str] = field(default_factory=list)
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
    result = adapt_domain(backbone, inputs.splits, inputs.target, inputs.label_names,
                          inputs.labels, config, seeds=tuple(inputs.seed + i for i in range(config.seeds)),
                          target_labels=inputs.target_labels, features=feats, device=inputs.device,
                          progress=inputs.progress, log=inputs.log)
    info = {**result.to_dict(), "chosen_strategy": result.chosen}
    return result.head, info, result.backbone_trained


@dataclass(frozen=True)
class ZeroShotConfig:
    """Text: cosine to the class names' prompt embeddings. Images: ConSE through ``text_encoder``."""

    templates: tuple[str, ...] = ()  # () = the defaults for the modality
    top_k: int = 10  # ConSE: ImageNet classes mixed per image
    scale: float = 20.0
    text_encoder: str = "minilm-l6"  # images: embeds the ImageNet and user class names
    type: str = field(default="zero-shot", init=False)

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PrototypeConfig:
    type: str = field(default="prototypes", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type}


def _run_zero_shot(backbone: Any, inputs: StrategyInputs, config: ZeroShotConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    from ..fewshot import zeroshot

    names = inputs.label_names
    if backbone.card.modality == "text":
        head = zeroshot.label_embedding_head(backbone, names, templates=config.templates or zeroshot.TEXT_TEMPLATES,
                                             scale=config.scale)
        how = f"cosine between each text and the prompt embeddings of the {len(names)} class names"
    else:
        from ..backbones import create_backbone

        head = zeroshot.conse_head(backbone, names, create_backbone(config.text_encoder), top_k=config.top_k,
                                   templates=config.templates or zeroshot.IMAGE_TEMPLATES, scale=config.scale)
        how = f"ConSE: ImageNet top-{config.top_k} probabilities mixed over {config.text_encoder} name embeddings"
    inputs.log(f"Zero-shot: {how}; no labelled example used")
    return head, {"labelled_examples_used": 0, "reasons": [how]}, False


def _run_prototypes(backbone: Any, inputs: StrategyInputs, config: PrototypeConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    from ..fewshot.prototypes import prototype_head

    head = prototype_head(inputs.features["train"], inputs.labels["train"], inputs.num_classes,
                          x_val=inputs.features["val"], y_val=inputs.labels["val"])
    return head, {"scale": float(head.scale)}, False


def _run_setfit(backbone: Any, inputs: StrategyInputs, config: Any) -> tuple[nn.Module, dict[str, Any], bool]:
    from ..features import extract_features_many
    from ..fewshot.contrastive import contrastive_finetune

    if not backbone.trainable:
        raise ConfigError(f"The backbone '{backbone.card.name}' cannot be fine-tuned.", fix="use --strategy prototypes.")
    info = contrastive_finetune(backbone, inputs.splits.train, inputs.labels["train"], config, seed=inputs.seed,
                                device=inputs.device, progress=inputs.progress, log=inputs.log)
    train, val = extract_features_many(backbone, [inputs.splits.train, inputs.splits.val], use_cache=False,
                                       device=inputs.device, progress=inputs.progress)
    head, probe = linear_probe(train, inputs.labels["train"], val, inputs.labels["val"], inputs.num_classes,
                               LinearProbeConfig(head=config.head), device=inputs.device, seed=inputs.seed)
    return head, {**info, "C": probe.get("C")}, True


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
STRATEGIES.register("zero-shot", Strategy("zero-shot", ZeroShotConfig, _run_zero_shot,
                                          "no labels: class names against texts (embeddings) or images (ConSE)"))
STRATEGIES.register("prototypes", Strategy("prototypes", PrototypeConfig, _run_prototypes,
                                           "nearest class mean of the frozen features (few-shot)", needs_features=True))
STRATEGIES.register("setfit", Strategy("setfit", ContrastiveConfig, _run_setfit,
                                       "SetFit-style contrastive pairs (linear sampling), then a logistic head"))
STRATEGIES.register("auto", Strategy("auto", AutoConfig, run_auto,
                                     "choose among the above from data size, backbone and time budget; says why",
                                     needs_features=True))


def make_config(strategy: str, **options: Any) -> Any:
    """The strategy's config from keyword options, each parsed by the config's annotation (text
    such as ``"0.1,1"`` or ``"true"`` too); unknown names and wrong types are errors, not ignored."""
    entry = STRATEGIES.get(strategy)
    return entry.config_class(**parse_options(entry.config_class, options, strategy=strategy))


__all__ = ["STRATEGIES", "Strategy", "StrategyInputs", "LinearProbeConfig", "make_config"]
