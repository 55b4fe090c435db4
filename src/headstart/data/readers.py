"""Readers: image folders, text tables (CSV / TSV / JSONL / Parquet), in-memory arrays, built-ins.

Readers only read. They keep every row (even an empty text) so that validation can name it, and
they record whatever they leave out (stray files) in ``Dataset.skipped``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, MissingDependencyError
from .dataset import SPLITS, Dataset, Note, Skipped

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
TABLE_EXTENSIONS = {".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq"}
TEXT_COLUMNS = ("text", "sentence", "content", "review", "document", "body", "message")
LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "topic")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test"}
_JUNK = {".ds_store", "thumbs.db", "desktop.ini", ".ipynb_checkpoints", "__macosx"}
# Python's csv module refuses fields over 128 KiB; a long document in one cell is legitimate, but a
# bound keeps a file with a stray quote from being read whole into one field without limit.
CSV_FIELD_LIMIT = 64 << 20
# File signatures of formats people rename to .csv: what the file is, and what to do instead.
_EXPORT_CSV = "open it in Excel or LibreOffice and Save As \"CSV UTF-8\", then pass that file."
_MAGIC = {b"PK\x03\x04": ("an Excel workbook (.xlsx) or another zip archive", _EXPORT_CSV),
          b"\xd0\xcf\x11\xe0": ("an old Excel workbook (.xls) or another Office file", _EXPORT_CSV),
          b"PAR1": ("a Parquet file", "rename it to end in .parquet."),
          b"\x1f\x8b": ("a gzip-compressed file", "decompress it first (gunzip)."),
          b"%PDF": ("a PDF document", "export the table from its source as CSV.")}


def load_data(source: Any, *, labels: Sequence[Any] | None = None, modality: str | None = None,
              text_column: str | None = None, label_column: str | None = None,
              split_column: str | None = None, encoding: str | None = None, labelled: bool | None = True) -> Dataset:
    """Read a data set from a path (folder or table), ``builtin:<name>``, or Python objects.

    ``encoding``: of a text table; ``None`` reads UTF-8 (with or without a byte-order mark, or
    UTF-16 with one) and, when the file is none of these, says which encoding it probably is.
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

    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else folder
        rel = str(where.relative_to(root)) if where != root and where.is_relative_to(root) else str(where)
        skipped.append(Skipped(rel + "/", f"folder cannot be read ({exc.strerror or type(exc).__name__})"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
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
            elif not p.is_file():  # a FIFO or device would block the first read forever
                skipped.append(Skipped(rel, "not a regular file (a pipe, device or broken link)"))
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
    try:
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not _is_junk(d.name) and not d.name.startswith("."))
    except OSError as exc:
        raise DataError(f"Cannot read the folder '{root}': {exc.strerror or exc}.",
                        fix="check that it exists and that you may read it (permissions).") from None
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
    labels, notes = normalise_labels(labels, "class folder")
    return Dataset("image", items, labels, [str(Path(p).relative_to(root)) for p in items], source=str(root),
                   splits=splits if split_layout else None, skipped=skipped, notes=notes)


def normalise_labels(labels: list[str], kind: str) -> tuple[list[str], list[Note]]:
    """Class names in Unicode NFC, so that "é" typed as one code point or as "e" + accent (as macOS
    file names and some editors store it) is one class; a note names the spellings that merged."""
    spellings: dict[str, set[str]] = defaultdict(set)
    out = []
    for label in labels:
        nfc = unicodedata.normalize("NFC", label)
        spellings[nfc].add(label)
        out.append(nfc)
    merged = {k: v for k, v in spellings.items() if len(v) > 1}
    if not merged:
        return out, []
    where = tuple(f"'{k}' ({len(v)} spellings: {', '.join(ascii(x) for x in sorted(v))})" for k, v in merged.items())
    return out, [Note("unicode-labels", f"{len(merged)} {kind} name(s) were written in more than one Unicode form and "
                      "were merged into one class each", where,
                      "rename them to one spelling if they were meant to be different classes.")]


def _no_images(root: Path, files: Sequence[Any], skipped: list[Skipped]) -> None:
    if not files:
        seen = "; ".join(f"{s.where} ({s.reason})" for s in skipped[:5])
        raise DataError(f"No images found in '{root}'" + (f" (skipped: {seen})." if seen else "."),
                        fix=f"use files ending in {', '.join(sorted(IMAGE_EXTENSIONS))}.")


# -- tables ---------------------------------------------------------------------------------------

def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read '{path}': {exc.strerror or type(exc).__name__}.",
                        fix="check that the file exists and that you may read it (permissions).") from None


def _guess_encoding(data: bytes) -> str:
    """The likeliest 8-bit encoding of bytes that are not UTF-8: Windows-1252 (what Excel writes
    on Western Windows) when it decodes, else Latin-1 (which decodes anything)."""
    try:
        data.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


def _decode(path: Path, encoding: str | None) -> str:
    data = _read_bytes(path)
    for magic, (what, fix) in _MAGIC.items():
        if data.startswith(magic):
            raise DataError(f"{path.name} is {what}, not a text table.", fix=fix)
    if encoding is None:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # a UTF-16 byte-order mark (Excel's "Unicode text")
            encoding = "utf-16"
        else:
            encoding = "utf-8"
        explicit = False
    else:
        explicit = True
    try:
        codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
        return data.decode(codec)
    except LookupError:
        raise DataError(f"--encoding '{encoding}' is not an encoding Python knows.",
                        fix="use a name such as utf-8, cp1252, latin-1, utf-16 or shift_jis.") from None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        where = f"{path.name} line {line} is not valid {encoding} (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        if explicit:
            raise DataError(f"{where}.", fix="pass the file's real encoding with --encoding, or re-save it as UTF-8.") from None
        guess = _guess_encoding(data)
        start = data.rfind(b"\n", 0, exc.start) + 1
        stop = data.find(b"\n", exc.start)
        sample = data[start: stop if stop >= 0 else len(data)].decode(guess, errors="replace").strip()[:60]
        raise DataError(f"{where}; it is probably {guess}, which reads that line as {sample!r}.",
                        fix=f"pass --encoding {guess} (encoding='{guess}' in Python), or re-save the file as UTF-8.") from None


def _csv_rows(path: Path, text: str, delimiter: str) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """Rows of a CSV / TSV named by the line each starts on, refusing what would lose data: a quote
    that is never closed (it swallows the following lines into one cell) and rows with extra cells."""
    csv.field_size_limit(CSV_FIELD_LIMIT)
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(iter(lines), delimiter=delimiter)
    out: list[tuple[str, dict[str, Any]]] = []
    header: list[str] = []
    start = end = 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row:
                continue  # a blank line
            if not header:
                header = [unicodedata.normalize("NFC", c) for c in row]
                continue
            where = f"{path.name} row {len(out) + 1} (line {start})"
            if end > start and len(row) != len(header):
                raise DataError(
                    f"{path.name} line {start}: lines {start}-{end} were read as one row of {len(row)} cell(s) "
                    f"(the header has {len(header)}); a quote opened on line {start} is probably not closed.",
                    fix='close the quote, or write a quote inside a text as two quotes ("").')
            if len(row) > len(header) and any(cell.strip() for cell in row[len(header):]):
                raise DataError(
                    f"{where} has {len(row)} cells but the header has {len(header)} ({', '.join(header)}); "
                    f"the extra cells start with {row[len(header)][:40]!r}.",
                    fix='quote a text that contains the delimiter ("like, this"), or add the missing column name.')
            out.append((where, dict(zip(header, row))))
    except csv.Error as exc:
        raise DataError(f"{path.name} line {reader.line_num} cannot be parsed as CSV: {exc}.",
                        fix="check the quotes and delimiters on that line.") from None
    if out and end == len(lines):
        _check_last_row_closed(path, lines[start - 1:], delimiter, start, len(lines))
    return header, out


def _check_last_row_closed(path: Path, tail: list[str], delimiter: str, start: int, last: int) -> None:
    """A row that reaches the end of the file is parsed again strictly, which fails only when a
    quote opened in it is never closed: the lenient reader would take the rest of the file as one cell."""
    try:
        for _ in csv.reader(iter(tail), delimiter=delimiter, strict=True):
            pass
    except csv.Error as exc:
        if "unexpected end of data" not in str(exc):
            return  # strictness about something else (text after a closing quote), which lenient reading accepts
        raise DataError(
            f"{path.name} line {start} opens a quote that is never closed: everything from there to the end of the "
            f"file (line {last}) would be read as one cell.",
            fix='close the quote, or write a quote inside a text as two quotes ("").') from None


def _rows(path: Path, encoding: str | None) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """Column names and (where, row) pairs; ``where`` is "file.csv row 3 (line 4)"."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingDependencyError("pyarrow", "Reading Parquet files", extra="parquet") from None
        _read_bytes(path)  # an unreadable file is named like any other
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises its own types for damaged files
            raise DataError(f"{path.name} cannot be read as Parquet: {exc}.",
                            fix="re-export the file, or check that it is really Parquet.") from None
        rows = table.to_pylist()
        return list(table.column_names), [(f"{path.name} row {i + 1}", r) for i, r in enumerate(rows)]
    if suffix not in (".csv", ".tsv", ".txt", ".jsonl", ".ndjson"):
        raise DataError(f"'{path.name}' is not a table headstart can read.",
                        fix=f"use one of {', '.join(sorted(TABLE_EXTENSIONS))}, or a folder of images.")
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
            row = {unicodedata.normalize("NFC", k): v for k, v in row.items()}
            columns += [c for c in row if c not in columns]
            out.append((f"{path.name} line {number}", row))
        return columns, out
    return _csv_rows(path, text, "\t" if suffix == ".tsv" else ",")


def _pick(columns: list[str], wanted: str | None, defaults: Sequence[str], role: str, path: Path,
          flag: str, required: bool = True) -> str | None:
    if wanted is not None:
        wanted = unicodedata.normalize("NFC", wanted)
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


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), f"a {type(value).__name__}")


def read_table(path: str | Path, *, text_column: str | None = None, label_column: str | None = None,
               split_column: str | None = None, encoding: str | None = None, labelled: bool | None = True) -> Dataset:
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
        if value is not None and not isinstance(value, str):
            # str() of a list or a number is not the text anyone meant to classify
            raise DataError(f"{where}: the text '{tcol}' is {_json_kind(value)} ({json.dumps(value, default=str)[:60]}), "
                            "not a string.", fix="write each text as a string (in quotes in JSON).")
        texts.append("" if value is None else value)
        ids.append(where)
        if lcol is not None:
            label = row.get(lcol)
            if isinstance(label, (dict, list)):
                raise DataError(f"{where}: the label '{lcol}' is {_json_kind(label)}, not one class name.",
                                fix="give one label per row (a string or a number).")
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
    notes: list[Note] = []
    if lcol is not None:
        labels, notes = normalise_labels(labels, f"'{lcol}'")
    return Dataset("text", texts, labels if lcol else None, ids, source=str(path), splits=splits if scol else None,
                   notes=notes)


# -- Python objects -------------------------------------------------------------------------------

def from_arrays(inputs: Any, labels: Sequence[Any] | None = None, *, modality: str | None = None) -> Dataset:
    """Texts (a list of str), images (an array ``[N, H, W]`` / ``[N, H, W, C]`` or a list of arrays,
    PIL images or file paths with ``modality="image"``), with optional labels."""
    from PIL import Image

    from .dataset import to_rgb

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
            items = [np.asarray(to_rgb(x)) if isinstance(x, Image.Image) else x for x in items]
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
