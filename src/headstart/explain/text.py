"""Text attributions over words: Integrated Gradients on the embedding layer (Captum, gradients;
the word-piece attributions summed per word) and KernelSHAP over words (Captum, model-agnostic:
it only runs the model, so it explains ONNX backbones too)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..backbones.base import Backbone
from .base import Prepared, Settings, Subject


def embedding_layer(backbone: Backbone) -> nn.Module | None:
    """The token-embedding layer of a Hugging Face text backbone, or None."""
    model = getattr(backbone, "model", None)
    get = getattr(model, "get_input_embeddings", None)
    tok = getattr(backbone, "tokenizer", None)
    if get is None or tok is None or not getattr(tok, "is_fast", False):
        return None
    layer = get()
    return layer if isinstance(layer, nn.Module) else None


def integrated_gradients_text(subject: Subject, prep: Prepared, targets: np.ndarray,
                              settings: Settings) -> list[np.ndarray]:
    from captum.attr import LayerIntegratedGradients

    backbone = subject.backbone
    tok = backbone.tokenizer  # type: ignore[attr-defined]
    layer = embedding_layer(backbone)
    assert layer is not None

    def logits(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return subject.logits(input_ids=input_ids, attention_mask=attention_mask)

    lig = LayerIntegratedGradients(logits, layer)
    special = set(tok.all_special_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[np.ndarray] = []
    for i, text in enumerate(prep.texts):
        ids_of_words = prep.word_ids[i] or []
        if not ids_of_words:
            out.append(np.zeros(0, dtype=np.float32))
            continue
        enc = tok(text, truncation=True, max_length=backbone.card.input.max_length, return_tensors="pt")
        ids, mask = enc["input_ids"].to(subject.device), enc["attention_mask"].to(subject.device)
        # The baseline keeps the special tokens and blanks every word: "no words" as the model reads it.
        base = torch.tensor([[t if t in special else pad for t in ids[0].tolist()]], device=subject.device)
        with torch.enable_grad():
            a = lig.attribute(ids, baselines=base, additional_forward_args=(mask,), target=int(targets[i]),
                              n_steps=settings.steps, internal_batch_size=settings.batch_size)
        per_token = a.detach().sum(-1)[0].cpu().numpy()
        word_of = enc.word_ids(0)
        index = {w: k for k, w in enumerate(ids_of_words)}
        scores = np.zeros(len(ids_of_words), dtype=np.float32)
        for t, w in enumerate(word_of):
            if w is not None and w in index:
                scores[index[w]] += per_token[t]
        out.append(scores)
    return out


def kernel_shap_text(subject: Subject, prep: Prepared, targets: np.ndarray, settings: Settings) -> list[np.ndarray]:
    from captum.attr import KernelShap

    out: list[np.ndarray] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        for i in range(len(prep)):
            n = len(prep.spans[i])
            if n == 0:
                out.append(np.zeros(0, dtype=np.float32))
                continue

            def proba(z: torch.Tensor, i: int = i) -> torch.Tensor:
                texts = [prep.text_from(i, row.cpu().numpy() > 0.5) for row in z]
                return torch.from_numpy(subject.text_proba(texts, settings.batch_size))

            shap = KernelShap(proba)
            a = shap.attribute(torch.ones(1, n), baselines=torch.zeros(1, n), target=int(targets[i]),
                               n_samples=settings.samples, perturbations_per_eval=settings.batch_size)
            out.append(a[0].detach().cpu().numpy().astype(np.float32))
    return out
