"""ONNX export of a whole predictor, accepted only after a parity check against torch.

The graph holds everything that can live in a graph: for images, uint8 ``[N, S, S, 3]`` pixels
(already resized and centre-cropped) -> scale and normalise -> backbone -> head -> softmax; for
text, token ids and attention mask -> encoder -> pooling -> head -> softmax (the tokenizer is saved
beside it). Batch (and sequence length) are dynamic. Before the files are kept, ONNX Runtime and
torch run the same held-out inputs and the probabilities are compared; a failed check is an error
and leaves any earlier export untouched.

int8 (``quantize="int8"``, or ``"int8-qat"`` with quantisation-aware tuning after it): see
:mod:`headstart.export.quantize` and :mod:`headstart.export.qat`. With ``target="edge"`` the folder
also holds ``edge/``: one model, its labels and preprocessing as JSON and a stand-alone
``predict.py`` (see :mod:`headstart.export.edge`).
"""

from __future__ import annotations

import json
import logging
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
from .edge import TARGETS
from .quantize import QUANTIZE

ONNX_FOLDER = FolderKind("an ONNX export", "export.json", "files",
                         frozenset({"export.json", "model.onnx", "model.int8.onnx", "model.onnx.data", "tokenizer",
                                    "edge"}))
ONNX_DIR = "onnx"
PROBE_ITEMS = 128  # held-out items on which the int8 sensitivity sweep measures agreement


@dataclass(frozen=True)
class Tolerance:
    """Parity thresholds: fp32 must match closely; int8 trades a little accuracy for speed.

    ``max_accuracy_drop`` applies when the held-out items have labels: accuracy of the variant may
    be at most this much below torch's."""

    max_abs_diff: float
    min_top1_agreement: float
    max_accuracy_drop: float = 1.0


TOLERANCES = {"fp32": Tolerance(1e-4, 1.0), "int8": Tolerance(0.2, 0.95)}
# Images: a changed top-1 label is what a user sees, so the bar is agreement and accuracy, not |dp|
# (a borderline item may move a lot of probability without changing its label).
IMAGE_TOLERANCES = {"fp32": TOLERANCES["fp32"], "int8": Tolerance(1.0, 0.99, 0.01)}
PARITY_ADVICE_ITEMS = 100  # fewer held-out items than this and export says the int8 check is coarse


def tolerance(variant: str, modality: str) -> Tolerance:
    return (IMAGE_TOLERANCES if modality == "image" else TOLERANCES)[variant]


class ImagePredictor(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.backbone, self.head, self.spec = model.backbone, model.head, model.backbone.card.input

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values=_normalise_nchw(pixels, self.spec))).softmax(-1)


def _normalise_nchw(pixels: torch.Tensor, spec: Any) -> torch.Tensor:
    """:func:`normalise` for the graph: channels first, then one multiply-add per channel. Broadcasting
    over the last axis of ``[N, S, S, 3]`` (3 values at a time) cost ONNX Runtime 17% of Lite0's
    batch-1 time; over ``[N, 3, S, S]`` the inner loop runs over whole planes."""
    if spec.mean is None or spec.std is None:
        return normalise(pixels, spec)  # its error message
    scale = torch.tensor([1.0 / (255.0 * s) for s in spec.std], dtype=torch.float32).reshape(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(spec.mean, spec.std)], dtype=torch.float32).reshape(1, 3, 1, 1)
    return pixels.permute(0, 3, 1, 2).float() * scale + shift


class _Folded:
    """The model's head and labels with another (equivalent) backbone."""

    def __init__(self, model: Any, backbone: Any) -> None:
        self.backbone, self.head = backbone, model.head


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


def check_exportable(model: Any) -> None:
    if not model.backbone.trainable:
        raise ConfigError(f"The backbone '{model.backbone.card.name}' cannot be exported: it is not a torch network "
                          "(an ONNX model or raw pixels).",
                          fix="fit with a torch backbone to export: efficientnet-lite0 for images, minilm-l6 for text.")


def _export(model: Any, path: Path) -> None:
    """Write the predictor graph; a backbone with ``for_inference`` (BatchNorm folded into the
    convolutions: the same function in eval mode) is exported in that form."""
    check_exportable(model)
    model.backbone.eval().float().to(memory_format=torch.contiguous_format)
    model.head.eval().float()
    batch = torch.export.Dim("batch", min=1, max=4096)
    if model.modality == "image":
        s = model.backbone.card.input.image_size
        fold = getattr(model.backbone, "for_inference", None)
        module: nn.Module = ImagePredictor(model if fold is None else _Folded(model, fold()))
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
    # torch.onnx warns once per torchvision operator it cannot register; torchvision is not a
    # dependency, and the warnings read as errors to a new user.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with torch.no_grad():
        program = torch.onnx.export(module, args, dynamo=True, input_names=names, output_names=["probabilities"],
                                    dynamic_shapes=shapes, optimize=True, verbose=False)
    program.save(str(path))


def _quantize(src: Path, dst: Path, calibration: list[dict[str, np.ndarray]] | None) -> None:
    """int8 of ``src``: text dynamic, images static calibrated on the ``pixels`` batches given
    (kept for scripts; :func:`export_onnx` calls :mod:`headstart.export.quantize` directly)."""
    from .quantize import quantize_image, quantize_text

    if calibration is None:
        quantize_text(src, dst)
    else:
        pixels = np.concatenate([b["pixels"] for b in calibration])
        quantize_image(src, dst, pixels, pixels)


def _quantize_qat(model: Any, fp32: Path, dst: Path, calibration: np.ndarray, probe: np.ndarray, method: str,
                  epochs: int | None, log) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """int8-qat: post-training int8 with every convolution int8, then the whole network tuned on a
    simulation read from that int8 graph (:mod:`headstart.export.qat`) on the calibration images
    and as many blends of two, and the tuned weights written back into it on the same scales."""
    import tempfile

    from .qat import QAT_EPOCHS, quantization_aware_int8
    from .quantize import mixup, quantize_image

    epochs = epochs or QAT_EPOCHS
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(tmp) / "ptq.onnx"
        log(f"Post-training int8 ({method} calibration, every convolution int8)")
        result = quantize_image(fp32, first, calibration, probe, method=method, max_fp32_layers=0, log=log)
        items = np.concatenate([calibration, mixup(calibration, len(calibration))])
        log(f"Quantisation-aware tuning of the whole network: {epochs} epoch(s) on {len(calibration)} training "
            "images and as many blends of two, on a simulation of the int8 graph, distilled towards the fp32 logits")
        info = quantization_aware_int8(first, fp32, dst, items, epochs=epochs, probe=probe, log=log)
    result["qat"] = {**info, "before": {k: result[k] for k in ("probe_agreement", "probe_kl")}}
    tuned = info["probe_per_epoch"][-1]  # the graph written to dst: the last epoch's
    result["probe_agreement"], result["probe_kl"] = tuned["probe_agreement"], tuned["probe_kl"]
    result["recipe"] = ("quantisation-aware tuning of the whole network on the int8 graph's own scales, after "
                        + result["recipe"])
    return result


def _timing(fn, items: list[Any], batch: int, repeats: int = 3) -> dict[str, float]:
    chunk = (items * (batch // max(len(items), 1) + 1))[:batch]
    fn(chunk)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(chunk)
        best = min(best, time.perf_counter() - t)
    return {"latency_ms": 1000 * best, "items_per_s": batch / best}


def parity(model: Any, runner: OnnxPredictor, items: list[Any], labels: list[str] | None = None,
           p_torch: np.ndarray | None = None) -> dict[str, float]:
    """Max |p_torch - p_onnx| and top-1 agreement on the same raw inputs; with ``labels`` (label
    names, one per item) also both accuracies."""
    p_torch = model.predict_proba(items) if p_torch is None else p_torch
    p_onnx = runner.predict_proba(items)
    result = {"n": len(items), "max_abs_diff": float(np.abs(p_torch - p_onnx).max()),
              "top1_agreement": float((p_torch.argmax(1) == p_onnx.argmax(1)).mean())}
    if labels is not None:
        names = list(runner.label_names)
        y = np.array([names.index(label) if label in names else -1 for label in labels])
        result["accuracy_torch"] = float((p_torch.argmax(1) == y).mean())
        result["accuracy"] = float((p_onnx.argmax(1) == y).mean())
    return result


def _passes(result: dict[str, float], tol: Tolerance) -> bool:
    drop = result["accuracy_torch"] - result["accuracy"] if "accuracy" in result else 0.0
    return (result["max_abs_diff"] <= tol.max_abs_diff and result["top1_agreement"] >= tol.min_top1_agreement
            and drop <= tol.max_accuracy_drop + 1e-12)


def run_items(run_dir: str | Path, part: str, limit: int) -> tuple[list[Any], list[str] | None]:
    """Up to ``limit`` raw items (and their labels) of one split (``train`` / ``val`` / ``test``) of
    the data ``run_dir`` was fitted on; a ConfigError when that data cannot be read here."""
    from ..artifact import read_meta
    from ..data import load_data, split

    meta = read_meta(run_dir)
    source = meta.get("data", {}).get("source", "")
    try:
        data = getattr(split(load_data(source), seed=int(meta.get("seed", 0))), part)
    except Exception:
        raise ConfigError(f"The run's training data ({source or 'unknown'}) cannot be read here.",
                          fix="pass the items yourself: --data for the parity check, --calibration for int8.") from None
    n = min(limit, len(data))
    return [data.load(i) for i in range(n)], (list(data.labels[:n]) if data.labels is not None else None)


def _modality_of(items: Any) -> str:
    from ..data.dataset import Dataset

    if isinstance(items, Dataset):
        return items.modality
    return "text" if all(isinstance(x, str) for x in items) else "image"


def export_onnx(run_dir: str | Path, items: list[Any], *, quantize: str | None = None,
                labels: list[str] | None = None, calibration: Any = None, calibration_method: str = "minmax",
                calibration_n: int | None = None, target: str = "onnx", qat_epochs: int | None = None,
                log=lambda msg: None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Export ``run_dir``'s model to ``run_dir/onnx/`` after checking parity on ``items``.

    ``items``: held-out raw inputs (PIL images or texts) for the parity check and the timings;
    ``labels`` (their label names, optional) add the accuracy check. ``quantize="int8"`` also writes
    ``model.int8.onnx``; for images it is calibrated on ``calibration`` (raw training images or a
    Dataset; default: the run's training split, ``calibration_n`` of them). ``quantize="int8-qat"``
    (images): the int8 model's weights are then tuned for ``qat_epochs`` (default 5) on those same
    training images with the int8 graph simulated (:mod:`headstart.export.qat`); it is held to the
    same parity rule on ``items``, which must not be training images. ``target="edge"`` adds
    ``edge/`` with the int8 model (fp32 without ``quantize``) and a stand-alone predictor.
    Everything is checked before anything is written: a failed check leaves the earlier export as it was.
    """
    from ..api import load
    from .quantize import CALIBRATION_METHODS, DEFAULT_CALIBRATION_ITEMS, check_calibration

    if quantize not in (None, *QUANTIZE):
        raise ConfigError(f"`quantize` must be {' or '.join(map(repr, QUANTIZE))} or omitted, got {quantize!r}.")
    if qat_epochs is not None and (quantize != "int8-qat" or qat_epochs < 1):
        raise ConfigError(f"`qat_epochs` / --qat-epochs ({qat_epochs}) needs quantize='int8-qat' (--quantize "
                          "int8-qat) and must be at least 1.", fix="add --quantize int8-qat, or drop --qat-epochs.")
    if target not in TARGETS:
        raise ConfigError(f"`target` must be one of {', '.join(TARGETS)}, got {target!r}.")
    if calibration_method not in CALIBRATION_METHODS:
        raise ConfigError(f"`calibration_method` must be one of {', '.join(CALIBRATION_METHODS)}, "
                          f"got {calibration_method!r}.")
    if not items:
        raise ConfigError("The parity check needs held-out inputs.", fix="pass --data with a few examples.")
    if labels is not None and len(labels) != len(items):
        raise ConfigError(f"`labels` has {len(labels)} entries for {len(items)} items.")
    _ort()
    run_dir = Path(run_dir)
    model = load(run_dir)
    check_exportable(model)
    if _modality_of(items) != model.modality:
        from ..errors import DataError

        raise DataError(f"The parity items are {_modality_of(items)}s, but the model takes {model.modality}s.",
                        fix=f"pass --data with {model.modality}s.")
    if quantize == "int8-qat" and model.modality != "image":
        raise ConfigError("--quantize int8-qat fine-tunes image backbones; this model takes texts.",
                          fix="use --quantize int8 for text models (dynamic int8 keeps their labels).")
    calib_pixels = probe_pixels = None
    if quantize and (calibration is not None or model.modality == "image"):
        n_cal = calibration_n or DEFAULT_CALIBRATION_ITEMS
        probe: list[Any] = []
        if calibration is None:
            calibration, _ = run_items(run_dir, "train", n_cal)
            if model.modality == "image":
                # The sweep measures on the validation split: not the calibration items, and not the
                # parity items, which must stay an independent check.
                probe, _ = run_items(run_dir, "val", PROBE_ITEMS)
        where = getattr(calibration, "source", None) or "given"
        check_calibration(len(calibration), model.modality, _modality_of(calibration), f"({where})")
        if model.modality == "image":
            from ..data.dataset import Dataset

            raw = [calibration.load(i) for i in range(min(n_cal, len(calibration)))] \
                if isinstance(calibration, Dataset) else list(calibration)[:n_cal]
            if len(probe) < PROBE_ITEMS // 2:  # no validation split to hand: keep the last items apart
                n_probe = min(PROBE_ITEMS, len(raw) // 4)
                raw, probe = raw[:len(raw) - n_probe], raw[len(raw) - n_probe:]
                log(f"No validation split to spare: {n_probe} of the calibration images are held back for the "
                    f"sensitivity sweep, {len(raw)} calibrate")
            calib_pixels = np.stack([resize_crop(i, model.backbone.card.input) for i in raw])
            probe_pixels = np.stack([resize_crop(i, model.backbone.card.input) for i in probe])
    if quantize and len(items) < PARITY_ADVICE_ITEMS:
        log(f"Note: the int8 parity check rests on {len(items)} held-out item(s); a 99% bar on so few is all or "
            f"nothing. For a firmer check pass --data with {PARITY_ADVICE_ITEMS} or more held-out items.")
    variants = ["fp32"] + (["int8"] if quantize else [])
    files = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    report: dict[str, Any] = {"modality": model.modality, "labels": model.label_names, "quantize": quantize,
                              "card": model.backbone.card.to_dict(), "files": {v: files[v] for v in variants},
                              "inputs": ["pixels"] if model.modality == "image" else ["input_ids", "attention_mask"],
                              "tolerances": {v: asdict(tolerance(v, model.modality)) for v in variants},
                              "parity": {}, "speed": {}}
    with atomic_dir(run_dir / ONNX_DIR, ONNX_FOLDER) as tmp:
        log("Exporting to ONNX (torch.onnx dynamo exporter)")
        _export(model, tmp / files["fp32"])
        if model.modality == "text":
            model.backbone.tokenizer.save_pretrained(tmp / "tokenizer")
        if quantize:
            from .quantize import quantize_image, quantize_text

            if model.modality == "image" and quantize == "int8-qat":
                assert calib_pixels is not None and probe_pixels is not None
                report["quantization"] = _quantize_qat(model, tmp / files["fp32"], tmp / files["int8"], calib_pixels,
                                                       probe_pixels, calibration_method, qat_epochs, log)
            elif model.modality == "image":
                assert calib_pixels is not None and probe_pixels is not None
                bar = tolerance("int8", "image").min_top1_agreement
                report["quantization"] = quantize_image(tmp / files["fp32"], tmp / files["int8"], calib_pixels,
                                                        probe_pixels, method=calibration_method, bar=bar, log=log)
            else:
                log("Quantising to int8 (ONNX Runtime dynamic quantisation)")
                report["quantization"] = quantize_text(tmp / files["fp32"], tmp / files["int8"])
            if model.modality == "image":
                from .pixel_input import feed_pixels_file

                # Exact (checked on every pixel value): the int8 graph reads the uint8 pixels itself.
                report["quantization"]["pixels_fed_directly"] = feed_pixels_file(tmp / files["int8"])
        (tmp / "export.json").write_text(json.dumps(report), encoding="utf-8")
        model = load(run_dir)  # export may have changed memory formats; compare against a fresh load
        p_torch = model.predict_proba(items)
        for variant in variants:
            runner = OnnxPredictor(tmp, variant)
            result = parity(model, runner, items, labels, p_torch)
            tol = tolerance(variant, model.modality)
            result["passed"] = _passes(result, tol)
            report["parity"][variant] = result
            acc = (f", accuracy {result['accuracy']:.3f} (torch {result['accuracy_torch']:.3f})"
                   if "accuracy" in result else "")
            log(f"Parity {variant}: max |dp| {result['max_abs_diff']:.2e}, top-1 agreement "
                f"{result['top1_agreement']:.3f}{acc}")
            if not result["passed"]:
                drop = (f", accuracy {result['accuracy']:.3f} vs torch {result['accuracy_torch']:.3f} (allowed drop "
                        f"{tol.max_accuracy_drop})" if "accuracy" in result else "")
                fix = ("report this with headstart.json's versions; serve the torch model meanwhile."
                       if variant == "fp32" else
                       "try --quantize int8-qat (a few epochs of quantisation-aware fine-tuning), or export without "
                       "--quantize (fp32 ONNX is exact); serve the fp32 export meanwhile."
                       if quantize == "int8" and model.modality == "image" else
                       "export without --quantize (fp32 ONNX is exact), or pass --calibration with more training "
                       "images; serve the fp32 export meanwhile.")
                raise ArtifactError(
                    f"ONNX {variant} parity check failed on {result['n']} held-out items: max |dp| "
                    f"{result['max_abs_diff']:.3g} (allowed {tol.max_abs_diff}), top-1 agreement "
                    f"{result['top1_agreement']:.3f} (required {tol.min_top1_agreement}){drop}. Nothing was written.",
                    fix=fix)
            for batch in (1, 32):
                report["speed"].setdefault(f"batch_{batch}", {})[variant] = _timing(runner.predict_proba, items, batch)
        for batch in (1, 32):
            report["speed"][f"batch_{batch}"]["torch"] = _timing(model.predict_proba, items, batch)
        if target == "edge":
            from .edge import write_edge

            variant = "int8" if quantize else "fp32"
            expected = OnnxPredictor(tmp, variant).predict_proba(items)
            report["edge"] = write_edge(tmp, tmp / "edge", report, variant, items, expected, log=log)
        (tmp / "export.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report
