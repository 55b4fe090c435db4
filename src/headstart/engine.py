"""ONNX Runtime as the feature-extraction engine for image backbones on CPU.

Extracting features is most of the cost of ranking backbones, and on CPU ONNX Runtime makes a
ranking of the (BatchNorm-folded) EfficientNet-Lite graphs 1.5-2.7x faster than eager PyTorch
(``python bench/rank_validation.py`` times both). The exported graph depends only on the weights, so it
is exported once per backbone and machine, kept beside the feature cache under the same key
(weights fingerprint + preprocessing), and reused by every later extraction on any data - the way
a downloaded checkpoint is.

Policy (``engine="auto"``): ONNX Runtime on CPU for image backbones with torch weights when the
export already exists or the extraction is large enough to pay for it (``EXPORT_MIN_ITEMS``);
eager PyTorch otherwise, on GPU, for text, and whenever onnxruntime is not installed. Each new
export is checked against PyTorch on the batch that triggered it; a mismatch discards it and falls
back to PyTorch, so the engine can only change speed, not features.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import atomic_file, cache_root, write_json_atomic
from .backbones._ort import import_onnxruntime
from .backbones.base import Backbone
from .errors import ConfigError

ENGINES: tuple[str, ...] = ("auto", "torch", "onnx")
EXPORT_MIN_ITEMS = 512  # an export costs 5-15 s on 2 cores; below this many images it may not pay back
PARITY_TOL = 1e-3  # max |onnx - torch| relative to the features' scale, checked once per export
# Images per ONNX Runtime call. Small calls keep a session's arena small: a fresh session's first
# pass in calls of 64 images ran 1.4-2.3x slower per image than in calls of 8 (its arena grows and
# faults in new pages), and a ranking runs each session only a few times (bench/cpu_allocator.py).
ONNX_CHUNK = 8


def onnx_path(key: str) -> Path:
    return cache_root() / "onnx" / f"{key}.onnx"


def _supported(backbone: Backbone, device: torch.device) -> str | None:
    """Why ONNX Runtime cannot run this extraction, or None when it can."""
    if device.type != "cpu":
        return "ONNX Runtime is used on CPU only (a GPU runs PyTorch in bf16)"
    if backbone.card.modality != "image":
        return "ONNX Runtime extraction covers image backbones"
    if not backbone.trainable:
        return f"'{backbone.card.name}' has no PyTorch weights to export"
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install onnxruntime)"
    return None


def choose_engine(engine: str, backbone: Backbone, device: torch.device, n_items: int,
                  key: Callable[[], str]) -> str:
    """``"onnx"`` or ``"torch"`` for extracting ``n_items`` items; see the module docstring.
    ``key()`` gives the backbone's cache key; it hashes the weights, so it is only called when needed."""
    if engine not in ENGINES:
        raise ConfigError(f"Unknown engine '{engine}'.", fix=f"use one of {', '.join(ENGINES)}.")
    if engine == "torch":
        return "torch"
    why_not = _supported(backbone, device)
    if why_not:
        if engine == "onnx":
            raise ConfigError(f"--engine onnx cannot run here: {why_not}.", fix="use --engine auto or torch.")
        return "torch"
    if engine == "onnx" or n_items >= EXPORT_MIN_ITEMS or onnx_path(key()).is_file():
        return "onnx"
    return "torch"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # torch.onnx logs a warning per optional torchvision op it cannot register, and more
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


class _Features(torch.nn.Module):
    """``pixel_values -> features`` as a plain positional module, which is what the exporter traces."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=pixel_values)


def cpu_session(path: Path) -> Any:
    """An ONNX Runtime CPU session on the cores torch would use (telemetry off: see ``backbones._ort``)."""
    ort = import_onnxruntime("ONNX Runtime extraction")

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxFeatures:
    """Features from an exported graph, exporting it first when the cache does not hold it."""

    def __init__(self, net: Callable[[], torch.nn.Module], key: str, example: torch.Tensor) -> None:
        """``net()`` gives the PyTorch network; it is only called to export and check a new graph."""
        ort = import_onnxruntime("ONNX Runtime extraction")

        self.path = onnx_path(key)
        export = not self.path.is_file()
        if export:
            _export(net(), example, self.path)
        self.session = cpu_session(self.path)
        if export:
            self._check(net(), example[:8], ort.__version__)

    def __call__(self, pixel_values: torch.Tensor) -> np.ndarray:
        x = pixel_values.detach().to(torch.float32).contiguous().numpy()
        return np.concatenate([self.session.run(None, {"pixel_values": x[i:i + ONNX_CHUNK]})[0]
                               for i in range(0, len(x), ONNX_CHUNK)])

    def _check(self, net: torch.nn.Module, example: torch.Tensor, ort_version: str) -> None:
        with torch.inference_mode():
            want = net(pixel_values=example).float().numpy()
        got = self(example)
        diff = float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-6)
        write_json_atomic(self.path.with_suffix(".json"), {
            "max_relative_difference": diff, "checked_on": int(example.shape[0]),
            "torch": torch.__version__, "onnxruntime": ort_version})
        if not diff <= PARITY_TOL:  # also catches NaN
            self.path.unlink(missing_ok=True)
            raise RuntimeError(f"the ONNX export differs from PyTorch by {diff:.2g} (relative)")


def _export(net: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    module = _Features(net).eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(module, (example[:2].float().contiguous(),), dynamo=True,
                                    input_names=["pixel_values"], output_names=["features"],
                                    dynamic_shapes={"pixel_values": {0: batch}}, optimize=True, verbose=False)
    with atomic_file(path) as tmp:  # a killed export never leaves a half-written graph to be reused
        program.save(str(tmp))


def onnx_runner(net: Callable[[], torch.nn.Module], key: str, example: torch.Tensor, *, strict: bool) -> OnnxFeatures | None:
    """The ONNX Runtime runner, or None (after a warning) when the export fails and ``strict`` is off."""
    try:
        return OnnxFeatures(net, key, example)
    except Exception as exc:  # an exporter gap for some architecture must not stop an extraction
        if strict:
            raise
        warnings.warn(f"ONNX Runtime extraction is unavailable for this backbone ({exc}); using PyTorch.",
                      stacklevel=3)
        return None
