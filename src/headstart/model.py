"""``TransferModel``: a backbone and a head, with the labels and the record of how it was made."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .backbones.base import Backbone
from .data.dataset import Dataset
from .data.readers import load_data
from .errors import DataError
from .evaluation.ood import OODScorer


class TransferModel:
    """Predicts class probabilities for raw inputs (texts, image paths, arrays or a Dataset).

    ``info`` is the JSON-able record written to ``headstart.json`` (strategy, metrics, data...).
    """

    def __init__(self, backbone: Backbone, head: nn.Module, label_names: Sequence[str],
                 info: dict[str, Any] | None = None, backbone_trained: bool = False,
                 ood: OODScorer | None = None) -> None:
        self.backbone = backbone.eval()
        self.head = head.eval()
        self.label_names = list(label_names)
        self.info = info or {}
        self.backbone_trained = backbone_trained
        self.ood = ood  # out-of-scope scorer on the features; None for models saved without one

    @property
    def modality(self) -> str:
        return self.backbone.card.modality

    def _as_dataset(self, inputs: Any) -> Dataset:
        if isinstance(inputs, Dataset):
            data = inputs
        elif isinstance(inputs, (str, Path)):
            data = load_data(inputs, labelled=False)
        else:
            data = load_data(list(inputs) if not isinstance(inputs, np.ndarray) else inputs,
                             modality="image" if self.modality == "image" else None)
        if data.modality != self.modality:
            raise DataError(f"This model takes {self.modality}s but got {data.modality}s from {data.source}.")
        return data

    def features(self, inputs: Any, *, cache_dir: str | Path | None = None, use_cache: bool = False,
                 batch_size: int = 64, device: str | None = None, progress: bool = False) -> np.ndarray:
        from .features import extract_features

        return extract_features(self.backbone, self._as_dataset(inputs), cache_dir=cache_dir, use_cache=use_cache,
                                batch_size=batch_size, device=device, progress=progress)

    @torch.inference_mode()
    def proba_from_features(self, feats: np.ndarray) -> np.ndarray:
        head = self.head.cpu().eval()
        return head(torch.as_tensor(feats, dtype=torch.float32)).float().softmax(1).numpy()

    def predict_proba(self, inputs: Any, **kwargs: Any) -> np.ndarray:
        """``[N, num_classes]`` probabilities, columns in ``label_names`` order."""
        return self.proba_from_features(self.features(inputs, **kwargs))

    def iter_predict_proba(self, inputs: Any, *, chunk_size: int = 512, batch_size: int = 64,
                           device: str | None = None) -> Iterator[tuple[range, np.ndarray]]:
        """Probabilities chunk by chunk (``(indices, proba)``), so that large inputs stream:
        only one chunk of decoded inputs and features is in memory at a time."""
        data = self._as_dataset(inputs)
        for start in range(0, len(data), chunk_size):
            idx = range(start, min(start + chunk_size, len(data)))
            yield idx, self.predict_proba(data.subset(idx), batch_size=batch_size, device=device)

    def predict_scored(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(proba, ood_score, unsure)``: probabilities, the out-of-scope score of each item (higher is
        further from the training data) and whether it lies beyond the threshold set on validation.
        The last two are None when the model has no scorer."""
        feats = self.features(inputs, **kwargs)
        proba = self.proba_from_features(feats)
        if self.ood is None:
            return proba, None, None
        scores = self.ood.score(feats)
        return proba, scores, self.ood.unsure(scores)

    def predict(self, inputs: Any, **kwargs: Any) -> list[str]:
        return [self.label_names[i] for i in self.predict_proba(inputs, **kwargs).argmax(1)]

    def explain(self, items: Any, method: str | None = None, *, target: int | str | None = None,
                settings: Any = None) -> list[Any]:
        """Why the model gives each item its class: one :class:`~headstart.explain.Explanation` per
        item (a heat map over the image, or a score per word of the text).

        ``method``: a name in ``headstart.explain.EXPLAINERS`` (``occlusion``, ``grad-cam``, ``integrated-gradients``,
        ``kernel-shap``); default: the one measured most faithful for this modality that the model
        supports. ``target``: explain this class (index or name) instead of the predicted one.
        """
        from .explain import Settings, check_method, explain_items

        if method is not None:  # an unknown or unsupported method fails before any item is read
            check_method(method, self.backbone)
        if isinstance(items, (str, Path)) and (self.modality == "text" or not Path(items).is_dir()):
            items = [items]
        if not isinstance(items, (Dataset, np.ndarray)) and len(items) == 0:
            raise DataError("No items to explain.", fix="pass at least one image or text.")
        self._refuse_other_modality(items)
        data = self._as_dataset(items)
        if len(data) == 0:
            raise DataError(f"No items to explain in {data.source}.", fix="pass at least one image or text.")
        decoded = [data.load(i) for i in range(len(data))]
        ids = data.ids
        if self.modality == "image" and not isinstance(items, (Dataset, np.ndarray, str, Path)) \
                and all(isinstance(x, (str, Path)) for x in items):
            ids = [str(x) for x in items]  # a file is named by its path, not by its place in the list
        return explain_items(self.backbone, self.head, self.label_names, decoded, ids, method=method,
                             target=target, settings=settings or Settings())

    def _refuse_other_modality(self, items: Any) -> None:
        """A text given to an image model (or an image file to a text model) is named, not misread."""
        if isinstance(items, (Dataset, np.ndarray)):
            return
        from .data.readers import IMAGE_EXTENSIONS

        for i, item in enumerate(items):
            if not isinstance(item, (str, Path)):
                continue
            looks_like_image = Path(str(item)).suffix.lower() in IMAGE_EXTENSIONS and len(str(item)) < 4096
            if self.modality == "image" and not looks_like_image and not Path(str(item)).exists():
                raise DataError(f"Item {i} ({str(item)[:40]!r}) is a text, but this model takes images.",
                                fix="pass image files or arrays, or explain it with a text model.")
            if self.modality == "text" and looks_like_image and Path(str(item)).is_file():
                raise DataError(f"Item {i} ('{item}') is an image file, but this model takes texts.",
                                fix="pass the texts themselves, or explain it with an image model.")

    def save(self, path: str | Path, *, overwrite: bool = False, extra: Any = None) -> Path:
        """Save to the folder ``path`` (atomically). An existing model there is replaced only with
        ``overwrite=True``; a folder that is not a headstart model is never replaced. ``extra(folder)``,
        if given, writes more files into the new folder before it is swapped in."""
        from .artifact import save_model

        return save_model(self, path, overwrite=overwrite, extra=extra)

    def __repr__(self) -> str:
        return (f"TransferModel(backbone={self.backbone.card.name!r}, "
                f"strategy={self.info.get('strategy', {}).get('type')!r}, classes={len(self.label_names)})")


def load_model(path: str | Path) -> TransferModel:
    """Rebuild a :class:`TransferModel` from an artifact folder (checked by :func:`headstart.artifact.load_parts`)."""
    from .artifact import load_parts

    backbone, head, label_names, info, trained, ood = load_parts(path)
    return TransferModel(backbone, head, label_names, info, backbone_trained=trained, ood=ood)
