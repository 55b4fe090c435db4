"""The in-memory description of a labelled (or unlabelled) data set.

Items stay lazy: an image is a file path (decoded when needed) or a NumPy array; a text is a
string. ``ids`` name each item for messages ("photos/cat/003.jpg", "tickets.csv row 17").
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


@dataclass(frozen=True)
class Note:
    """Something a reader changed or noticed while reading (e.g. two spellings of one class name
    merged); validation reports it as a warning."""

    code: str
    message: str
    where: tuple[str, ...] = ()
    fix: str = ""


@dataclass
class Dataset:
    modality: Modality
    items: list[Any]
    labels: list[str] | None
    ids: list[str]
    source: str = "<memory>"
    splits: list[str] | None = None
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
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
            notes=list(self.notes),
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


def array_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Pixel values of any dtype as uint8, keeping the brightness they mean: 16-bit values are
    scaled by 1/257, floats in [0, 1] by 255, booleans to 0/255; other ranges are clipped to 0-255
    when they fit it and stretched min-max when they do not."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        return (arr.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    values = arr.astype(np.float64)
    if not values.size:
        return values.astype(np.uint8)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        scaled = values * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        scaled = values
    elif arr.dtype.kind in "iu" and lo >= 0.0 and hi <= 65535.0:
        scaled = values / 257.0  # a 16-bit image held in a wider integer type
    else:
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB with its brightness kept: 16-bit and 32-bit integer ("I;16", "I")
    and float ("F") greys are rescaled (PIL's own conversion clips them to white), and transparent
    pixels are composited on white (PIL's drops alpha and shows whatever colour they hold)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(array_to_uint8(np.asarray(img))).convert("RGB")
    if mode == "RGBa":  # premultiplied alpha: PIL undoes it
        img, mode = img.convert("RGBA"), "RGBA"
    elif mode == "La":  # premultiplied alpha that PIL cannot convert: undo it here
        la = np.asarray(img).astype(np.float32)
        grey = np.where(la[..., 1] > 0, la[..., 0] * 255.0 / np.maximum(la[..., 1], 1), 0)
        img = Image.fromarray(np.stack([np.clip(grey, 0, 255), la[..., 1]], -1).astype(np.uint8), "LA")
        mode = "LA"
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(item: ImageItem, where: str) -> Image.Image:
    """Decode an image file or array to RGB; a bad file raises a DataError naming it."""
    if isinstance(item, np.ndarray):
        arr = array_to_uint8(item)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        return to_rgb(Image.fromarray(arr))
    if not Path(item).is_file():  # a FIFO or device would block the read forever
        raise DataError(f"Cannot read the image '{where}': it is not a regular file (a pipe, device, folder or "
                        "broken link).", fix="pass image files only.")
    try:
        with Image.open(item) as img:
            img.load()
            return to_rgb(img)
    except Exception as exc:  # PIL raises many types for bad files
        raise DataError(
            f"Cannot read the image '{where}': {type(exc).__name__}: {exc}.",
            fix="delete or re-export this file (or run `headstart check` to list every bad file).",
        ) from None
