"""headstart: transfer learning for small labelled data sets.

    import headstart
    model = headstart.fit("photos/", backbone="efficientnet-lite0", out="runs/photos")
    headstart.load("runs/photos").predict(["new/photo.jpg"])

Importing headstart does no work: submodules load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ._version import __version__

_LAZY = {
    "fit": "headstart.api", "load": "headstart.api", "evaluate": "headstart.api",
    "TransferModel": "headstart.model", "TransferClassifier": "headstart.sklearn",
    "create_backbone": "headstart.backbones", "list_backbones": "headstart.backbones",
    "load_data": "headstart.data", "validate": "headstart.data", "split": "headstart.data",
    "Dataset": "headstart.data", "extract_features": "headstart.features",
    "HeadstartError": "headstart.errors", "DataError": "headstart.errors", "ConfigError": "headstart.errors",
    "BackboneError": "headstart.errors", "ArtifactError": "headstart.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
