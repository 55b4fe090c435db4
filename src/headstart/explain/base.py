"""What an explanation is, how a method plugs in, and the model calls every method shares.

A method gets a :class:`Subject` (the backbone and the head, on one device) and prepared items,
and returns one attribution per item over the item's *units*: input pixels for an image (after
the backbone's resize and crop), words for a text (the words inside the backbone's token window).
Words, not word pieces, are the unit for every text method so that methods can be compared on
the same removals and a reader sees whole words highlighted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backbones.base import Backbone, normalise, resize_crop
from ..errors import ConfigError
from ..registry import Registry


@dataclass(frozen=True)
class Settings:
    """Knobs shared by the methods; the defaults are what ``explain`` and the report use."""

    steps: int = 32           # Integrated Gradients: points on the path from the baseline
    samples: int = 200        # KernelSHAP: coalitions evaluated per item
    grid: int = 8             # KernelSHAP on images: the image is cut into grid x grid cells
    occlusion_grid: int = 14  # occlusion: patches of 1/occlusion_grid of the side (occlusion_grid ** 2 passes)
    batch_size: int = 32
    seed: int = 0


@dataclass
class Prepared:
    """Items turned into what the methods read.

    Images: ``pixels`` ``uint8 [N, S, S, 3]`` (the crop the backbone sees) and ``x`` the normalised
    ``float [N, 3, S, S]``. Texts: ``texts`` as given, ``spans`` the character span of every word
    inside the token window, and ``dropped`` the number of words past the window per text.
    """

    modality: str
    pixels: np.ndarray | None = None
    x: torch.Tensor | None = None
    texts: list[str] = field(default_factory=list)
    spans: list[list[tuple[int, int]]] = field(default_factory=list)
    word_ids: list[list[int] | None] = field(default_factory=list)  # the tokenizer's word index of each span
    dropped: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pixels) if self.modality == "image" else len(self.texts)  # type: ignore[arg-type]

    def words(self, i: int) -> list[str]:
        return [self.texts[i][a:b] for a, b in self.spans[i]]

    def text_from(self, i: int, keep: np.ndarray) -> str:
        """The text of item ``i`` with only the words where ``keep`` is true (one space between them):
        a removal the tokenizer sees exactly as the words' own tokens."""
        return " ".join(w for w, k in zip(self.words(i), keep) if k)


class Subject:
    """The model an explanation looks into: ``backbone`` then ``head`` (logits), in eval mode."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        self.backbone = backbone.eval()
        self.head = head.eval()
        params = list(backbone.parameters())
        self.device = params[0].device if params else torch.device("cpu")
        self.head.to(self.device)

    @property
    def modality(self) -> str:
        return self.backbone.card.modality

    def logits(self, **inputs: torch.Tensor) -> torch.Tensor:
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return self.head(self.backbone(**inputs)).float()

    def image_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(pixel_values=x)

    @torch.no_grad()
    def image_proba(self, x: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        return np.concatenate([self.image_logits(x[i:i + batch_size]).softmax(1).cpu().numpy()
                               for i in range(0, len(x), batch_size)]) if len(x) else np.empty((0, 0))

    @torch.no_grad()
    def text_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.backbone.preprocess(list(texts[i:i + batch_size]))
            out.append(self.logits(**enc).softmax(1).cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, 0))

    def prepare(self, items: Sequence[Any]) -> Prepared:
        """Raw items (PIL images or strings, as ``Dataset.load`` gives them) -> :class:`Prepared`."""
        if self.modality == "image":
            spec = self.backbone.card.input
            pixels = np.stack([resize_crop(img, spec) for img in items])
            return Prepared("image", pixels=pixels, x=normalise(torch.from_numpy(pixels), spec))
        texts = [str(t) for t in items]
        found = [word_spans(self.backbone, t) for t in texts]
        return Prepared("text", texts=texts, spans=[f[0] for f in found], word_ids=[f[1] for f in found],
                        dropped=[f[2] for f in found])


def word_spans(backbone: Backbone, text: str) -> tuple[list[tuple[int, int]], list[int] | None, int]:
    """Character spans of the words the backbone reads (inside its token window) and how many words
    fall past the window (with the tokenizer's index of each word). Words are the tokenizer's pre-tokenizer words (punctuation apart); without
    a fast tokenizer, whitespace-separated words up to the window's length."""
    tok = getattr(backbone, "tokenizer", None)
    limit = backbone.card.input.max_length or 512
    if tok is not None and getattr(tok, "is_fast", False):
        full = tok(text, add_special_tokens=True, truncation=False, verbose=False)  # longer than the window is expected
        cut = tok(text, add_special_tokens=True, truncation=True, max_length=limit)
        words = [w for w in dict.fromkeys(full.word_ids()) if w is not None]
        whole, seen = Counter(full.word_ids()), Counter(cut.word_ids())
        kept = {w for w in words if seen[w] == whole[w]}  # a word the window cuts in two was not read whole
        ids = [w for w in words if w in kept]
        spans = [(int(full.word_to_chars(w)[0]), int(full.word_to_chars(w)[1])) for w in ids]
        return spans, ids, len(words) - len(spans)
    found = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    return found[:limit], None, max(0, len(found) - limit)


Attribute = Callable[[Subject, Prepared, np.ndarray, Settings], list[np.ndarray]]


@dataclass(frozen=True)
class Explainer:
    """An attribution method: ``run(subject, prepared, targets, settings)`` -> one array per item
    (``[S, S]`` over pixels, or ``[words]``); higher = more evidence for the target class.

    ``unsupported(backbone)`` returns why the method cannot explain a model with this backbone
    (and what to use instead), or None when it can.
    """

    name: str
    modalities: tuple[str, ...]
    run: Attribute
    description: str
    unsupported: Callable[[Backbone], str | None] = lambda backbone: None
    model_agnostic: bool = False
    seeded: bool = False  # the result depends on ``Settings.seed`` (sampling)


EXPLAINERS: Registry[Explainer] = Registry("explanation method", ConfigError)


def register_explainer(explainer: Explainer) -> Explainer:
    EXPLAINERS.register(explainer.name, explainer)
    return explainer


def needs_gradients(backbone: Backbone) -> str | None:
    """Gradient methods need a PyTorch backbone (ONNX backbones and exports run without gradients)."""
    if not backbone.trainable:
        return (f"the backbone '{backbone.card.name}' runs without gradients here (ONNX or raw features), and this "
                "method follows gradients")
    return None
