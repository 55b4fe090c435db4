"""Atomic file and folder writes: a crash or Ctrl-C never leaves a half-written artifact behind."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OutputError


def cache_root() -> Path:
    """Where headstart keeps what it can recompute: features, exported engines."""
    return Path(os.environ.get("HEADSTART_CACHE", Path.home() / ".cache" / "headstart"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block succeeds it replaces ``path``
    (fsynced), and on any error or Ctrl-C it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str))


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temporaries(target: Path) -> None:
    """Remove ``.name.tmp-PID-*`` / ``.name.old-PID-*`` folders that a killed process left beside ``target``.

    The writer's PID is part of each temporary name, so only folders whose writer is gone are removed:
    a save running at the same time in another process keeps its own.
    """
    if not target.parent.is_dir():
        return
    for kind in ("tmp", "old"):
        for p in target.parent.glob(f".{target.name}.{kind}-*"):
            pid = p.name[len(f".{target.name}.{kind}-"):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)


@dataclass(frozen=True)
class FolderKind:
    """A folder that headstart writes and may replace: recognised by a ``marker`` JSON file holding
    the key ``signature``, and holding nothing but the top-level names in ``contents``."""

    what: str  # "a headstart model", for messages
    marker: str
    signature: str
    contents: frozenset[str]


def _marker_ok(target: Path, kind: FolderKind) -> bool:
    try:
        data = json.loads((target / kind.marker).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and kind.signature in data


def is_owned(target: str | Path, kind: FolderKind) -> bool:
    """True when ``target`` is a folder headstart wrote as ``kind`` and nothing else was put in it."""
    target = Path(target)
    if target.is_symlink() or not target.is_dir() or not _marker_ok(target, kind):
        return False
    return all(p.name in kind.contents for p in target.iterdir())


def check_replaceable(target: str | Path, kind: FolderKind, *, overwrite: bool) -> None:
    """Refuse to write ``target`` unless it is absent, an empty folder, or (with ``overwrite``) a
    folder that headstart wrote itself as ``kind`` and that holds nothing else.

    A folder that is not ours, or that holds files of the user's next to ours, is never replaced,
    ``overwrite`` or not: replacing it would delete them.
    """
    target = Path(target)
    what = kind.what
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink():
        raise OutputError(f"'{target}' is a symbolic link; headstart writes {what} only to a real folder, so that "
                          "replacing it can never reach what the link points to.", fix="choose another --out path.")
    if not target.is_dir():
        raise OutputError(f"'{target}' exists and is not a folder, so it cannot hold {what}.",
                          fix="choose another --out path.")
    entries = sorted(p.name for p in target.iterdir())
    if not entries:
        return
    if not _marker_ok(target, kind):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputError(f"'{target}' is a folder with other files in it ({shown}) and not {what}; "
                          "headstart replaces only folders it wrote itself.",
                          fix="choose a new or empty folder for --out.")
    foreign = [e for e in entries if e not in kind.contents]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise OutputError(f"'{target}' holds {what} and also files headstart did not write ({shown}); replacing "
                          "the folder would delete them.", fix="move those files out, or choose another --out path.")
    if not overwrite:
        raise OutputError(f"'{target}' already holds {what}.",
                          fix="pass --overwrite (overwrite=True) to replace it, or choose another --out path.")


@contextlib.contextmanager
def atomic_dir(target: str | Path, kind: FolderKind, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` in one step.

    ``kind`` says how headstart recognises its own folder (for a model: ``headstart.json``): the
    block must write the marker, and an existing ``target`` that is not wholly headstart's is never
    replaced (see :func:`check_replaceable`). If the block raises (or the process dies), ``target`` is untouched
    and the temporary folder is removed (after a kill it stays as a hidden ``.name.tmp-PID-*``
    folder, which the next write to the same place removes).
    """
    target = Path(target).absolute()
    check_replaceable(target, kind, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-{os.getpid()}-"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
    try:
        yield tmp
        if not _marker_ok(tmp, kind):
            raise RuntimeError(f"atomic_dir: the block did not write its marker file {kind.marker}")
        _fsync_tree(tmp)
        check_replaceable(target, kind, overwrite=overwrite)  # it may have appeared meanwhile
        if not target.exists():
            os.replace(tmp, target)
        elif _exchange(tmp, target):
            shutil.rmtree(tmp)  # tmp now holds the previous version
        else:  # portable fallback: two renames; the old copy stays as .name.old-* until the swap is done
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-{os.getpid()}-"))
            os.rmdir(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
