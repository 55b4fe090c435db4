"""Order a transformer's parameters from input to output by the layer index in their names."""

from __future__ import annotations

import re

from torch import nn

_LAYER = re.compile(r"\.(?:layer|layers|blocks|block|stages)\.(\d+)\.")
_EMBED = re.compile(r"(^|\.)(embeddings?|patch_embed|stem|embedder)\b")


def layerwise_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """[embeddings], [layer 0], [layer 1], ..., [everything after the last layer].

    Works for BERT / ViT / DINOv2 / ConvNeXt-style naming; parameters that match neither an
    embedding nor a numbered layer go to the last group (final norms, poolers).
    """
    embed: list[nn.Parameter] = []
    layers: dict[int, list[nn.Parameter]] = {}
    rest: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        match = _LAYER.search("." + name)
        if match:
            layers.setdefault(int(match.group(1)), []).append(param)
        elif _EMBED.search(name):
            embed.append(param)
        else:
            rest.append(param)
    groups = [embed] + [layers[i] for i in sorted(layers)] + [rest]
    return [g for g in groups if g]
