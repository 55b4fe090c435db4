"""Classification heads, rebuilt from a small JSON spec stored in the artifact."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class LinearHead(nn.Linear):
    """Logits = features @ W.T + b, on raw (unstandardised) features."""

    def spec(self) -> dict[str, Any]:
        return {"type": "linear", "in_features": self.in_features, "num_classes": self.out_features}


class MLPHead(nn.Module):
    """Standardise -> Linear -> GELU -> Dropout -> Linear."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 512, dropout: float = 0.2) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        self.fc1 = nn.Linear(in_features, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)
        self._dims = (in_features, num_classes, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return self.fc2(self.drop(nn.functional.gelu(self.fc1(x))))

    def spec(self) -> dict[str, Any]:
        d, k, h, p = self._dims
        return {"type": "mlp", "in_features": d, "num_classes": k, "hidden": h, "dropout": p}


class BottleneckHead(nn.Module):
    """Standardise -> Linear -> LayerNorm -> ReLU -> Dropout (the bottleneck) -> Linear.

    Domain adaptation aligns the bottleneck (``embed``), as in DANN / CDAN / DAN, and classifies
    from it (``classify``); ``forward`` chains the two, so the head deploys like any other.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        self.fc1 = nn.Linear(in_features, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)
        self._dims = (in_features, num_classes, hidden, dropout)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(torch.relu(self.norm(self.fc1((x - self.mean) / self.std))))

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))

    def spec(self) -> dict[str, Any]:
        d, k, h, p = self._dims
        return {"type": "bottleneck", "in_features": d, "num_classes": k, "hidden": h, "dropout": p}


class CosineHead(nn.Module):
    """Logits = scale * cos(x - centre, prototype_c): nearest class prototype, as a deployable head.

    Prototypes are class means of (centred) support features for few-shot, or the text embeddings
    of the class names / descriptions for zero-shot; either way the model saves, loads and
    exports like any other head.
    """

    def __init__(self, prototypes: torch.Tensor, centre: torch.Tensor | None = None, scale: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("prototypes", prototypes.float().clone())
        self.register_buffer("centre", torch.zeros(prototypes.shape[1]) if centre is None else centre.float().clone())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = nn.functional.normalize(x - self.centre, dim=1)
        return self.scale * z @ nn.functional.normalize(self.prototypes, dim=1).T

    def spec(self) -> dict[str, Any]:
        k, d = self.prototypes.shape
        return {"type": "cosine", "in_features": d, "num_classes": k}


class TemperatureScaled(nn.Module):
    """A trained head whose logits are divided by a temperature fitted on validation data.

    The temperature is a buffer, so it travels in the safetensors file and inside an ONNX graph.
    """

    def __init__(self, head: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.inner = head
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) / self.temperature

    def spec(self) -> dict[str, Any]:
        inner = self.inner.spec()
        return {"type": "temperature", "inner": inner, "in_features": inner["in_features"],
                "num_classes": inner["num_classes"], "temperature": float(self.temperature)}


def build_head(spec: dict[str, Any]) -> nn.Module:
    kind = spec.get("type")
    if kind == "temperature":
        return TemperatureScaled(build_head(spec["inner"]), float(spec["temperature"]))
    if kind == "linear":
        return LinearHead(int(spec["in_features"]), int(spec["num_classes"]))
    if kind == "mlp":
        return MLPHead(int(spec["in_features"]), int(spec["num_classes"]), int(spec["hidden"]), float(spec["dropout"]))
    if kind == "conse":
        from ..fewshot.zeroshot import ConSEHead

        return ConSEHead(nn.Linear(int(spec["in_features"]), int(spec["source_classes"])),
                         torch.zeros(int(spec["source_classes"]), int(spec["text_dim"])),
                         torch.zeros(int(spec["num_classes"]), int(spec["text_dim"])), int(spec["top_k"]),
                         float(spec["scale"]))
    if kind == "cosine":
        return CosineHead(torch.zeros(int(spec["num_classes"]), int(spec["in_features"])))
    if kind == "bottleneck":
        return BottleneckHead(int(spec["in_features"]), int(spec["num_classes"]), int(spec["hidden"]),
                              float(spec["dropout"]))
    raise ValueError(f"unknown head type {kind!r}")
