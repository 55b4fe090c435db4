"""The backbone contract: a pre-trained network plus the card that says how to feed it.

Every source (the offline EfficientNet-Lite zoo, Hugging Face folders or hub ids, ONNX files,
timm) implements the same few members, so that feature extraction, ranking, fine-tuning and export
never need to know where a network came from:

- ``card``: what it is (source, licence, modality, input spec, feature dim) - preprocessing
  travels with the weights, as timm's ``pretrained_cfg`` does;
- ``preprocess(items)``: raw items (PIL images or strings) -> a dict of tensors;
- ``forward(**inputs)`` / ``features(...)``: pooled features ``[N, D]``;
- ``param_groups()``: parameters ordered from input to output (freezing, layer-wise rates);
- ``source_logits(**inputs)``: the pre-training head's logits, when the head was kept.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

Modality = Literal["image", "text"]


@dataclass(frozen=True)
class InputSpec:
    """How raw inputs must be turned into tensors for this backbone.

    Images: resize the shorter side to ``image_size / crop_pct`` then centre-crop ``image_size``,
    scale to [0, 1] and normalise with ``mean`` / ``std`` (per RGB channel).
    Text: tokenise with truncation at ``max_length`` tokens.
    """

    image_size: int | None = None
    crop_pct: float = 1.0
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str = "bicubic"
    max_length: int | None = None


@dataclass(frozen=True)
class BackboneCard:
    name: str
    modality: Modality
    feature_dim: int
    source: str
    license: str
    input: InputSpec
    num_params: int = 0
    source_classes: int = 0  # > 0 when the pre-training head is kept (source_logits works)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneCard:
        fields = dict(data)
        spec = dict(fields.pop("input"))
        for key in ("mean", "std"):
            if spec.get(key) is not None:
                spec[key] = tuple(spec[key])
        return cls(input=InputSpec(**spec), **fields)

    def preprocessing_key(self) -> str:
        """A stable digest of everything that changes features for the same weights and data."""
        blob = json.dumps({"name": self.name, "input": asdict(self.input)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def resize_crop(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """One PIL image -> ``uint8 [S, S, 3]``: RGB, shorter side to ``S / crop_pct``, centre crop ``S``.

    The geometric half of preprocessing; the arithmetic half (scale, normalise) is in
    :func:`normalise` and can live inside an exported ONNX graph.
    """
    if spec.image_size is None:
        raise ValueError("InputSpec for images needs image_size")
    size = spec.image_size
    resize_to = int(round(size / spec.crop_pct))
    img = img.convert("RGB")
    w, h = img.size
    scale = resize_to / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), _RESAMPLE[spec.interpolation])
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def normalise(pixels: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """``uint8 [N, S, S, 3]`` -> normalised ``float [N, 3, S, S]`` (traceable, so ONNX can hold it)."""
    if spec.mean is None or spec.std is None:
        raise ValueError("InputSpec for images needs mean and std")
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=pixels.device)
    std = torch.tensor(spec.std, dtype=torch.float32, device=pixels.device)
    x = (pixels.float() / 255.0 - mean) / std
    return x.permute(0, 3, 1, 2).contiguous()


def preprocess_images(images: Sequence[Image.Image], spec: InputSpec) -> torch.Tensor:
    """PIL images -> normalised float tensor ``[N, 3, S, S]`` following ``spec``.

    Written with PIL and NumPy only, so that no torchvision is needed on the default path.
    """
    pixels = np.stack([resize_crop(img, spec) for img in images])
    return normalise(torch.from_numpy(pixels), spec)


class Backbone(nn.Module, ABC):
    """Base class of every backbone. Subclasses set ``self.card`` in ``__init__``."""

    card: BackboneCard

    @abstractmethod
    def preprocess(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Raw items (PIL images or strings) -> keyword tensors for ``forward``."""

    @abstractmethod
    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[N, feature_dim]``."""

    def features(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self(**inputs)

    def param_groups(self) -> list[list[nn.Parameter]]:
        """Parameters grouped from input to output; the default is one group of everything."""
        return [list(self.parameters())]

    def source_logits(self, **inputs: torch.Tensor) -> torch.Tensor | None:
        """Logits of the pre-training head, or ``None`` when the head was not kept."""
        return None

    def for_inference(self) -> Backbone:
        """The module feature extraction runs: the same function in eval mode, possibly rewritten
        for speed (e.g. BatchNorm folded into convolutions). The default is the backbone itself."""
        return self

    def source_head(self) -> nn.Linear | None:
        """The pre-training head as a Linear on ``features`` (for ConSE), when it was kept."""
        return None

    @property
    def trainable(self) -> bool:
        """False for backbones that can only extract features (ONNX)."""
        return any(True for _ in self.parameters())
