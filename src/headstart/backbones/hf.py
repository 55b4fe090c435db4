"""Backbones from Hugging Face ``transformers``: a hub id or a local folder, text or vision.

``hf:sentence-transformers/all-MiniLM-L6-v2`` or ``hf:/path/to/folder``. Text encoders pool as the
folder's sentence-transformers config says (``1_Pooling/config.json``, ``modules.json``), else by
masked mean. Vision encoders (ViT, DINOv2, ConvNeXt, ResNet, ...) use the model's pooled output,
or the CLS token when there is none; preprocessing comes from the folder's image-processor config.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackboneError
from ._groups import layerwise_groups
from .base import Backbone, BackboneCard, InputSpec, preprocess_images

_T = TypeVar("_T")


def _read_json(folder: str, *parts: str) -> dict[str, Any] | list[Any] | None:
    """A JSON file inside ``folder``; paths taken from the folder's own files cannot leave it (checked on
    the names: a hub cache snapshot is made of symlinks into its blob store)."""
    base = os.path.abspath(folder)
    path = os.path.normpath(os.path.join(base, *parts))
    if os.path.commonpath([path, base]) != base:
        return None
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    return None


def _local_folder(model_id: str) -> str | None:
    """The folder holding the files: the id itself when it is a folder, else the hub cache."""
    if os.path.isdir(model_id):
        return model_id
    try:  # already downloaded? (does not touch the network)
        from huggingface_hub import snapshot_download

        return snapshot_download(model_id, local_files_only=True)
    except Exception:
        return None


# JSON files in which transformers looks for ``auto_map`` (classes to import from the folder's code).
_CODE_MAPS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
              "feature_extractor_config.json", "image_processor_config.json")


def custom_code_in(folder: str | os.PathLike[str]) -> list[str]:
    """What in ``folder`` would make transformers import code from it: ``*.py`` files and
    ``auto_map`` entries. Empty for a folder of pure data."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != ".git"]
        found += [os.path.relpath(os.path.join(root, f), folder) for f in files if f.endswith((".py", ".pyc", ".so"))]
    for name in _CODE_MAPS:
        try:
            data = _read_json(str(folder), name)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("auto_map"):
            found.append(f"{name} (auto_map)")
    return sorted(found)


def refuse_custom_code(folder: str | os.PathLike[str], label: str) -> None:
    code = custom_code_in(folder)
    if code:
        raise BackboneError(
            f"The Hugging Face model {label} ships its own Python code ({', '.join(code[:5])}); headstart never "
            "runs code that comes with a model.",
            fix="use a model whose architecture is built into transformers (config.json without auto_map, "
                "no *.py files), or a zoo backbone (`headstart backbones`).")


class HFBackbone(Backbone):
    """A transformers ``AutoModel`` behind the backbone contract.

    Never runs code shipped with a model: every transformers call passes ``trust_remote_code=False``
    and folders with ``*.py`` files or an ``auto_map`` are refused. ``local_files_only``: never reach
    the network (hub ids must already be in the local cache); ``safetensors_only``: refuse
    pickle-format weights. Loading a saved model sets both.
    """

    def __init__(self, model_id: str, *, name: str | None = None, max_length: int | None = None,
                 license: str = "see model card", source: str | None = None, local_files_only: bool = False,
                 safetensors_only: bool = False) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        label = f"'{name or 'hf:' + model_id}'"
        if os.path.isdir(model_id):  # checked before transformers reads anything from it
            refuse_custom_code(model_id, label)
        try:
            config = AutoConfig.from_pretrained(model_id, trust_remote_code=False, local_files_only=local_files_only)
            if getattr(config, "auto_map", None):
                refuse_custom_code(_local_folder(model_id) or model_id, label)
                raise BackboneError(f"The Hugging Face model {label} maps its classes to its own code (auto_map); "
                                    "headstart never runs code that comes with a model.",
                                    fix="use a model whose architecture is built into transformers.")
            folder = _local_folder(model_id)
            if folder is not None and folder != model_id:  # a hub snapshot: the same rule as a folder
                refuse_custom_code(folder, label)
            with _quiet_loading():
                self.model = AutoModel.from_pretrained(model_id, trust_remote_code=False,
                                                       local_files_only=local_files_only,
                                                       use_safetensors=True if safetensors_only else None).eval()
        except (OSError, ValueError) as exc:  # missing files, or transformers refusing remote code
            raise BackboneError(
                f"Cannot load the Hugging Face model '{model_id}': {exc}".split("\n")[0],
                fix="check the hub id or folder path; offline, pass a local folder (hf:/path/to/model)."
                if not local_files_only else
                f"make it available offline: `hf download {model_id}` on a connected machine (same HF_HOME).",
            ) from None
        self.model_id = model_id
        # The hub id when the files came from the hub (or its cache), so that a saved model names the
        # id rather than a cache path; None for a local folder.
        self.hub_id: str | None = None if os.path.isdir(model_id) else model_id
        # Vision configs carry image/channel sizes and no vocabulary; text configs the opposite.
        vision = not hasattr(config, "vocab_size") and (
            hasattr(config, "num_channels") or hasattr(config, "image_size"))
        name = name or f"hf:{model_id}"
        n_params = sum(p.numel() for p in self.model.parameters())
        if vision:
            self.modality = "image"
            spec, dim = self._configured(label, lambda: (self._vision_spec(model_id, config, local_files_only),
                                                         self._vision_dim(config)))
            self.tokenizer = None
            self.pooling, self.normalize = "pooler", False
        else:
            from transformers import AutoTokenizer

            self.modality = "text"
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=False,
                                                               local_files_only=local_files_only)
            except (OSError, ValueError) as exc:
                raise BackboneError(f"Cannot load the tokenizer of the Hugging Face model {label}: {exc}".split("\n")[0],
                                    fix="the folder needs its tokenizer files (tokenizer.json or vocab.txt).") from None
            self.pooling, self.normalize, st_len = self._configured(
                label, lambda: self._sentence_transformers_pooling(folder))
            limit = min(x for x in (max_length, st_len, getattr(self.tokenizer, "model_max_length", None),
                                    getattr(config, "max_position_embeddings", None)) if x)
            spec = InputSpec(max_length=int(limit))
            dim = int(config.hidden_size)
        self.card = BackboneCard(
            name=name, modality=self.modality, feature_dim=dim, source=source or f"Hugging Face {model_id}",
            license=license, input=spec, num_params=n_params,
            description=f"{config.model_type} encoder via transformers AutoModel, {self.pooling} pooling",
            extra={"model_type": config.model_type, "normalize": self.normalize},
        )

    # -- configuration helpers -------------------------------------------------------------
    @staticmethod
    def _configured(label: str, read: Callable[[], _T]) -> _T:
        """``read()``, with a malformed configuration file in the folder as a BackboneError."""
        try:
            return read()
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BackboneError(f"The Hugging Face model {label} has a malformed configuration file "
                                f"({type(exc).__name__}: {exc}).".split("\n")[0],
                                fix="restore the folder's JSON files (preprocessor_config.json, modules.json, "
                                    "1_Pooling/config.json) from the original model.") from None

    @staticmethod
    def _sentence_transformers_pooling(folder: str | None) -> tuple[str, bool, int | None]:
        if folder is None:
            return "mean", False, None
        modules = _read_json(folder, "modules.json") or []
        modules = [m for m in modules if isinstance(m, dict)] if isinstance(modules, list) else []
        normalize = any(m.get("type", "").endswith("Normalize") for m in modules)  # type: ignore[union-attr]
        pooling = "mean"
        for m in modules:  # type: ignore[union-attr]
            if m.get("type", "").endswith("Pooling"):
                cfg = _read_json(folder, str(m.get("path", "")), "config.json") or {}
                cfg = cfg if isinstance(cfg, dict) else {}
                if cfg.get("pooling_mode_cls_token"):  # type: ignore[union-attr]
                    pooling = "cls"
                elif cfg.get("pooling_mode_max_tokens"):  # type: ignore[union-attr]
                    pooling = "max"
        st = _read_json(folder, "sentence_bert_config.json") or {}
        limit = st.get("max_seq_length") if isinstance(st, dict) else None
        return pooling, normalize, limit if isinstance(limit, int) and limit > 0 else None  # type: ignore[union-attr]

    @staticmethod
    def _vision_spec(model_id: str, config: Any, local_files_only: bool) -> InputSpec:
        from transformers.utils import cached_file

        path = cached_file(model_id, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False,
                           local_files_only=local_files_only)
        proc: dict[str, Any] = {}
        if path:  # without one, fall back to the model config and [-1, 1] scaling
            with open(path, encoding="utf-8") as fh:
                proc = json.load(fh)
        size = proc.get("crop_size") or proc.get("size") or getattr(config, "image_size", 224)
        if isinstance(size, dict):
            size = size.get("height") or size.get("shortest_edge") or 224
        crop_pct = proc.get("crop_pct") or 1.0
        if proc.get("do_center_crop") and isinstance(proc.get("size"), dict) and "shortest_edge" in proc["size"]:
            crop_pct = int(size) / proc["size"]["shortest_edge"]
        resample = {2: "bilinear", 3: "bicubic", 0: "nearest"}.get(proc.get("resample", 2), "bilinear")
        return InputSpec(image_size=int(size), crop_pct=float(min(crop_pct, 1.0)),
                         mean=tuple(proc.get("image_mean", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
                         std=tuple(proc.get("image_std", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
                         interpolation=resample)

    @staticmethod
    def _vision_dim(config: Any) -> int:
        if getattr(config, "hidden_sizes", None):  # ConvNeXt, ResNet
            return int(config.hidden_sizes[-1])
        return int(config.hidden_size)

    # -- the contract --------------------------------------------------------------------
    def preprocess(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        if self.modality == "image":
            return {"pixel_values": preprocess_images(items, self.card.input)}
        assert self.tokenizer is not None
        enc = self.tokenizer(list(items), padding=True, truncation=True,
                             max_length=self.card.input.max_length, return_tensors="pt")
        return {k: enc[k] for k in ("input_ids", "attention_mask") if k in enc}

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(**inputs)
        if self.modality == "image":
            pooled = getattr(out, "pooler_output", None)
            feats = pooled if pooled is not None else out.last_hidden_state[:, 0]
            return feats.flatten(1)
        return pool_tokens(out.last_hidden_state, inputs["attention_mask"], self.pooling, self.normalize)

    def param_groups(self) -> list[list[nn.Parameter]]:
        return layerwise_groups(self.model)


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """Masked mean / max / CLS pooling of token states ``[N, L, D]`` -> ``[N, D]``."""
    if pooling == "cls":
        feats = hidden[:, 0]
    elif pooling == "max":
        feats = hidden.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(hidden.dtype).min).amax(1)
    else:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        feats = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(feats, dim=-1) if normalize else feats


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """transformers draws a "Loading weights" progress bar per model; headstart reports its own progress."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
