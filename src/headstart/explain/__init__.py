"""Attributions: why a model gives an item its class, by methods from Captum (the PyTorch
attribution library), registered in ``EXPLAINERS``.

- ``grad-cam`` (images): Grad-CAM on the last convolution that keeps 1/8 of the image's side.
- ``integrated-gradients`` (images: over pixels from a black image; texts: on the token
  embeddings from a text with every word blanked, summed per word).
- ``occlusion`` (images): how much the class's log-probability falls when each square patch (1/14 of
  the side: the faithfulness curves' cell) is replaced by the blurred image; model-agnostic, 197
  passes per image, batched.
- ``kernel-shap`` (images: over a grid of cells, removed = blurred; texts: over words, removed =
  left out): model-agnostic, so it also explains models whose backbone runs without gradients
  (ONNX backbones).

How faithful each is was measured, not assumed (``bench/explain_faithfulness.py``); the default per
modality follows from those measurements by the rule in :mod:`headstart.explain.measured`, and an
explanation by a method that was not verified faithful for its modality carries a note that says so.
:func:`explain_items` is the one entry point; ``TransferModel.explain`` calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from ..backbones.base import Backbone
from ..errors import ConfigError, DataError
from .base import EXPLAINERS, Explainer, Prepared, Settings, Subject, needs_gradients, register_explainer
from .explanation import Explanation
from .image import grad_cam, integrated_gradients, kernel_shap_image, last_conv, occlusion
from .measured import note, preferred
from .text import embedding_layer, integrated_gradients_text, kernel_shap_text


def _grad_cam_unsupported(backbone: Backbone) -> str | None:
    reason = needs_gradients(backbone)
    if reason is None and last_conv(backbone) is None:
        reason = (f"the backbone '{backbone.card.name}' has no late convolutional stage, and Grad-CAM weighs the "
                  "maps of one")
    return reason


def _ig_unsupported(backbone: Backbone) -> str | None:
    reason = needs_gradients(backbone)
    if reason is None and backbone.card.modality == "text" and embedding_layer(backbone) is None:
        reason = (f"the text backbone '{backbone.card.name}' has no token-embedding layer with a fast tokenizer "
                  "to follow gradients into")
    return reason


def _ig(subject: Subject, prep: Prepared, targets: np.ndarray, settings: Settings) -> list[np.ndarray]:
    run = integrated_gradients if prep.modality == "image" else integrated_gradients_text
    return run(subject, prep, targets, settings)


def _kernel_shap(subject: Subject, prep: Prepared, targets: np.ndarray, settings: Settings) -> list[np.ndarray]:
    run = kernel_shap_image if prep.modality == "image" else kernel_shap_text
    return run(subject, prep, targets, settings)


register_explainer(Explainer(
    "grad-cam", ("image",), grad_cam,
    "Grad-CAM on the last convolution that keeps 1/8 of the image's side: the regions holding the evidence for "
    "the class (one pass)",
    unsupported=_grad_cam_unsupported))
register_explainer(Explainer(
    "integrated-gradients", ("image", "text"), _ig,
    "Integrated Gradients: pixels from a black image, or words on the token embeddings (fine-grained, "
    "a few dozen passes)", unsupported=_ig_unsupported))
register_explainer(Explainer(
    "occlusion", ("image",), occlusion,
    "Occlusion: how much the class's probability falls when each patch (1/14 of the side) is blurred away, by "
    "running the model only (works for ONNX backbones; 197 passes, batched)", model_agnostic=True))
register_explainer(Explainer(
    "kernel-shap", ("image", "text"), _kernel_shap,
    "KernelSHAP: Shapley values over image cells or words, by running the model only (works for ONNX "
    "backbones; a few hundred passes)", model_agnostic=True, seeded=True))


def _methods_of(modality: str) -> list[str]:
    return [n for n in EXPLAINERS if modality in EXPLAINERS.get(n).modalities]


# The default per modality, by the rule in measured.py (the cheapest method verified faithful in
# every measured case; else the one that beat random on the most curves).
DEFAULT_METHODS = {m: preferred(_methods_of(m), m) for m in ("image", "text")}


def check_method(method: str, backbone: Backbone) -> Explainer:
    """The method's entry, or a ConfigError that names what the model can use instead."""
    entry = EXPLAINERS.get(method)
    modality = backbone.card.modality
    usable = usable_methods(backbone)
    if modality not in entry.modalities:
        raise ConfigError(f"The method '{method}' explains {' and '.join(m + 's' for m in entry.modalities)}, but this "
                          f"model takes {modality}s.", fix=f"use one of: {', '.join(usable)}.")
    reason = entry.unsupported(backbone)
    if reason is not None:
        raise ConfigError(f"The method '{method}' cannot explain this model: {reason}.",
                          fix=f"use one of: {', '.join(usable)}.")
    return entry


def usable_methods(backbone: Backbone) -> list[str]:
    """The methods that can explain a model with this backbone, the default among them first."""
    modality = backbone.card.modality
    names = [n for n in _methods_of(modality) if EXPLAINERS.get(n).unsupported(backbone) is None]
    default = preferred(names, modality)
    return sorted(names, key=lambda n: n != default)


def faithfulness_note(method: str, backbone: Backbone) -> str:
    """"" when ``method`` was verified faithful for the backbone's modality; else a sentence that
    says so and names the closest option the model supports."""
    return note(method, backbone.card.modality, usable_methods(backbone))


def default_method(backbone: Backbone) -> str:
    usable = usable_methods(backbone)
    if not usable:  # every backbone can at least be run, so kernel-shap always fits
        raise ConfigError(f"No explanation method supports the backbone '{backbone.card.name}'.")
    return usable[0]


def explain_items(backbone: Backbone, head: nn.Module, label_names: Sequence[str], items: Sequence[Any],
                  ids: Sequence[str] | None = None, *, method: str | None = None, target: int | str | None = None,
                  settings: Settings | None = None) -> list[Explanation]:
    """Explain each of ``items`` (PIL images or strings, decoded) for its predicted class, or for
    ``target`` (a class index or name) when given."""
    settings = settings or Settings()
    if len(items) == 0:
        raise DataError("No items to explain.", fix="pass at least one image or text.")
    method = method or default_method(backbone)
    entry = check_method(method, backbone)
    subject = Subject(backbone, head)
    prep = subject.prepare(items)
    proba = (subject.image_proba(prep.x, settings.batch_size) if prep.modality == "image"  # type: ignore[arg-type]
             else subject.text_proba(prep.texts, settings.batch_size))
    if target is None:
        targets = proba.argmax(1)
    else:
        labels = list(label_names)
        if isinstance(target, str):
            if target not in labels:
                raise ConfigError(f"The class '{target}' is not one of the model's classes.",
                                  fix=f"choose one of: {', '.join(labels)}.")
            target = labels.index(target)
        if not 0 <= int(target) < len(labels):
            raise ConfigError(f"The class index {target} is out of range (the model has {len(labels)} classes).")
        targets = np.full(len(prep), int(target))
    scores = entry.run(subject, prep, targets, settings)
    ids = list(ids) if ids is not None else [f"item {i}" for i in range(len(prep))]
    caveat = faithfulness_note(method, backbone)
    out = []
    for i, s in enumerate(scores):
        t = int(targets[i])
        out.append(Explanation(
            item=ids[i], modality=prep.modality, method=method, label=str(label_names[t]), target=t,
            probability=float(proba[i, t]), scores=np.asarray(s, dtype=np.float32),
            image=prep.pixels[i] if prep.pixels is not None else None,
            text=prep.texts[i] if prep.modality == "text" else "",
            spans=prep.spans[i] if prep.modality == "text" else [],
            dropped=prep.dropped[i] if prep.modality == "text" else 0, note=caveat))
    return out


__all__ = ["EXPLAINERS", "DEFAULT_METHODS", "Explainer", "Explanation", "Settings", "Subject", "Prepared",
           "explain_items", "check_method", "usable_methods", "default_method", "faithfulness_note",
           "register_explainer"]
