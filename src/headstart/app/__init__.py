"""The web app (``headstart app``): projects, uploads, checks, the ladder, fits, reports, trying
a model and relabelling, in a browser, on top of the library. Pages and scripts ship in
``static/``; projects, data versions, runs and the job queue live in a SQLAlchemy database."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .storage import UploadLimits
from .web import AppConfig, create_app

__all__ = ["AppConfig", "UploadLimits", "access_token", "create_app"]


def access_token(data_dir: Path) -> tuple[str, bool]:
    """The token kept in ``data_dir/access-token`` (owner-only), made at first use; (token, made now)."""
    path = data_dir / "access-token"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip(), False
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token, True
