"""Feed the uint8 pixels straight into an int8 image graph.

An exported image graph starts ``pixels (uint8, N x S x S x 3) -> Transpose -> Cast -> Mul -> Add``
(the normalisation, one multiply-add per channel); post-training quantisation then puts a
``QuantizeLinear -> DequantizeLinear`` pair in front of the first convolution. When the
normalisation is the same affine map ``a * x + b`` on every channel and ``-b / a`` is a whole number
in 0..255 (EfficientNet-Lite's ``(x - 127) / 128``), quantising with scale ``a`` and zero point
``-b / a`` gives back the pixel itself: the Cast, Mul, Add and QuantizeLinear compute the identity
on every possible pixel value. :func:`lossless_input_quantisation` sets that scale and zero point
(a calibrated range may be a little narrower, which clips); :func:`feed_pixels` then removes the four
nodes, so the first ``DequantizeLinear`` reads the transposed uint8 pixels. Both steps are checked on
all 256 pixel values, so the graph computes exactly what it did before :func:`feed_pixels`.

Why: that float prologue cost about a fifth of Lite0's int8 batch-1 time under ONNX Runtime (its
transpose optimiser moves the Transpose behind the float multiply, so the arithmetic runs on the
channels-last layout, three values at a time).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["feed_pixels", "feed_pixels_file", "lossless_input_file", "lossless_input_quantisation", "normalisation_nodes"]


def _consumers(graph: Any, name: str) -> list[Any]:
    return [n for n in graph.node if name in n.input]


def _producer(graph: Any, name: str) -> Any | None:
    return next((n for n in graph.node if name in n.output), None)


def _constant(graph: Any, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    node = _producer(graph, name)
    if node is not None and node.op_type == "Constant":
        return numpy_helper.to_array(node.attribute[0].t)
    return None


# The float prologue of an exported image graph: Transpose and Cast (either order), then the
# normalisation's multiply and add.
FLOAT_PROLOGUE = ("Transpose|Cast", "Transpose|Cast", "Mul", "Add")


def _chain(graph: Any, ops: tuple[str, ...]) -> list[Any] | None:
    """The nodes that read the graph's one input, one after the other, each the only reader of the
    one before and of a type in ``ops`` (alternatives joined by "|"); None when it starts otherwise."""
    if len(graph.input) != 1:
        return None
    name, chain = graph.input[0].name, []
    for op in ops:
        users = _consumers(graph, name)
        if len(users) != 1 or users[0].op_type not in op.split("|"):
            return None
        chain.append(users[0])
        name = users[0].output[0]
    if sorted(n.op_type for n in chain[:2]) != ["Cast", "Transpose"]:
        return None
    return chain


def _prologue(graph: Any) -> dict[str, Any] | None:
    """The chain ``pixels -> Transpose -> Cast -> Mul -> Add -> QuantizeLinear`` (Transpose and Cast
    in either order) with its per-channel multiply and add, or None when the graph starts otherwise."""
    chain = _chain(graph, (*FLOAT_PROLOGUE, "QuantizeLinear"))
    if chain is None:
        return None
    mul, add, quant = chain[2], chain[3], chain[4]
    a = next((c for c in (_constant(graph, i) for i in mul.input) if c is not None), None)
    b = next((c for c in (_constant(graph, i) for i in add.input) if c is not None), None)
    if a is None or b is None:
        return None
    return {"chain": chain, "a": np.asarray(a, np.float32).ravel(), "b": np.asarray(b, np.float32).ravel(),
            "quant": quant}


def _grid(a: np.ndarray, b: np.ndarray) -> tuple[float, int] | None:
    """Scale and zero point that make quantisation the identity on 0..255, or None."""
    if a.size == 0 or not (np.all(a == a[0]) and np.all(b == b[0])) or a[0] <= 0:
        return None
    zero = -float(b[0]) / float(a[0])
    if abs(zero - round(zero)) > 1e-3 or not 0 <= round(zero) <= 255:
        return None
    return float(a[0]), int(round(zero))


def _identity_on_pixels(a: float, b: float, scale: float, zero: int) -> bool:
    """ONNX Runtime's float32 arithmetic for Cast -> Mul -> Add -> QuantizeLinear (round half to
    even, saturate) on every pixel value: does it give the pixel back?"""
    x = np.arange(256, dtype=np.float32)
    y = x * np.float32(a) + np.float32(b)
    q = np.clip(np.rint(y / np.float32(scale)) + zero, 0, 255)
    return bool(np.array_equal(q, x))


def lossless_input_quantisation(model: Any) -> bool:
    """Give the int8 graph's first QuantizeLinear the scale and zero point under which it returns the
    pixel unchanged; False (the graph untouched) where the normalisation does not allow it."""
    from onnx import numpy_helper

    found = _prologue(model.graph)
    if found is None:
        return False
    grid = _grid(found["a"], found["b"])
    if grid is None or not _identity_on_pixels(float(found["a"][0]), float(found["b"][0]), *grid):
        return False
    quant = found["quant"]
    dequant = _consumers(model.graph, quant.output[0])
    if not dequant or any(n.op_type != "DequantizeLinear" for n in dequant):
        return False
    scale, zero = grid
    for node in [quant, *dequant]:
        for t in model.graph.initializer:
            if t.name == node.input[1]:
                t.CopyFrom(numpy_helper.from_array(np.array(scale, np.float32), t.name))
            elif len(node.input) > 2 and t.name == node.input[2]:
                t.CopyFrom(numpy_helper.from_array(np.array(zero, np.uint8), t.name))
    # A scale or zero point shared with other nodes would have moved them too: check.
    return _input_grid(model) == grid


def _input_grid(model: Any) -> tuple[float, int] | None:
    found = _prologue(model.graph)
    if found is None:
        return None
    quant = found["quant"]
    scale = _constant(model.graph, quant.input[1])
    zero = _constant(model.graph, quant.input[2]) if len(quant.input) > 2 else np.uint8(0)
    if scale is None or zero is None or zero.dtype != np.uint8:
        return None
    return float(scale), int(zero)


def feed_pixels(model: Any) -> bool:
    """Remove Cast, Mul, Add and QuantizeLinear between the pixels and the first DequantizeLinear
    where they compute the identity on every pixel value (after :func:`lossless_input_quantisation`);
    False (the graph untouched) otherwise."""
    found = _prologue(model.graph)
    grid = _input_grid(model)
    if found is None or grid is None:
        return False
    if not _identity_on_pixels(float(found["a"][0]), float(found["b"][0]), *grid) or found["a"].size != found["b"].size:
        return False
    chain = found["chain"]
    transpose = next(n for n in chain[:2] if n.op_type == "Transpose")
    quant = found["quant"]
    pixels = model.graph.input[0].name
    # pixels -> Transpose (uint8) -> the DequantizeLinear nodes that read QuantizeLinear's output.
    transpose.input[0] = pixels
    for node in _consumers(model.graph, quant.output[0]):
        for i, name in enumerate(node.input):
            if name == quant.output[0]:
                node.input[i] = transpose.output[0]
    for node in chain:
        if node is not transpose:
            model.graph.node.remove(node)
    # The Transpose now carries uint8: a recorded float type for its output would no longer hold.
    for info in [v for v in model.graph.value_info if v.name == transpose.output[0]]:
        model.graph.value_info.remove(info)
    _drop_unused_initializers(model.graph)
    return True


def _drop_unused_initializers(graph: Any) -> None:
    used = {i for n in graph.node for i in n.input}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)


def normalisation_nodes(graph: Any) -> list[str]:
    """Names of the normalisation's Mul and Add in a float image graph (before quantisation): kept
    out of quantisation, so that one QuantizeLinear (of the normalised pixels) sits before the
    first convolution, which :func:`lossless_input_quantisation` can then make exact."""
    found = _prologue_float(graph)
    return [n.name for n in found] if found else []


def _prologue_float(graph: Any) -> list[Any] | None:
    chain = _chain(graph, FLOAT_PROLOGUE)
    return None if chain is None else chain[2:]


def _rewrite(path: Any, change: Any, check: bool = False) -> bool:
    """Apply ``change`` (one of the functions above) to the ONNX file at ``path``; the file is
    rewritten only if it applied. ``check``: validate the graph first (for a structural change;
    the quantisation sweep rewrites input grids many times, where it would only cost time)."""
    import onnx

    model = onnx.load(str(path))
    if not change(model):
        return False
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return True


def lossless_input_file(path: Any) -> bool:
    """:func:`lossless_input_quantisation` on the ONNX file at ``path`` (rewritten only if it applies)."""
    return _rewrite(path, lossless_input_quantisation)


def feed_pixels_file(path: Any) -> bool:
    """:func:`feed_pixels` on the ONNX file at ``path`` (rewritten only if it applies)."""
    return _rewrite(path, feed_pixels, check=True)
