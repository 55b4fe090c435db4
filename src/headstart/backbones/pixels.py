"""``raw-pixels``: a parameter-free "backbone" whose features are the pixels themselves.

The no-transfer reference for ranking: a pre-trained network that does not beat raw pixels on
the user's data is not worth its cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .base import Backbone, BackboneCard, InputSpec, normalise, resize_crop

SIZE = 32


class PixelBackbone(Backbone):
    def __init__(self) -> None:
        super().__init__()
        self.card = BackboneCard(
            name="raw-pixels", modality="image", feature_dim=SIZE * SIZE * 3, source="none (no pre-training)",
            license="n/a", input=InputSpec(image_size=SIZE, crop_pct=1.0, mean=(0.0,) * 3, std=(1.0,) * 3,
                                           interpolation="bilinear"),
            description=f"{SIZE}x{SIZE} RGB pixels in [0, 1], flattened: the no-transfer reference")

    def preprocess(self, items: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        pixels = np.stack([resize_crop(img, self.card.input) for img in items])
        return {"pixel_values": normalise(torch.from_numpy(pixels), self.card.input)}

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return pixel_values.flatten(1)

    def param_groups(self) -> list[list[torch.nn.Parameter]]:
        return []
