"""REST serving (FastAPI + uvicorn): ``create_app(run_dir)``."""

from .app import Limits, create_app

__all__ = ["Limits", "create_app"]
