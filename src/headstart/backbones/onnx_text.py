"""A text encoder exported to ONNX, run with ONNX Runtime (feature extraction only).

The packaged paraphrase-MiniLM-L3-v2 ships without a tokenizer; the all-MiniLM-L6-v2 tokenizer
has the same uncased WordPiece vocabulary, so it is used for both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .base import Backbone, BackboneCard, InputSpec
from .hf import pool_tokens


class OnnxTextBackbone(Backbone):
    """Masked-mean pooled token states of an ONNX BERT-style encoder. Not trainable."""

    def __init__(self, onnx_path: str, tokenizer_dir: str, *, name: str, max_length: int = 128,
                 license: str = "Apache-2.0", source: str = "", num_params: int = 0) -> None:
        super().__init__()
        from transformers import AutoTokenizer

        from ._ort import import_onnxruntime
        from .hf import refuse_custom_code

        ort = import_onnxruntime(f"The backbone '{name}'")
        refuse_custom_code(tokenizer_dir, f"'{name}' (tokenizer)")

        self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        # The token-state output is the float output of rank 3 ([batch, tokens, hidden]).
        token_outputs = [o for o in self.session.get_outputs() if o.type == "tensor(float)" and len(o.shape) == 3]
        self.output_name = token_outputs[0].name
        dim = int(token_outputs[0].shape[-1])
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False, local_files_only=True)
        self.card = BackboneCard(
            name=name, modality="text", feature_dim=dim, source=source or onnx_path, license=license,
            input=InputSpec(max_length=max_length), num_params=num_params,
            description="ONNX text encoder run by ONNX Runtime, mean pooling (feature extraction only)",
        )

    def preprocess(self, items: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(items), padding=True, truncation=True,
                             max_length=self.card.input.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": torch.zeros_like(input_ids)}
        arrays = {k: np.ascontiguousarray(feeds[k].cpu().numpy().astype(np.int64)) for k in self.input_names}
        hidden = torch.from_numpy(self.session.run([self.output_name], arrays)[0])
        return pool_tokens(hidden, attention_mask.cpu(), "mean", normalize=False)

    def param_groups(self) -> list[list[torch.nn.Parameter]]:
        return []
