"""``CachedFeatures``: a parameter-free backbone whose inputs are rows of frozen features.

It lets the one training loop train heads, bottlenecks and domain-alignment losses on cached
features (seconds on a CPU) with exactly the code that fine-tunes a full backbone. It is never
saved: the artifact keeps the real backbone that produced the features, plus the trained head.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.dataset import Dataset
from .base import Backbone, BackboneCard, InputSpec


class CachedFeatures(Backbone):
    def __init__(self, source: BackboneCard) -> None:
        super().__init__()
        self.card = BackboneCard(name=f"{source.name} (cached features)", modality="features",  # type: ignore[arg-type]
                                 feature_dim=source.feature_dim, source=source.source, license=source.license,
                                 input=InputSpec())

    def preprocess(self, items: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        return {"features": torch.as_tensor(np.stack(items), dtype=torch.float32)}

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return features

    def param_groups(self) -> list[list[torch.nn.Parameter]]:
        return []


def feature_dataset(features: np.ndarray, like: Dataset) -> Dataset:
    """Rows of ``features`` as a Dataset with the labels and ids of ``like``."""
    return Dataset("features", list(features), like.labels, list(like.ids), source=like.source)
