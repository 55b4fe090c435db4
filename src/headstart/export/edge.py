"""The edge bundle: one ONNX model, its labels and preprocessing as JSON, and a stand-alone
``predict.py`` that needs only onnxruntime, numpy and Pillow (plus ``tokenizers`` for text).

``predict.py`` is the source of :mod:`headstart.export.edge_predict`, copied as it is; that module
imports nothing from headstart or torch (a test checks it in a fresh virtual environment). Before
the bundle is kept, its predictor runs the parity items and must give the probabilities of the
export it was made from: the same preprocessing, the same graph.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError
from . import edge_predict

EDGE_DIR = "edge"
TARGETS = ("onnx", "edge")  # export's --target: the ONNX export alone, or with the edge bundle
MAX_ABS_DIFF = 1e-5  # same graph, same inputs: only thread scheduling may differ


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def edge_config(report: dict[str, Any], variant: str, tokenizer: dict[str, Any] | None) -> dict[str, Any]:
    """``edge.json``: what ``predict.py`` reads."""
    card = report["card"]
    spec = card["input"]
    if report["modality"] == "image":
        pre: dict[str, Any] = {"image_size": spec["image_size"], "crop_pct": spec["crop_pct"],
                               "interpolation": spec["interpolation"],
                               "input": "uint8 RGB pixels [N, S, S, 3]; scaling and normalisation are in the graph",
                               "mean": spec["mean"], "std": spec["std"]}
    else:
        assert tokenizer is not None
        pre = {"tokenizer": "tokenizer.json", "max_length": tokenizer["max_length"], "pad_id": tokenizer["pad_id"],
               "pad_token": tokenizer["pad_token"], "input": "input_ids and attention_mask, int64 [N, L]"}
    return {"format": edge_predict.FORMAT, "format_version": edge_predict.FORMAT_VERSION,
            "modality": report["modality"], "model": "model.onnx", "variant": variant, "labels": report["labels"],
            "preprocessing": pre, "inputs": report["inputs"], "outputs": ["probabilities"],
            "backbone": {"name": card["name"], "source": card.get("source", ""), "license": card.get("license", "")},
            "parity": report["parity"].get(variant), "quantization": report.get("quantization") if variant == "int8" else None,
            "runtime": "pip install onnxruntime numpy pillow" + (" tokenizers" if report["modality"] == "text" else "")}


def _tokenizer_settings(folder: Path, max_length: int | None) -> dict[str, Any]:
    from tokenizers import Tokenizer

    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    pad = config.get("pad_token")
    pad_token = pad.get("content") if isinstance(pad, dict) else pad
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pad_id = tok.token_to_id(pad_token) if pad_token else None
    if pad_id is None:
        raise ArtifactError(f"{folder}: the tokenizer has no padding token that tokenizer.json knows.",
                            fix="fit with a backbone whose tokenizer defines a pad token.")
    return {"max_length": int(max_length or config.get("model_max_length") or 512), "pad_id": int(pad_id),
            "pad_token": pad_token}


def write_edge(onnx_dir: Path, edge_dir: Path, report: dict[str, Any], variant: str, items: list[Any],
               expected: np.ndarray, *, log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Write the bundle for ``variant`` of the export in ``onnx_dir`` to ``edge_dir`` and check it.

    ``expected``: the export's probabilities for ``items``. Returns a short record for
    ``export.json``. Raises ArtifactError when the stand-alone predictor does not reproduce them."""
    log(f"Writing the edge bundle ({variant}) and checking its stand-alone predictor")
    edge_dir.mkdir()
    _link_or_copy(onnx_dir / report["files"][variant], edge_dir / "model.onnx")
    tokenizer = None
    if report["modality"] == "text":
        shutil.copyfile(onnx_dir / "tokenizer" / "tokenizer.json", edge_dir / "tokenizer.json")
        tokenizer = _tokenizer_settings(onnx_dir / "tokenizer", report["card"]["input"].get("max_length"))
    config = edge_config(report, variant, tokenizer)
    (edge_dir / "edge.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    shutil.copyfile(Path(edge_predict.__file__), edge_dir / "predict.py")
    got = edge_predict.Predictor(edge_dir).predict_proba(items)
    diff = float(np.abs(expected - got).max())
    if not diff <= MAX_ABS_DIFF:
        raise ArtifactError(f"The edge predictor's probabilities differ from the {variant} export's by {diff:.3g} "
                            f"(allowed {MAX_ABS_DIFF}) on {len(items)} held-out items. Nothing was written.",
                            fix="report this with headstart.json's versions; use the ONNX export meanwhile.")
    files = sorted(p.name for p in edge_dir.iterdir())
    return {"folder": EDGE_DIR, "variant": variant, "files": files, "max_abs_diff_vs_export": diff,
            "size_bytes": (edge_dir / "model.onnx").stat().st_size}
