"""Backbones from timm (optional: ``pip install 'headstart[timm]'``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn

from ..errors import BackboneError, MissingDependencyError
from ._groups import layerwise_groups
from .base import Backbone, BackboneCard, InputSpec, preprocess_images


class TimmBackbone(Backbone):
    """``timm.create_model(name, pretrained=True)`` with its pretrained config as the card."""

    def __init__(self, model_name: str, *, local_files_only: bool = False) -> None:
        """``local_files_only``: take the weights from the local Hugging Face cache, as safetensors,
        and never reach the network (what loading a saved model does)."""
        super().__init__()
        try:
            import timm
        except ImportError:
            raise MissingDependencyError("timm", f"The backbone 'timm:{model_name}'", extra="timm") from None
        try:
            if local_files_only:
                self.model = _create_from_cache(timm, model_name)
            else:
                self.model = timm.create_model(model_name, pretrained=True).eval()
        except Exception as exc:  # unknown name or no weights reachable
            raise BackboneError(f"timm cannot create '{model_name}'{' offline' if local_files_only else ''}: {exc}",
                                fix="check `timm.list_models(pretrained=True)`; offline, download the weights once "
                                    "on a connected machine with the same HF_HOME.") from None
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


def _create_from_cache(timm: Any, model_name: str) -> nn.Module:
    """The pretrained model with its safetensors weights read from the local hub cache (no download)."""
    from huggingface_hub import hf_hub_download

    cfg = timm.models.get_pretrained_cfg(model_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        raise BackboneError(f"timm has no Hugging Face hub id for '{model_name}', so it cannot be found offline.")
    file = hf_hub_download(hub_id, "model.safetensors", local_files_only=True)
    return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": file}).eval()
