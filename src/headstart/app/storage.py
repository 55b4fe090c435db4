"""Files of the web app: uploads checked before anything is extracted, immutable data versions, relabelling.

An upload lands in a staging folder first. A zip is inspected entry by entry from its central
directory before one byte is extracted (absolute paths, ``..``, symlinks, encrypted entries, too
many files, too many bytes, compression ratios of a zip bomb), then extracted with the bytes
counted again (the directory can lie). The data is read with :func:`headstart.data.load_data`;
only when it reads does a new version folder appear, by one rename. A refused upload leaves the
project as it was.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from ..data import Dataset, load_data
from ..data.readers import TABLE_EXTENSIONS
from ..errors import ConfigError, DataError

TABLE_FILE = "data.csv"
UPLOAD_FOLDER = "upload"


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int = 200 * 1024 * 1024
    max_files: int = 20_000
    max_unpacked_bytes: int = 2 * 1024 * 1024 * 1024
    max_file_bytes: int = 50 * 1024 * 1024
    max_ratio: int = 200  # a zip bomb compresses far better than photos or text do

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"UploadLimits `{f.name}` must be an integer >= 1, got {value!r}.")


class Refused(Exception):
    """An upload or edit that is refused, with the message the page shows."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def safe_name(name: str) -> str:
    base = PurePosixPath(name.replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "upload"
    return base[:100]


def upload_kind(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix == ".zip":
        return "zip"
    if suffix in TABLE_EXTENSIONS:
        return "table"
    raise Refused(f"'{filename}' is neither a .zip of class folders nor a table "
                  f"({', '.join(sorted(TABLE_EXTENSIONS))}). Zip the image folders (one folder per class), "
                  "or export the spreadsheet as CSV.", 415)


def check_zip(path: Path, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """The entries to extract, or :class:`Refused` naming the first entry that is not acceptable."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise Refused(f"'{path.name}' is not a readable zip archive.") from None
    with zf:
        infos = zf.infolist()
    if len(infos) > limits.max_files:
        raise Refused(f"The zip holds {len(infos)} entries; the limit is {limits.max_files}. "
                      "Upload fewer images (or ask the operator to raise --max-files).", 413)
    total = 0
    keep = []
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            raise Refused(f"The zip entry '{name}' points outside the folder (an absolute path or '..'); "
                          "nothing was extracted.")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise Refused(f"The zip entry '{name}' is a symbolic link; links are not accepted. Zip the files "
                          "themselves.")
        if info.flag_bits & 0x1:
            raise Refused(f"The zip entry '{name}' is encrypted; upload an archive without a password.")
        if info.is_dir():
            continue
        if info.file_size > limits.max_file_bytes:
            raise Refused(f"The zip entry '{name}' unpacks to {info.file_size} bytes; the limit per file is "
                          f"{limits.max_file_bytes}.", 413)
        if info.file_size > 1024 * 1024 and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise Refused(f"The zip entry '{name}' is compressed {info.file_size // max(info.compress_size, 1)} "
                          f"to 1, more than {limits.max_ratio} to 1: it looks like a zip bomb and was not "
                          "extracted.", 413)
        total += info.file_size
        if total > limits.max_unpacked_bytes:
            raise Refused(f"The zip unpacks to more than {limits.max_unpacked_bytes} bytes; upload less data.", 413)
        keep.append(info)
    if not keep:
        raise Refused(f"'{path.name}' holds no files.")
    return keep


def extract_zip(path: Path, dest: Path, limits: UploadLimits) -> None:
    """Extract the checked entries under ``dest``, counting the bytes actually written."""
    infos = check_zip(path, limits)
    root = dest.resolve()
    written = 0
    with zipfile.ZipFile(path) as zf:
        for info in infos:
            parts = [p for p in PurePosixPath(info.filename.replace("\\", "/")).parts if p not in ("", ".")]
            target = root.joinpath(*parts)
            if not target.resolve().is_relative_to(root):
                raise Refused(f"The zip entry '{info.filename}' points outside the folder.")
            target.parent.mkdir(parents=True, exist_ok=True)
            seen = 0
            with zf.open(info) as src, open(target, "xb") as out:
                while chunk := src.read(1 << 20):
                    seen += len(chunk)
                    written += len(chunk)
                    if seen > max(info.file_size, 0) or written > limits.max_unpacked_bytes:
                        raise Refused(f"The zip entry '{info.filename}' unpacks to more bytes than its header "
                                      "says; the archive was refused.", 413)
                    out.write(chunk)
    _unwrap_single_folder(dest)


def _unwrap_single_folder(dest: Path) -> None:
    """A zip made by right-clicking a folder holds that one folder: its class folders are one level down."""
    for junk in ("__MACOSX",):
        shutil.rmtree(dest / junk, ignore_errors=True)
    entries = [e for e in dest.iterdir() if not e.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        subs = [e for e in inner.iterdir() if not e.name.startswith(".")]
        if subs and all(e.is_dir() for e in subs):
            tmp = dest / f".unwrap-{os.getpid()}"
            inner.rename(tmp)
            for e in tmp.iterdir():
                e.rename(dest / e.name)
            tmp.rmdir()


def check_readable(data: Dataset, what: str) -> None:
    """What makes an upload unusable for training, said before it becomes a version."""
    if data.labels is None:
        raise Refused(f"{what} has no labels: put each class in its own folder, or choose the label column.")
    classes = sorted(set(data.labels))
    if len(classes) < 2:
        raise Refused(f"{what} has only one class ('{classes[0] if classes else ''}'); a classifier needs at "
                      "least two. Add a folder (or rows) for each other class.")


def table_columns(path: Path, encoding: str | None = None) -> list[str]:
    from ..data.readers import _rows

    try:
        columns, _ = _rows(path, encoding)
    except DataError as err:
        raise Refused(err.message + (f" Fix: {err.fix}" if err.fix else "")) from None
    return columns


def write_table(data: Dataset, dest: Path) -> None:
    with open(dest / TABLE_FILE, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip(data.items, data.labels or []))


def build_version(staged: Path, dest: Path, *, text_column: str | None = None, label_column: str | None = None,
                  encoding: str | None = None, limits: UploadLimits = UploadLimits()) -> tuple[str, Dataset]:
    """Turn a staged upload into the version folder ``dest`` (made by one rename at the end).
    Returns the version kind and its data as read from the new folder."""
    kind = upload_kind(staged.name)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        if kind == "zip":
            data_dir = tmp / "data"
            data_dir.mkdir()
            extract_zip(staged, data_dir, limits)
            try:
                data = load_data(data_dir)
            except DataError as err:
                raise Refused(f"The zip's images cannot be read as class folders: {err.message}"
                              + (f" Fix: {err.fix}" if err.fix else "")) from None
            check_readable(data, f"'{staged.name}'")
            version_kind = "images"
        else:
            (tmp / UPLOAD_FOLDER).mkdir()
            kept = tmp / UPLOAD_FOLDER / staged.name
            shutil.copyfile(staged, kept)
            try:
                data = load_data(kept, text_column=text_column or None, label_column=label_column or None,
                                 encoding=encoding or None)
            except DataError as err:
                raise Refused(err.message + (f" Fix: {err.fix}" if err.fix else "")) from None
            check_readable(data, f"'{staged.name}'")
            write_table(data, tmp)
            version_kind = "table"
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version_kind, load_data(data_path(dest, version_kind))


def data_path(version_dir: Path, kind: str) -> Path:
    """What :func:`headstart.data.load_data` reads for a version."""
    return version_dir / "data" if kind == "images" else version_dir / TABLE_FILE


def relabel(parent_dir: Path, kind: str, changes: dict[str, str], dest: Path) -> Dataset:
    """A new version folder ``dest``: the parent's data with ``changes`` (item id -> new label).
    Image files are hard-linked (copied where links are not possible); the parent is untouched."""
    data = load_data(data_path(parent_dir, kind))
    labels = list(data.labels or [])
    index = {item_id: i for i, item_id in enumerate(data.ids)}
    unknown = [k for k in changes if k not in index]
    if unknown:
        raise Refused(f"Unknown item(s): {', '.join(unknown[:5])}. Reload the page: the data may have changed.")
    for item_id, label in changes.items():
        label = str(label).strip()
        if not label or "/" in label or "\\" in label or label in (".", "..") or len(label) > 100:
            raise Refused(f"'{label}' cannot be a class name (empty, too long, or with a slash).")
        labels[index[item_id]] = label
    if len(set(labels)) < 2:
        raise Refused("After these changes only one class would be left; a classifier needs at least two.")
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        if kind == "images":
            root = parent_dir / "data"
            for i, item in enumerate(data.items):
                rel = Path(data.ids[i])
                # The class is the folder right under the root (or under train/val/test).
                parts = list(rel.parts)
                pos = 1 if data.splits else 0
                parts[pos] = labels[i]
                target = tmp / "data" / Path(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                k = 1
                while target.exists():  # the new class may hold a file of the same name: keep both
                    target = target.with_name(f"{rel.stem}-{k}{rel.suffix}")
                    k += 1
                src = root / rel
                try:
                    os.link(src, target)
                except OSError:
                    shutil.copyfile(src, target)
        else:
            write_table(Dataset("text", list(data.items), labels, list(data.ids)), tmp)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_data(data_path(dest, kind))


def materialise_builtin(spec: str, staging: Path) -> Path:
    """A built-in example data set as the file a person would upload: a zip of class folders
    (images) or a CSV (texts). Goes through the same checks as any upload."""
    from io import BytesIO

    data = load_data(f"builtin:{spec}")
    if data.modality == "image":
        out = staging / f"{safe_name(spec.replace(':', '-'))}.zip"
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for i in range(len(data)):
                buf = BytesIO()
                img = data.load(i)
                img.save(buf, format="PNG")
                zf.writestr(f"{data.labels[i]}/{i:05d}.png", buf.getvalue())  # type: ignore[index]
        return out
    out = staging / f"{safe_name(spec.replace(':', '-'))}.csv"
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip(data.items, data.labels or []))
    return out


def item_preview(data: Dataset, index: int, chars: int = 300) -> dict[str, Any]:
    """What a page shows for one item: its id, label and a short text (images load from /file)."""
    out: dict[str, Any] = {"id": data.ids[index], "label": data.labels[index] if data.labels else None}
    if data.modality == "text":
        text = str(data.items[index])
        out["text"] = text[:chars] + ("…" if len(text) > chars else "")
    return out

