"""ONNX export of a whole predictor, accepted only after a parity check against torch.

The graph holds everything that can live in a graph: for images, uint8 ``[N, S, S, 3]`` pixels
(already resized and centre-cropped) -> scale and normalise -> backbone -> head -> softmax; for
text, token ids and attention mask -> encoder -> pooling -> head -> softmax (the tokenizer is saved
beside it). Batch (and sequence length) are dynamic. Before the files are kept, ONNX Runtime and
torch run the same held-out inputs and the probabilities are compared; a failed check is an error
and leaves any earlier export untouched.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._io import FolderKind, atomic_dir
from ..backbones._ort import import_onnxruntime
from ..backbones.base import normalise, resize_crop
from ..errors import ArtifactError, ConfigError
from ..artifact import confined

ONNX_FOLDER = FolderKind("an ONNX export", "export.json", "files",
                         frozenset({"export.json", "model.onnx", "model.int8.onnx", "model.onnx.data", "tokenizer"}))
ONNX_DIR = "onnx"


@dataclass(frozen=True)
class Tolerance:
    """Parity thresholds: fp32 must match closely; int8 trades a little accuracy for speed."""

    max_abs_diff: float
    min_top1_agreement: float


TOLERANCES = {"fp32": Tolerance(1e-4, 1.0), "int8": Tolerance(0.2, 0.95)}


class ImagePredictor(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.backbone, self.head, self.spec = model.backbone, model.head, model.backbone.card.input

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values=normalise(pixels, self.spec))).softmax(-1)


class TextPredictor(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.backbone, self.head = model.backbone, model.head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(input_ids=input_ids, attention_mask=attention_mask)).softmax(-1)


def _ort():
    return import_onnxruntime("ONNX export")


def read_export_info(folder: Path) -> dict[str, Any]:
    """``export.json`` with every field that :class:`OnnxPredictor` uses checked; file names stay in ``folder``."""
    from ..artifact import _Fields, _show, validate_input_spec

    file = folder / "export.json"
    try:
        info = json.loads(confined(folder, "export.json", "export.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{file} cannot be read as JSON ({exc}).",
                            fix=f"run `headstart export {folder.parent}` again.") from None
    if not isinstance(info, dict):
        raise ArtifactError(f"{file} must hold a JSON object, got {_show(info)}.",
                            fix=f"run `headstart export {folder.parent}` again.")
    f = _Fields(file)
    modality = f.choice(info, "modality", ("image", "text"))
    labels = info.get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise f.bad("labels", "a non-empty list of strings", labels)
    files = f.obj(info, "files")
    for variant, name in files.items():
        confined(folder, name, f"files.{variant}")
    card = f.obj(info, "card")
    validate_input_spec(card.get("input"), modality, file, "card.input.")
    return info


class OnnxPredictor:
    """Runs an exported predictor with ONNX Runtime: the same inputs and outputs as TransferModel.

    ``folder`` is an export folder (``RUN/onnx``); :meth:`from_run` takes the run folder.
    """

    def __init__(self, folder: str | Path, variant: str = "fp32", threads: int | None = None) -> None:
        from ..backbones.base import BackboneCard

        ort = _ort()
        folder = Path(folder)
        self.info = read_export_info(folder)
        if variant not in self.info["files"]:
            raise ArtifactError(f"{folder.parent} has no {variant} ONNX export.",
                                fix=f"run `headstart export {folder.parent} --quantize int8`.")
        try:
            self.card = BackboneCard.from_dict(self.info["card"])
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{folder / 'export.json'}: `card` is not a backbone card ({exc}).",
                                fix=f"run `headstart export {folder.parent}` again.") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        graph = confined(folder, self.info["files"][variant], f"files.{variant}")
        try:
            self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime's own errors: a damaged or foreign graph
            raise ArtifactError(f"{graph} is not an ONNX graph that ONNX Runtime can run "
                                f"({str(exc).splitlines()[0][:200]}).",
                                fix=f"run `headstart export {folder.parent}` again.") from None
        self.variant = variant
        self.modality = self.info["modality"]
        self.label_names: list[str] = self.info["labels"]
        self.tokenizer = None
        if self.modality == "text":
            from transformers import AutoTokenizer

            from ..artifact import check_data_folder

            tokenizer = confined(folder, "tokenizer", "tokenizer")
            check_data_folder(tokenizer, folder, "tokenizer")  # data files only, none outside, no code
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=False, local_files_only=True)

    @classmethod
    def from_run(cls, run_dir: str | Path, variant: str = "fp32", threads: int | None = None) -> OnnxPredictor:
        from ..artifact import read_meta
        from ..backbones.base import BackboneCard

        folder = Path(run_dir) / ONNX_DIR
        if not (folder / "export.json").is_file():
            raise ArtifactError(f"{run_dir} has no ONNX export.", fix=f"run `headstart export {run_dir}` first.")
        predictor = cls(folder, variant, threads)
        # The export must describe the model beside it: same labels, same input; else its answers
        # would carry the wrong names or meet inputs of the wrong size.
        meta = read_meta(run_dir)
        if list(predictor.label_names) != list(meta["labels"]):
            raise ArtifactError(f"{folder / 'export.json'}: `labels` differ from the model's in {Path(run_dir) / 'headstart.json'}.",
                                fix=f"re-export with `headstart export {run_dir}`.")
        if predictor.card.input != BackboneCard.from_dict(meta["backbone"]["card"]).input:
            raise ArtifactError(f"{folder / 'export.json'}: `card.input` differs from the model's preprocessing.",
                                fix=f"re-export with `headstart export {run_dir}`.")
        return predictor

    def feeds(self, items: list[Any]) -> dict[str, np.ndarray]:
        if self.modality == "image":
            return {"pixels": np.stack([resize_crop(img, self.card.input) for img in items])}
        assert self.tokenizer is not None
        enc = self.tokenizer(list(items), padding=True, truncation=True, max_length=self.card.input.max_length,
                             return_tensors="np")
        return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}

    def predict_proba(self, items: list[Any]) -> np.ndarray:
        return self.session.run(None, self.feeds(items))[0]


def _export(model: Any, path: Path) -> None:
    if not model.backbone.trainable:
        raise ConfigError(f"The backbone '{model.backbone.card.name}' cannot be exported: it is not a torch network "
                          "(an ONNX model or raw pixels).",
                          fix="fit with a torch backbone to export: efficientnet-lite0 for images, minilm-l6 for text.")
    model.backbone.eval().float().to(memory_format=torch.contiguous_format)
    model.head.eval().float()
    batch = torch.export.Dim("batch", min=1, max=4096)
    if model.modality == "image":
        s = model.backbone.card.input.image_size
        module: nn.Module = ImagePredictor(model)
        args: tuple = (torch.zeros(2, s, s, 3, dtype=torch.uint8),)
        names, shapes = ["pixels"], {"pixels": {0: batch}}
    else:
        module = TextPredictor(model)
        seq = torch.export.Dim("sequence", min=2, max=model.backbone.card.input.max_length or 512)
        ids = torch.ones(2, 16, dtype=torch.long)
        args = (ids, torch.ones_like(ids))
        names, shapes = ["input_ids", "attention_mask"], {"input_ids": {0: batch, 1: seq},
                                                          "attention_mask": {0: batch, 1: seq}}
    module.eval()
    with torch.no_grad():
        program = torch.onnx.export(module, args, dynamo=True, input_names=names, output_names=["probabilities"],
                                    dynamic_shapes=shapes, optimize=True, verbose=False)
    program.save(str(path))


def _quantize(src: Path, dst: Path, calibration: list[dict[str, np.ndarray]] | None) -> None:
    """int8 with ONNX Runtime's quantiser.

    Text: dynamic quantisation of the MatMuls (weights int8, activations on the fly), the usual
    recipe for transformer encoders. Images: static QDQ quantisation of the convolutions, per
    channel, calibrated on the held-out inputs; the head stays fp32 (its folded standardisation
    gives it a weight range that per-tensor int8 cannot hold).
    """
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    if calibration is None:
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=True)
    else:
        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter(calibration)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self._it, None)

        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, op_types_to_quantize=["Conv"])
    pre.unlink()


def _timing(fn, items: list[Any], batch: int, repeats: int = 3) -> dict[str, float]:
    chunk = (items * (batch // max(len(items), 1) + 1))[:batch]
    fn(chunk)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(chunk)
        best = min(best, time.perf_counter() - t)
    return {"latency_ms": 1000 * best, "items_per_s": batch / best}


def parity(model: Any, runner: OnnxPredictor, items: list[Any]) -> dict[str, float]:
    """Max |p_torch - p_onnx| and top-1 agreement on the same raw inputs."""
    p_torch = model.predict_proba(items)
    p_onnx = runner.predict_proba(items)
    return {"n": len(items), "max_abs_diff": float(np.abs(p_torch - p_onnx).max()),
            "top1_agreement": float((p_torch.argmax(1) == p_onnx.argmax(1)).mean())}


def export_onnx(run_dir: str | Path, items: list[Any], *, quantize: str | None = None,
                log=lambda msg: None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Export ``run_dir``'s model to ``run_dir/onnx/`` after checking parity on ``items``.

    ``items``: held-out raw inputs (PIL images or texts) for the parity check and the timings.
    """
    from ..api import load

    if quantize not in (None, "int8"):
        raise ConfigError(f"`quantize` must be 'int8' or omitted, got {quantize!r}.")
    if not items:
        raise ConfigError("The parity check needs held-out inputs.", fix="pass --data with a few examples.")
    _ort()
    run_dir = Path(run_dir)
    model = load(run_dir)
    variants = ["fp32"] + (["int8"] if quantize else [])
    files = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    report: dict[str, Any] = {"modality": model.modality, "labels": model.label_names,
                              "card": model.backbone.card.to_dict(), "files": {v: files[v] for v in variants},
                              "inputs": ["pixels"] if model.modality == "image" else ["input_ids", "attention_mask"],
                              "tolerances": {v: asdict(TOLERANCES[v]) for v in variants}, "parity": {}, "speed": {}}
    with atomic_dir(run_dir / ONNX_DIR, ONNX_FOLDER) as tmp:
        log("Exporting to ONNX (torch.onnx dynamo exporter)")
        _export(model, tmp / files["fp32"])
        if model.modality == "text":
            model.backbone.tokenizer.save_pretrained(tmp / "tokenizer")
        if quantize:
            log("Quantising to int8 (ONNX Runtime dynamic quantisation)")
            calibration = None
            if model.modality == "image":
                pixels = np.stack([resize_crop(i, model.backbone.card.input) for i in items[:64]])
                calibration = [{"pixels": pixels[k:k + 8]} for k in range(0, len(pixels), 8)]
            _quantize(tmp / files["fp32"], tmp / files["int8"], calibration)
        (tmp / "export.json").write_text(json.dumps(report), encoding="utf-8")
        model = load(run_dir)  # export may have changed memory formats; compare against a fresh load
        for variant in variants:
            runner = OnnxPredictor(tmp, variant)
            result = parity(model, runner, items)
            tol = TOLERANCES[variant]
            result["passed"] = result["max_abs_diff"] <= tol.max_abs_diff and result["top1_agreement"] >= tol.min_top1_agreement
            report["parity"][variant] = result
            log(f"Parity {variant}: max |dp| {result['max_abs_diff']:.2e}, top-1 agreement {result['top1_agreement']:.3f}")
            if not result["passed"]:
                raise ArtifactError(
                    f"ONNX {variant} parity check failed: max |dp| {result['max_abs_diff']:.3g} "
                    f"(allowed {tol.max_abs_diff}), top-1 agreement {result['top1_agreement']:.3f} "
                    f"(required {tol.min_top1_agreement}). Nothing was written.",
                    fix="report this with headstart.json's versions; serve the torch model meanwhile.")
            for batch in (1, 32):
                report["speed"].setdefault(f"batch_{batch}", {})[variant] = _timing(runner.predict_proba, items, batch)
        for batch in (1, 32):
            report["speed"][f"batch_{batch}"]["torch"] = _timing(model.predict_proba, items, batch)
        (tmp / "export.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report
