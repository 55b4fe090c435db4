"""Stand-alone predictor for a headstart edge export: needs only onnxruntime, numpy and Pillow
(and ``tokenizers`` for a text model). No torch, no headstart.

``headstart export RUN --target edge`` copies this file as ``predict.py`` beside ``model.onnx`` and
``edge.json``. From a shell::

    python predict.py photo.jpg other.png          # image model: one JSON line per file
    python predict.py "refund please" "late parcel" # text model: one JSON line per text
    python predict.py --top 3 photo.jpg

From Python (with the folder on ``sys.path`` or the file copied into a project)::

    from predict import Predictor
    model = Predictor("path/to/edge")
    probabilities = model.predict_proba(["photo.jpg"])   # [N, len(model.labels)]

Image preprocessing is the one the model was trained with (headstart's ``resize_crop``): decode to
RGB (transparent pixels on white, 16-bit and float greys rescaled), resize the shorter side to
``image_size / crop_pct`` with the recorded filter, centre-crop ``image_size``; scaling and
normalisation are inside the ONNX graph.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FORMAT = "headstart-edge"
FORMAT_VERSION = 1
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}


def array_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Pixel values of any dtype as uint8, keeping the brightness they mean (as headstart reads them)."""
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
        scaled = values / 257.0
    else:
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: integer and float greys rescaled, transparency composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(array_to_uint8(np.asarray(img))).convert("RGB")
    if mode == "RGBa":
        img, mode = img.convert("RGBA"), "RGBA"
    elif mode == "La":
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


def load_image(item: Any) -> Image.Image:
    """A path, a PIL image or an array -> RGB PIL image."""
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, np.ndarray):
        arr = array_to_uint8(item)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        return to_rgb(Image.fromarray(arr))
    with Image.open(item) as img:
        img.load()
        return to_rgb(img)


def resize_crop(img: Image.Image, image_size: int, crop_pct: float, interpolation: str) -> np.ndarray:
    """RGB image -> ``uint8 [S, S, 3]``: shorter side to ``S / crop_pct``, centre crop ``S``."""
    resize_to = int(round(image_size / crop_pct))
    img = img.convert("RGB")
    w, h = img.size
    scale = resize_to / min(w, h)
    nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
    img = img.resize((nw, nh), _RESAMPLE[interpolation])
    left, top = (nw - image_size) // 2, (nh - image_size) // 2
    return np.asarray(img.crop((left, top, left + image_size, top + image_size)), dtype=np.uint8)


class Predictor:
    """The exported model in ``folder`` (``model.onnx`` + ``edge.json`` [+ ``tokenizer.json``])."""

    def __init__(self, folder: str | Path | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.folder = Path(folder) if folder is not None else Path(__file__).resolve().parent
        config_file = self.folder / "edge.json"
        if not config_file.is_file():
            raise ValueError(f"{self.folder} holds no edge.json: point --model at the folder that "
                             "`headstart export RUN --target edge` wrote (RUN/onnx/edge).")
        try:
            self.config = json.loads(config_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config_file} is not valid JSON ({exc}); export again with "
                             "`headstart export RUN --target edge`.") from None
        if self.config.get("format") != FORMAT or self.config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{config_file} is not a {FORMAT} v{FORMAT_VERSION} file; "
                             "export again with `headstart export RUN --target edge`.")
        self.labels: list[str] = list(self.config["labels"])
        self.modality: str = self.config["modality"]
        self.pre: dict[str, Any] = self.config["preprocessing"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.folder / self.config["model"]), options,
                                            providers=["CPUExecutionProvider"])
        self._check_config(config_file)
        self.tokenizer = None
        if self.modality == "text":
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.folder / self.pre["tokenizer"]))
            tok.no_padding()
            tok.enable_truncation(max_length=int(self.pre["max_length"]))
            tok.enable_padding(pad_id=int(self.pre["pad_id"]), pad_token=str(self.pre["pad_token"]))
            self.tokenizer = tok

    def _check_config(self, config_file: Path) -> None:
        """edge.json must describe the model beside it: its image size and its number of labels."""
        classes = self.session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.labels):
            raise ValueError(f"{config_file} lists {len(self.labels)} labels but the model gives {classes} "
                             "probabilities; export again with `headstart export RUN --target edge`.")
        if self.modality == "image":
            size = self.session.get_inputs()[0].shape[1]
            if isinstance(size, int) and int(self.pre["image_size"]) != size:
                raise ValueError(f"{config_file} says {self.pre['image_size']} px but the model takes {size} px; "
                                 "export again with `headstart export RUN --target edge`.")

    def feeds(self, items: list[Any]) -> dict[str, np.ndarray]:
        """The ONNX inputs for raw items (image paths / PIL images / arrays, or texts)."""
        if self.modality == "image":
            size, crop, interp = int(self.pre["image_size"]), float(self.pre["crop_pct"]), str(self.pre["interpolation"])
            return {"pixels": np.stack([resize_crop(load_image(x), size, crop, interp) for x in items])}
        assert self.tokenizer is not None
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise ValueError(f"item {i} is {type(t).__name__}, not a text.")
            if not t.strip():
                raise ValueError(f"item {i} is empty or whitespace only: there is nothing to classify.")
        # Text that is not valid UTF-8 (a lone surrogate from a badly decoded argument) becomes U+FFFD.
        texts = [t.encode("utf-8", "replace").decode("utf-8") for t in items]
        encodings = self.tokenizer.encode_batch(texts)
        return {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}

    def predict_proba(self, items: list[Any]) -> np.ndarray:
        """``[N, len(labels)]`` class probabilities (``[0, len(labels)]`` for no items)."""
        items = list(items)
        if not items:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self.session.run(None, self.feeds(items))[0]

    def predict(self, items: list[Any], top: int = 1) -> list[dict[str, Any]]:
        """For each item: its top label, confidence and the ``top`` best labels with probabilities."""
        out = []
        for p in self.predict_proba(items):
            order = np.argsort(-p)[:max(1, top)]
            out.append({"label": self.labels[order[0]], "confidence": float(p[order[0]]),
                        "top": [{"label": self.labels[i], "probability": float(p[i])} for i in order]})
        return out


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def expand(items: list[str], modality: str) -> list[str]:
    """Image folders become their image files (recursively, sorted); everything else stays."""
    if modality != "image":
        return list(items)
    out: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            out += sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(item)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify images or texts with the model in this folder. One JSON "
                                                 "line per item; an item that cannot be read gets a line with "
                                                 "\"error\" and the others go on (exit code 1 if any failed).")
    parser.add_argument("items", nargs="+", help="image files or folders (image model) or texts (text model)")
    parser.add_argument("--top", type=_positive, default=1, help="how many labels to list per item")
    parser.add_argument("--batch", type=_positive, default=32, help="items per forward pass")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--model", default=None, help="the export folder (default: this file's folder)")
    args = parser.parse_args(argv)
    try:
        model = Predictor(args.model, threads=args.threads)
    except (OSError, ValueError) as exc:  # a missing or foreign folder
        print(f"error: {exc}", file=sys.stderr)
        return 2
    items = expand(args.items, model.modality)
    failed = 0
    for start in range(0, len(items), args.batch):
        chunk = items[start:start + args.batch]
        try:
            results: list[Any] = model.predict(chunk, top=args.top)
        except (OSError, ValueError, Image.DecompressionBombError):  # one bad item: find it, keep the rest
            results = []
            for item in chunk:
                try:
                    results += model.predict([item], top=args.top)
                except (OSError, ValueError, Image.DecompressionBombError) as exc:
                    results.append({"error": f"{type(exc).__name__}: {exc}"})
        for item, result in zip(chunk, results):
            failed += "error" in result
            print(json.dumps({"input": item, **result}))
    if failed:
        print(f"error: {failed} of {len(items)} item(s) could not be read (lines with \"error\")", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
