"""Backbones from timm (optional: ``pip install 'headstart[timm]'``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import nn

from ..errors import BackboneError, MissingDependencyError
from ._groups import layerwise_groups
from .base import Backbone, BackboneCard, InputSpec, preprocess_images


class TimmBackbone(Backbone):
    """``timm.create_model(name, pretrained=True)`` with its pretrained config as the card."""

    def __init__(self, model_name: str) -> None:
        super().__init__()
        try:
            import timm
        except ImportError:
            raise MissingDependencyError("timm", f"The backbone 'timm:{model_name}'", extra="timm") from None
        try:
            self.model = timm.create_model(model_name, pretrained=True).eval()
        except Exception as exc:  # unknown name or no weights reachable
            raise BackboneError(f"timm cannot create '{model_name}': {exc}",
                                fix="check `timm.list_models(pretrained=True)` and the network.") from None
        cfg = self.model.pretrained_cfg
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
        self.card = BackboneCard(
            name=f"timm:{model_name}", modality="image", feature_dim=int(self.model.num_features),
            source=f"timm {cfg.get('hf_hub_id') or model_name}", license=str(cfg.get("license", "see model card")),
            input=InputSpec(image_size=size, crop_pct=float(cfg.get("crop_pct", 0.875)),
                            mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),  # type: ignore[arg-type]
                            interpolation=str(cfg.get("interpolation", "bicubic"))),
            num_params=sum(p.numel() for p in self.model.parameters()),
            source_classes=int(getattr(self.model, "num_classes", 0) or 0),
            description=f"timm {model_name}, pooled pre-logits features",
        )

    def preprocess(self, items: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        return {"pixel_values": preprocess_images(items, self.card.input)}

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.model.forward_head(self.model.forward_features(pixel_values), pre_logits=True)

    def source_logits(self, pixel_values: torch.Tensor) -> torch.Tensor | None:  # type: ignore[override]
        if not self.card.source_classes:
            return None
        return self.model.forward_head(self.model.forward_features(pixel_values))

    def param_groups(self) -> list[list[nn.Parameter]]:
        return layerwise_groups(self.model)
