"""int8 quantisation of an exported ONNX predictor with ONNX Runtime's quantiser.

Text: dynamic quantisation of the MatMuls (weights int8, activations on the fly), the usual recipe
for transformer encoders.

Images: static QDQ quantisation, the recipe int8 mobile networks were designed for:

- BatchNorm is folded into the convolutions before export (the backbone's ``for_inference``), so
  each convolution's weights are quantised as the network computes them;
- weights per output channel (int8, symmetric), activations per tensor (uint8);
- the ReLU6 (``Clip``) after a convolution is quantised with it, so the convolution's output takes
  the [0, 6] range of what follows instead of the much wider range before the clip (quantising
  ``Conv`` alone gave a step of 0.66 on EfficientNet-Lite's first depthwise output: nine levels
  for [0, 6]); residual ``Add`` s are quantised too so that blocks stay in int8;
- activation ranges from a few hundred training images (``minmax`` by default; ``percentile`` and
  ``entropy`` on request; the benchmark compares them);
- a per-layer sensitivity sweep when the fully quantised model misses the agreement bar on a
  probe set: each convolution (with its ReLU6) is quantised alone and the shift of the
  probabilities (KL from fp32) measured; the most sensitive are kept in fp32 with the layers
  before them, until the probe set meets the bar (at most ``max_fp32_layers``).

The head (``Gemm``), pooling and softmax stay fp32: they are a sliver of the compute.

Quantisation-aware tuning (``int8-qat``) starts from this recipe's graph with every convolution
int8 and tunes its weights on a simulation of it: see :mod:`headstart.export.qat`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .pixel_input import lossless_input_file, normalisation_nodes

QUANTIZE = ("int8", "int8-qat")
QAT_EPOCHS = 5  # int8-qat's default (headstart.export.qat); here so that the CLI can show it without torch
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
MIN_CALIBRATION_ITEMS = 32
DEFAULT_CALIBRATION_ITEMS = 256
IMAGE_OPS = ["Conv", "Clip", "Add"]
SWEEP_ITEMS = 32
# The probe items are ones the head was fitted on (its last fit uses train + validation), so their
# labels flip less often than held-out ones; the sweep also asks their probabilities to stay close.
# Measured on MNIST / EfficientNet-Lite0: probe KL 0.001 went with 99% held-out agreement, 0.008 with 96.5%.
MAX_PROBE_KL = 0.001


def check_calibration(n: int, modality: str, calibration_modality: str, where: str) -> None:
    """Refuse a calibration set that is too small or of the other modality, before any work."""
    if calibration_modality != modality:
        raise DataError(f"The calibration set {where} holds {calibration_modality}s, but the model takes {modality}s.",
                        fix=f"pass --calibration with {modality}s like the model's training data "
                            "(default: the run's training split).")
    if n < MIN_CALIBRATION_ITEMS:
        raise DataError(f"The calibration set {where} has {n} item(s); int8 calibration needs at least "
                        f"{MIN_CALIBRATION_ITEMS} (a few hundred is better).",
                        fix=f"pass --calibration with {DEFAULT_CALIBRATION_ITEMS} or more training images "
                            f"(and --calibration-n of at least {MIN_CALIBRATION_ITEMS}).")


def quantize_text(src: Path, dst: Path) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=True)
    return {"recipe": "dynamic int8 MatMul, per-channel weights"}


def _session(path: Path, threads: int | None = None):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session: Any, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([session.run(None, {"pixels": pixels[k:k + batch]})[0] for k in range(0, len(pixels), batch)])


def _scalar(tensor: Any) -> float | None:
    from onnx import numpy_helper

    if tensor is None:
        return None
    value = numpy_helper.to_array(tensor)
    return float(value) if value.size == 1 else None


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """Mean KL(p || q) over items: how far the int8 probabilities moved from fp32's."""
    return float((p * (np.log(p + 1e-9) - np.log(q + 1e-9))).sum(1).mean())


def quantize_image(src: Path, dst: Path, calibration: np.ndarray, probe: np.ndarray, *,
                   method: str = "minmax", bar: float = 0.99, max_kl: float = MAX_PROBE_KL, max_fp32_layers: int = 8,
                   log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Static int8 of the image graph ``src`` (uint8 pixels in) to ``dst``; see the module docstring.

    ``calibration``: ``uint8 [N, S, S, 3]`` training pixels for the activation ranges. ``probe``:
    other pixels (not the parity items) on which the sensitivity sweep measures agreement with fp32.
    Returns what was done: method, layers kept in fp32, the probe's agreement and the sweep.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"`calibration_method` must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}.")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    # Equal batches: ONNX Runtime's histogram calibrators (percentile, entropy) stack the batches'
    # activations and fail on a shorter last one.
    size = max(d for d in range(1, 17) if len(calibration) % d == 0)
    batches = [{"pixels": calibration[k:k + size]} for k in range(0, len(calibration), size)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pre, cache = tmp / "pre.onnx", tmp / "ranges.json"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        convs = [n.name for n in graph.node if n.op_type == "Conv"]
        consts = {t.name: t for t in graph.initializer}
        clips = {n.input[0]: n for n in graph.node if n.op_type == "Clip"}
        users: dict[str, int] = {}
        for n in graph.node:
            for x in n.input:
                users[x] = users.get(x, 0) + 1
        clip_after: dict[str, list[str]] = {}
        overrides: dict[str, list[dict[str, Any]]] = {}
        for n in graph.node:
            clip = clips.get(n.output[0]) if n.op_type == "Conv" else None
            if clip is None or users[n.output[0]] != 1:
                continue
            clip_after[n.name] = [clip.name]
            bounds = [_scalar(consts.get(x)) for x in clip.input[1:3]]
            if len(bounds) == 2 and None not in bounds:
                # The convolution's output is quantised on the clip's range, as a fused Conv+ReLU6:
                # saturating there is the clip, so this holds whichever of the two stays in fp32.
                overrides[n.output[0]] = [{"rmin": np.float32(bounds[0]), "rmax": np.float32(bounds[1])}]
        p_fp32 = _run(_session(pre), probe)
        # The normalisation stays float (it is folded away afterwards where it allows, see pixel_input):
        # quantised, its multiply, its constant and its sum each got a range of their own.
        normalisation = normalisation_nodes(graph)

        def build(out: Path, exclude: list[str] = (), only: list[str] = (),  # type: ignore[assignment]
                  pixels: np.ndarray = probe) -> np.ndarray:
            # Ranges are computed once (the first call) and read from the cache afterwards.
            quantize_static(str(pre), str(out), None if cache.exists() else Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            op_types_to_quantize=IMAGE_OPS, nodes_to_exclude=[*exclude, *normalisation],
                            nodes_to_quantize=list(only) or None,
                            calibrate_method=methods[method], calibration_cache_path=str(cache),
                            extra_options={"TensorQuantOverrides": overrides,
                                           **({"CalibPercentile": 99.999} if method == "percentile" else {})})
            lossless_input_file(out)
            return _run(_session(out), pixels)

        def agreement(p: np.ndarray) -> float:
            return float((p.argmax(1) == p_fp32.argmax(1)).mean())

        def good(p: np.ndarray) -> bool:
            return agreement(p) >= bar and _kl(p_fp32, p) <= max_kl

        log(f"Calibrating activation ranges ({method}) on {len(calibration)} training images")
        candidate = tmp / "candidate.onnx"
        p_all = build(candidate, [])
        result: dict[str, Any] = {"recipe": "static QDQ: per-channel int8 weights (BatchNorm folded), uint8 activations, "
                                            "Conv+ReLU6 and residual Add quantised together",
                                  "calibration_method": method, "calibration_items": int(len(calibration)),
                                  "probe_items": int(len(probe)), "conv_layers": len(convs),
                                  "all_int8": {"probe_agreement": agreement(p_all), "probe_kl": _kl(p_fp32, p_all)},
                                  "fp32_layers": [], "sweep": {}}
        excluded: list[str] = []
        p_best = p_all
        if not good(p_all) and max_fp32_layers > 0:
            # Sensitivity of each convolution: quantise it (with the ReLU6 after it) and nothing else,
            # and see how far the probabilities move. Leaving one layer out of a fully quantised model
            # instead would mislead: its ReLU6 would then be quantised with the convolution's wide range.
            log(f"Probe agreement {agreement(p_all):.3f} (bar {bar}), KL from fp32 {_kl(p_fp32, p_all):.4f} "
                f"(bar {max_kl}): sensitivity sweep over {len(convs)} convolutions")
            sweep_probe = probe[:SWEEP_ITEMS]
            p_sweep = p_fp32[:SWEEP_ITEMS]
            sweep = {name: _kl(p_sweep, build(tmp / "sweep.onnx", only=[name, *clip_after.get(name, [])],
                                              pixels=sweep_probe)) for name in convs}
            result["sweep"] = {k: round(v, 6) for k, v in sweep.items()}
            # Keep the sensitive layers in fp32 together with every convolution before them. One fp32
            # layer between int8 ones made things worse, not better (EfficientNet-Lite0 on MNIST, its
            # first depthwise convolution in fp32: 0.80 top-1 agreement on 96 test digits against 0.94
            # all-int8; 0.91 with ONNX Runtime's graph optimisations off), while an fp32 prefix
            # followed by int8 helped. The most sensitive layers sit near the input anyway.
            tried: set[int] = set()
            for rank, name in enumerate(sorted(convs, key=lambda c: -sweep[c])[:max_fp32_layers], 1):
                length = max(convs.index(c) for c in sorted(convs, key=lambda c: -sweep[c])[:rank]) + 1
                if length in tried or length > max_fp32_layers:
                    continue
                tried.add(length)
                trial = [x for c in convs[:length] for x in (c, *clip_after.get(c, []))]
                p_trial = build(candidate, trial)
                log(f"  first {length} convolution(s) in fp32 (the {rank} most sensitive among them): "
                    f"probe agreement {agreement(p_trial):.3f}, KL {_kl(p_fp32, p_trial):.4f}")
                if _kl(p_fp32, p_trial) < _kl(p_fp32, p_best):
                    excluded, p_best = trial, p_trial
                if good(p_trial):
                    break
            if not good(p_best):  # none met the bar: keep the closest to fp32 (the parity check decides)
                p_best = build(candidate, excluded)
        result["fp32_layers"] = [e for e in excluded if e in convs]
        result["probe_agreement"] = agreement(p_best)
        result["probe_kl"] = _kl(p_fp32, p_best)
        candidate.replace(dst)
    return result


def mixup(pixels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` blends of two training images (weights 0.3-0.7): items near the decision boundaries,
    where the fp32 model's probabilities say more than on the training images it fitted."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(pixels), (2, n))
    w = rng.uniform(0.3, 0.7, (n, 1, 1, 1))
    return (w * pixels[i] + (1 - w) * pixels[j]).round().astype(np.uint8)
