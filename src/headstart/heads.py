"""Classification heads, rebuilt from a small JSON spec stored in the artifact.

Each head type registers a builder under its ``spec()["type"]`` in :data:`HEADS`; :func:`build_head`
looks the type up there, so a new head is one class plus one ``HEADS.register(...)`` call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry

HEADS: Registry[Callable[[dict[str, Any]], nn.Module]] = Registry("head type", ValueError)


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


def with_temperature(head: nn.Module, temperature: float) -> nn.Module:
    """``head`` with its logits divided by ``temperature`` more: unchanged at 1, and a head that is
    already temperature-scaled keeps one wrapper with the product (a saved head holds one level of
    each wrapper)."""
    if temperature == 1.0:
        return head
    if isinstance(head, TemperatureScaled):
        return TemperatureScaled(head.inner, float(head.temperature) * temperature).eval()
    return TemperatureScaled(head, temperature).eval()


class PriorAdjusted(nn.Module):
    """A trained head re-weighted to the class proportions of the domain it is deployed on.

    Adds log(q_y / p_y) to each logit (q: the deployment domain's class proportions, p: those the
    head was trained under); softmax renormalises, so the probabilities become p(y | x) q_y / p_y,
    normalised. The offsets are a buffer, so they travel in the safetensors file and inside an
    ONNX graph. It wraps a temperature-scaled head (calibrate first, then move the prior).
    """

    def __init__(self, head: nn.Module, log_weights: torch.Tensor) -> None:
        super().__init__()
        self.inner = head
        self.register_buffer("log_weights", torch.as_tensor(log_weights, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.log_weights

    def spec(self) -> dict[str, Any]:
        inner = self.inner.spec()
        return {"type": "prior", "inner": inner, "in_features": inner["in_features"],
                "num_classes": inner["num_classes"]}


class ConSEHead(nn.Module):
    """ConSE as a deployable head on the image backbone's features: ImageNet head -> softmax ->
    top-k -> convex mix of the ImageNet names' text embeddings -> cosine to the class embeddings."""

    def __init__(self, source: nn.Linear, source_text: torch.Tensor, class_text: torch.Tensor,
                 top_k: int = 10, scale: float = 20.0) -> None:
        super().__init__()
        self.source = nn.Linear(source.in_features, source.out_features)
        self.source.load_state_dict(source.state_dict())
        self.register_buffer("source_text", F.normalize(source_text.float(), dim=1))
        self.register_buffer("class_text", F.normalize(class_text.float(), dim=1))
        self.top_k, self.scale = int(top_k), float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.source(x).float().softmax(1)
        top, idx = p.topk(self.top_k, dim=1)
        semantic = ((top / top.sum(1, keepdim=True)).unsqueeze(2) * self.source_text[idx]).sum(1)
        return self.scale * F.normalize(semantic, dim=1) @ self.class_text.T

    def spec(self) -> dict[str, Any]:
        return {"type": "conse", "in_features": self.source.in_features, "source_classes": self.source.out_features,
                "text_dim": self.class_text.shape[1], "num_classes": self.class_text.shape[0], "top_k": self.top_k,
                "scale": self.scale}


def build_head(spec: dict[str, Any]) -> nn.Module:
    """An untrained head of the spec's shape (the artifact's weights are loaded into it afterwards)."""
    kind = spec.get("type")
    if kind not in HEADS:
        raise ValueError(f"unknown head type {kind!r}")
    return HEADS.get(kind)(spec)


# The spec fields beyond type / in_features / num_classes that each head type's builder reads: the
# artifact validates exactly these before building anything.
HEAD_SPEC_FIELDS = {"linear": (), "mlp": ("hidden", "dropout"), "bottleneck": ("hidden", "dropout"), "cosine": (),
                    "conse": ("source_classes", "text_dim", "top_k", "scale"), "temperature": ("temperature", "inner"),
                    "prior": ("inner",)}
HEADS.register("linear", lambda s: LinearHead(int(s["in_features"]), int(s["num_classes"])))
HEADS.register("mlp", lambda s: MLPHead(int(s["in_features"]), int(s["num_classes"]), int(s["hidden"]),
                                        float(s["dropout"])))
HEADS.register("bottleneck", lambda s: BottleneckHead(int(s["in_features"]), int(s["num_classes"]), int(s["hidden"]),
                                                      float(s["dropout"])))
HEADS.register("cosine", lambda s: CosineHead(torch.zeros(int(s["num_classes"]), int(s["in_features"]))))
HEADS.register("conse", lambda s: ConSEHead(nn.Linear(int(s["in_features"]), int(s["source_classes"])),
                                            torch.zeros(int(s["source_classes"]), int(s["text_dim"])),
                                            torch.zeros(int(s["num_classes"]), int(s["text_dim"])), int(s["top_k"]),
                                            float(s["scale"])))
HEADS.register("temperature", lambda s: TemperatureScaled(build_head(s["inner"]), float(s["temperature"])))
HEADS.register("prior", lambda s: PriorAdjusted(build_head(s["inner"]), torch.zeros(int(s["num_classes"]))))
