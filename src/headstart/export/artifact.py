"""The artifact: a folder with ``model.safetensors``, ``headstart.json`` and ``transfer_card.md``.

Weights are safetensors and metadata is JSON: nothing is unpickled on load. The backbone is
recreated from its name and checked against the stored weights fingerprint; when the backbone was
trained, its weights are in ``model.safetensors`` under ``backbone.``. Saving writes a temporary
folder and swaps it in with one atomic rename, so a crash mid-save leaves the old artifact intact.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from .._io import atomic_dir, write_json_atomic
from ..errors import ArtifactError

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "headstart.json"
CARD = "transfer_card.md"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("headstart", "torch", "transformers", "scikit-learn", "numpy", "safetensors", "onnxruntime"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def save_model(model: Any, path: str | Path) -> Path:
    from safetensors.torch import save_file

    from ..features import weights_fingerprint
    from ..report.card import render_card

    path = Path(path)
    backbone = model.backbone
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    if model.backbone_trained:
        tensors.update({f"backbone.{k}": v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()})
    meta = {
        "format_version": FORMAT_VERSION,
        "labels": model.label_names,
        "backbone": {"name": backbone.card.name, "card": backbone.card.to_dict(), "trained": model.backbone_trained,
                     "fingerprint": weights_fingerprint(backbone)},
        "preprocessing": backbone.card.to_dict()["input"],
        "head": model.head.spec(),
        **{k: v for k, v in model.info.items() if k not in ("labels", "backbone", "head", "format_version")},
        "versions": package_versions(),
    }
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt", "headstart_format": str(FORMAT_VERSION)})
        write_json_atomic(tmp / META, meta)
        (tmp / CARD).write_text(render_card(meta), encoding="utf-8")
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not (path / META).is_file() or not (path / WEIGHTS).is_file():
        what = "does not exist" if not path.exists() else f"has no {META} and {WEIGHTS}"
        raise ArtifactError(f"'{path}' {what}, so it is not a headstart model.",
                            fix="pass the folder written by `headstart fit --out DIR`.")
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path / META} is not valid JSON ({exc.msg}, line {exc.lineno}).",
                            fix="re-create the model with `headstart fit`.") from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{path} has format version {version}; this headstart reads version {FORMAT_VERSION}.",
                            fix="re-create the model, or install the headstart version that wrote it.")
    return meta


def load_model(path: str | Path) -> Any:
    """Rebuild a :class:`~headstart.model.TransferModel` from an artifact folder."""
    from safetensors.torch import load_file

    from ..adapt.heads import build_head
    from ..backbones import create_backbone
    from ..features import weights_fingerprint
    from ..model import TransferModel

    path = Path(path)
    meta = read_meta(path)
    bmeta = meta["backbone"]
    spec = bmeta["card"]["input"]
    backbone = create_backbone(bmeta["name"], image_size=spec.get("image_size"), max_length=spec.get("max_length"))
    tensors = load_file(str(path / WEIGHTS))
    if bmeta.get("trained"):
        state = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
        backbone.load_state_dict(state, strict=True)
    if weights_fingerprint(backbone) != bmeta["fingerprint"]:
        raise ArtifactError(
            f"The backbone '{bmeta['name']}' on this machine has different weights from the one {path} was "
            "trained with, so its predictions would be wrong.",
            fix="install the same weights (see versions in headstart.json) or re-fit the model.")
    head = build_head(meta["head"])
    head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}, strict=True)
    info = {k: v for k, v in meta.items() if k not in ("backbone", "head", "labels", "format_version")}
    return TransferModel(backbone, head, meta["labels"], info, backbone_trained=bool(bmeta.get("trained")))
