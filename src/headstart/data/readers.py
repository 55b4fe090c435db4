"""Readers: image folders, text tables (CSV / TSV / JSONL / Parquet), in-memory arrays, built-ins.

Readers only read. They keep every row (even an empty text) so that validation can name it, and
they record whatever they leave out (stray files) in ``Dataset.skipped``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, MissingDependencyError
from .dataset import SPLITS, Dataset, Skipped

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
TABLE_EXTENSIONS = {".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq"}
TEXT_COLUMNS = ("text", "sentence", "content", "review", "document", "body", "message")
LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "topic")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test"}
_JUNK = {".ds_store", "thumbs.db", "desktop.ini", ".ipynb_checkpoints", "__macosx"}


def load_data(source: Any, *, labels: Sequence[Any] | None = None, modality: str | None = None,
              text_column: str | None = None, label_column: str | None = None,
              split_column: str | None = None, encoding: str = "utf-8", labelled: bool | None = True) -> Dataset:
    """Read a data set from a path (folder or table), ``builtin:<name>``, or Python objects.

    ``labelled=None``: labels are optional (class folders or a label column are read when present;
    domain-adaptation targets use this)."""
    if isinstance(source, Dataset):
        return source
    if isinstance(source, (str, os.PathLike)) and labels is None:
        text = str(source)
        if text.startswith("builtin:"):
            from .builtin import load_builtin

            return load_builtin(text[len("builtin:"):])
        path = Path(text)
        if not path.exists():
            raise DataError(f"'{text}' does not exist.",
                            fix="pass an image folder, a .csv/.tsv/.jsonl/.parquet file, or builtin:<name>.")
        if path.is_dir():
            return read_image_folder(path, labelled=labelled)
        return read_table(path, text_column=text_column, label_column=label_column,
                          split_column=split_column, encoding=encoding, labelled=labelled)
    return from_arrays(source, labels, modality=modality)


# -- image folders -------------------------------------------------------------------------------

def _is_junk(name: str) -> bool:
    return name.lower() in _JUNK or name.startswith("._")


def _scan_images(folder: Path, root: Path, skipped: list[Skipped]) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in sorted(dirnames):
            if _is_junk(d) or d.startswith("."):
                skipped.append(Skipped(str(Path(dirpath, d).relative_to(root)) + "/", "hidden or system folder"))
        dirnames[:] = sorted(d for d in dirnames if not (_is_junk(d) or d.startswith(".")))
        for f in sorted(filenames):
            p = Path(dirpath, f)
            rel = str(p.relative_to(root))
            if _is_junk(f) or f.startswith("."):
                skipped.append(Skipped(rel, "hidden or system file"))
            elif p.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(Skipped(rel, f"not an image extension ({p.suffix or 'none'})"))
            else:
                found.append(p)
    return found


def read_image_folder(root: str | Path, *, labelled: bool | None = True) -> Dataset:
    """``root/<class>/*.jpg`` or ``root/{train,val,test}/<class>/*.jpg``; unlabelled: ``root/*.jpg``.
    ``labelled=None``: class folders when there are any, else unlabelled."""
    root = Path(root)
    skipped: list[Skipped] = []
    items: list[str] = []
    labels: list[str] = []
    splits: list[str] = []
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not _is_junk(d.name) and not d.name.startswith("."))
    split_layout = bool(subdirs) and all(d.name.lower() in SPLIT_NAMES for d in subdirs)
    if labelled is None:
        labelled = bool(subdirs)
    if not labelled or not subdirs:
        files = _scan_images(root, root, skipped)
        if labelled and files:
            raise DataError(
                f"'{root}' holds images but no class sub-folders, so there are no labels.",
                fix="put each class in its own sub-folder (root/cat/*.jpg, root/dog/*.jpg).")
        _no_images(root, files, skipped)
        return Dataset("image", [str(f) for f in files], None, [str(f.relative_to(root)) for f in files],
                       source=str(root), skipped=skipped)
    for entry in sorted(root.iterdir()):  # files beside the class folders carry no label
        if entry.is_file():
            skipped.append(Skipped(entry.name, "file outside any class folder (no label)"))
        elif _is_junk(entry.name) or entry.name.startswith("."):
            skipped.append(Skipped(entry.name + "/", "hidden or system folder"))
    groups = [(d, SPLIT_NAMES[d.name.lower()]) for d in subdirs] if split_layout else [(root, None)]
    for base, split in groups:
        if split is not None:
            for entry in sorted(base.iterdir()):
                if entry.is_file():
                    skipped.append(Skipped(str(entry.relative_to(root)), "file outside any class folder (no label)"))
        for class_dir in sorted(d for d in base.iterdir() if d.is_dir()):
            if _is_junk(class_dir.name) or class_dir.name.startswith("."):
                continue
            for f in _scan_images(class_dir, root, skipped):
                items.append(str(f))
                labels.append(class_dir.name)
                splits.append(split or "")
    _no_images(root, items, skipped)
    return Dataset("image", items, labels, [str(Path(p).relative_to(root)) for p in items], source=str(root),
                   splits=splits if split_layout else None, skipped=skipped)


def _no_images(root: Path, files: Sequence[Any], skipped: list[Skipped]) -> None:
    if not files:
        seen = "; ".join(f"{s.where} ({s.reason})" for s in skipped[:5])
        raise DataError(f"No images found in '{root}'" + (f" (skipped: {seen})." if seen else "."),
                        fix=f"use files ending in {', '.join(sorted(IMAGE_EXTENSIONS))}.")


# -- tables ---------------------------------------------------------------------------------------

def _decode(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path.name} line {line} is not valid {encoding} (byte 0x{data[exc.start]:02x} at offset {exc.start}).",
            fix="re-save the file as UTF-8, or pass --encoding with the file's real encoding (e.g. latin-1).",
        ) from None


def _rows(path: Path, encoding: str) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """Column names and (where, row) pairs; ``where`` is "file.csv row 3 (line 4)"."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingDependencyError("pyarrow", "Reading Parquet files", extra="parquet") from None
        table = pq.read_table(path)
        rows = table.to_pylist()
        return list(table.column_names), [(f"{path.name} row {i + 1}", r) for i, r in enumerate(rows)]
    text = _decode(path, encoding)
    if suffix in (".jsonl", ".ndjson"):
        columns: list[str] = []
        out = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path.name} line {number} is not valid JSON: {exc.msg}.",
                                fix="write one JSON object per line.") from None
            if not isinstance(row, dict):
                raise DataError(f"{path.name} line {number} is a JSON {type(row).__name__}, not an object.",
                                fix='write one object per line, e.g. {"text": "...", "label": "..."}.')
            columns += [c for c in row if c not in columns]
            out.append((f"{path.name} line {number}", row))
        return columns, out
    if suffix not in (".csv", ".tsv", ".txt"):
        raise DataError(f"'{path.name}' is not a table headstart can read.",
                        fix=f"use one of {', '.join(sorted(TABLE_EXTENSIONS))}, or a folder of images.")
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
    columns = list(reader.fieldnames or [])
    out = []
    for number, row in enumerate(reader, start=1):
        out.append((f"{path.name} row {number} (line {reader.line_num})", row))
    return columns, out


def _pick(columns: list[str], wanted: str | None, defaults: Sequence[str], role: str, path: Path,
          flag: str, required: bool = True) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{path.name} has no column '{wanted}' for the {role}; its columns are: "
                            f"{', '.join(columns) or '(none)'}.", fix=f"pass {flag} with one of those names.")
        return wanted
    lower = {c.lower(): c for c in columns}
    for d in defaults:
        if d in lower:
            return lower[d]
    if required:
        raise DataError(f"{path.name} has no {role} column (looked for {', '.join(defaults)}); its columns are: "
                        f"{', '.join(columns) or '(none)'}.", fix=f"pass {flag} NAME.")
    return None


def read_table(path: str | Path, *, text_column: str | None = None, label_column: str | None = None,
               split_column: str | None = None, encoding: str = "utf-8", labelled: bool | None = True) -> Dataset:
    path = Path(path)
    columns, rows = _rows(path, encoding)
    if not rows:
        raise DataError(f"{path.name} has no data rows.", fix="check that the file is not empty.")
    tcol = _pick(columns, text_column, TEXT_COLUMNS, "text", path, "--text-column")
    lcol = _pick(columns, label_column, LABEL_COLUMNS, "label", path, "--label-column", required=bool(labelled))
    scol = _pick(columns, split_column, ("split",), "split", path, "--split-column", required=split_column is not None)
    texts, labels, splits, ids = [], [], [], []
    for where, row in rows:
        value = row.get(tcol)
        texts.append("" if value is None else str(value))
        ids.append(where)
        if lcol is not None:
            label = row.get(lcol)
            if label is None or str(label).strip() == "":
                raise DataError(f"{where} has an empty '{lcol}'.",
                                fix="fill in the label or remove the row (unlabelled rows go in a separate file).")
            labels.append(str(label).strip())
        if scol is not None:
            raw = str(row.get(scol) or "").strip().lower()
            if raw not in SPLIT_NAMES:
                raise DataError(f"{where} has split '{row.get(scol)}' in column '{scol}'.",
                                fix="use train, val (or validation) and test.")
            splits.append(SPLIT_NAMES[raw])
    return Dataset("text", texts, labels if lcol else None, ids, source=str(path), splits=splits if scol else None)


# -- Python objects -------------------------------------------------------------------------------

def from_arrays(inputs: Any, labels: Sequence[Any] | None = None, *, modality: str | None = None) -> Dataset:
    """Texts (a list of str), images (an array ``[N, H, W]`` / ``[N, H, W, C]`` or a list of arrays,
    PIL images or file paths with ``modality="image"``), with optional labels."""
    from PIL import Image

    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "uif":
        if inputs.ndim not in (3, 4):
            raise DataError(f"An image array must be [N, H, W] or [N, H, W, C]; got shape {inputs.shape}.",
                            fix="reshape flat images, e.g. X.reshape(-1, 28, 28).")
        items: list[Any] = list(inputs)
        mod = "image"
    else:
        items = list(inputs)
        if not items:
            raise DataError("No inputs were given.", fix="pass at least one text or image.")
        first = items[0]
        if modality == "image" or isinstance(first, (np.ndarray, Image.Image)):
            mod = "image"
            items = [np.asarray(x.convert("RGB")) if isinstance(x, Image.Image) else x for x in items]
            items = [str(x) if isinstance(x, os.PathLike) else x for x in items]
        elif all(isinstance(x, str) for x in items):
            mod = "text"
        else:
            bad = next(i for i, x in enumerate(items) if not isinstance(x, str))
            raise DataError(f"Input {bad} is a {type(items[bad]).__name__}; expected texts (str) or images.",
                            fix="pass a list of strings, or image arrays with modality='image'.")
    if modality is not None and modality != mod:
        raise DataError(f"modality='{modality}' was given but the inputs look like {mod}s.")
    if labels is not None:
        labels = [str(x) for x in (labels.tolist() if isinstance(labels, np.ndarray) else labels)]
        if len(labels) != len(items):
            raise DataError(f"{len(items)} inputs but {len(labels)} labels.", fix="pass one label per input.")
    return Dataset(mod, items, labels, [f"item {i}" for i in range(len(items))])  # type: ignore[arg-type]


__all__ = ["load_data", "read_image_folder", "read_table", "from_arrays", "SPLITS"]
