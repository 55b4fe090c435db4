"""The in-memory description of a labelled (or unlabelled) data set.

Items stay lazy: an image is a file path (decoded when needed) or a NumPy array; a text is a
string. ``ids`` name each item for messages ("photos/cat/003.jpg", "tickets.csv row 17").
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np
from PIL import Image

from ..errors import DataError

Modality = Literal["image", "text", "features"]  # "features": rows of a frozen backbone's output
ImageItem = Union[str, np.ndarray]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Skipped:
    """Something a reader left out, kept so that nothing is dropped silently."""

    where: str
    reason: str


@dataclass
class Dataset:
    modality: Modality
    items: list[Any]
    labels: list[str] | None
    ids: list[str]
    source: str = "<memory>"
    splits: list[str] | None = None
    skipped: list[Skipped] = field(default_factory=list)
    _hashes: list[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.items)
        if len(self.ids) != n or (self.labels is not None and len(self.labels) != n) or (
            self.splits is not None and len(self.splits) != n
        ):
            raise DataError(f"{self.source}: items, labels, ids and splits must have the same length.")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def label_names(self) -> list[str]:
        """Sorted class names: a deterministic order that does not depend on file listing order."""
        return sorted(set(self.labels or []), key=_natural_key)

    def class_counts(self) -> Counter[str]:
        return Counter(self.labels or [])

    def load(self, index: int) -> Any:
        """The decoded item: a PIL RGB image or a string."""
        item = self.items[index]
        if self.modality in ("text", "features"):
            return item
        return load_image(item, self.ids[index])

    def content_hashes(self) -> list[str]:
        """SHA-256 of each item's content (file bytes, text, or array bytes), computed once."""
        if self._hashes is None:
            self._hashes = [content_hash(item, self.modality) for item in self.items]
        return self._hashes

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> Dataset:
        idx = [int(i) for i in indices]
        hashes = self._hashes
        return Dataset(
            modality=self.modality,
            items=[self.items[i] for i in idx],
            labels=[self.labels[i] for i in idx] if self.labels is not None else None,
            ids=[self.ids[i] for i in idx],
            source=f"{self.source}[{name}]" if name else self.source,
            splits=[self.splits[i] for i in idx] if self.splits is not None else None,
            skipped=list(self.skipped),
            _hashes=[hashes[i] for i in idx] if hashes is not None else None,
        )


def _natural_key(name: str) -> tuple[Any, ...]:
    # "2" < "10", and numeric-looking labels sort as numbers.
    import re

    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def content_hash(item: Any, modality: Modality) -> str:
    """SHA-256 of what the model sees: text, image file bytes, or array shape + bytes."""
    h = hashlib.sha256()
    if isinstance(item, np.ndarray):
        h.update(f"{item.shape}{item.dtype}".encode())
        h.update(np.ascontiguousarray(item).tobytes())
    elif modality == "text":
        h.update(str(item).encode("utf-8"))
    else:  # an image path: hash the bytes, so a renamed copy is still a duplicate
        with open(item, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_image(item: ImageItem, where: str) -> Image.Image:
    """Decode an image file or array to RGB; a bad file raises a DataError naming it."""
    if isinstance(item, np.ndarray):
        arr = item
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    try:
        with Image.open(item) as img:
            img.load()
            return img.convert("RGB")
    except Exception as exc:  # PIL raises many types for bad files
        raise DataError(
            f"Cannot read the image '{where}': {type(exc).__name__}: {exc}.",
            fix="delete or re-export this file (or run `headstart check` to list every bad file).",
        ) from None
