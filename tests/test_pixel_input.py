"""The int8 image graph reads the uint8 pixels directly where its normalisation allows it, and
computes exactly what it did with the float prologue."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from headstart.export.pixel_input import feed_pixels, lossless_input_quantisation

S = 8


def _graph(path, mean: tuple[float, ...], std: tuple[float, ...], order=("Transpose", "Cast")) -> None:
    """pixels (uint8 N x S x S x 3) -> Transpose / Cast -> Mul -> Add -> Conv -> Clip: the shape of
    headstart's exported image graphs, small."""
    rng = np.random.default_rng(0)
    a = np.array([1.0 / (255.0 * s) for s in std], np.float32).reshape(1, 3, 1, 1)
    b = np.array([-m / s for m, s in zip(mean, std)], np.float32).reshape(1, 3, 1, 1)
    w = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    nodes, x = [], "pixels"
    for op in order:
        node = (helper.make_node("Transpose", [x], ["t"], perm=[0, 3, 1, 2]) if op == "Transpose"
                else helper.make_node("Cast", [x], ["c"], to=TensorProto.FLOAT))
        nodes.append(node)
        x = node.output[0]
    nodes += [helper.make_node("Mul", [x, "a"], ["m"]), helper.make_node("Add", ["m", "b"], ["n"]),
              helper.make_node("Conv", ["n", "w"], ["y"], pads=[1, 1, 1, 1]),
              helper.make_node("Clip", ["y", "lo", "hi"], ["out"])]
    for i, node in enumerate(nodes):
        node.name = f"{node.op_type.lower()}_{i}"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["N", S, S, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, S, S])],
        [numpy_helper.from_array(a, "a"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(w, "w"),
         numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _quantised(tmp_path, mean, std, order=("Transpose", "Cast"), pixels: np.ndarray | None = None) -> onnx.ModelProto:
    src, dst = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    _graph(src, mean, std, order)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (16, S, S, 3), dtype=np.uint8) if pixels is None else pixels

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"pixels": pixels}])

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self._it, None)

    add = next(n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Add")
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                    op_types_to_quantize=["Conv", "Clip"], nodes_to_exclude=[add])
    return onnx.load(str(dst))


def _run(model: onnx.ModelProto, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": pixels})[0]


def _all_pixel_values() -> np.ndarray:
    """Every value 0..255 in every channel, plus random images."""
    values = np.arange(256, dtype=np.uint8).reshape(4, S, S, 1).repeat(3, axis=3)
    rng = np.random.default_rng(2)
    return np.concatenate([values, rng.integers(0, 256, (4, S, S, 3), dtype=np.uint8)])


LITE = ((127 / 255,) * 3, (128 / 255,) * 3)


@pytest.mark.parametrize("order", [("Transpose", "Cast"), ("Cast", "Transpose")])
def test_lite_normalisation_reads_the_pixels_and_computes_the_same(tmp_path, order) -> None:
    model = _quantised(tmp_path, *LITE, order=order)
    x = _all_pixel_values()
    assert lossless_input_quantisation(model)
    before = _run(model, x)
    assert feed_pixels(model)
    onnx.checker.check_model(model)
    after = _run(model, x)
    np.testing.assert_array_equal(after, before)
    ops = [n.op_type for n in model.graph.node]
    assert "Cast" not in ops and "Mul" not in ops and "Add" not in ops
    first = [n for n in model.graph.node if "pixels" in n.input]
    assert [n.op_type for n in first] == ["Transpose"]
    reader = [n for n in model.graph.node if first[0].output[0] in n.input]
    assert [n.op_type for n in reader] == ["DequantizeLinear"]
    scale = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == reader[0].input[1]))
    zero = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == reader[0].input[2]))
    assert float(scale) == 1 / 128 and int(zero) == 127


def test_lossless_input_quantisation_gives_the_first_convolution_the_exact_normalised_pixels(tmp_path) -> None:
    # Calibrated on dark images only, the input range is too narrow: bright pixels clip.
    dark = np.random.default_rng(3).integers(0, 60, (16, S, S, 3), dtype=np.uint8)
    model = _quantised(tmp_path, *LITE, pixels=dark)
    reader = next(n for n in model.graph.node if n.op_type == "Conv").input[0]
    model.graph.output.append(helper.make_tensor_value_info(reader, TensorProto.FLOAT, None))
    x = _all_pixel_values()
    exact = (x.transpose(0, 3, 1, 2).astype(np.float64) - 127) / 128  # (x - 127) / 128 on 0..255

    def seen() -> np.ndarray:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run([reader], {"pixels": x})[0]

    assert np.abs(seen() - exact).max() > 0.5  # bright pixels clipped by the calibrated range
    assert lossless_input_quantisation(model)
    np.testing.assert_array_equal(seen(), exact.astype(np.float32))


@pytest.mark.parametrize("mean, std", [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # per channel
                                       ((0.5,) * 3, (0.5,) * 3)])  # zero point 127.5: not a whole number
def test_other_normalisations_leave_the_graph_as_it_was(tmp_path, mean, std) -> None:
    model = _quantised(tmp_path, mean, std)
    before = model.SerializeToString()
    assert not lossless_input_quantisation(model)
    assert not feed_pixels(model)
    assert model.SerializeToString() == before


def test_a_graph_that_starts_otherwise_is_left_alone(tmp_path) -> None:
    model = _quantised(tmp_path, *LITE)
    model.graph.node.append(helper.make_node("Identity", ["pixels"], ["extra"]))  # pixels read twice
    before = model.SerializeToString()
    assert not lossless_input_quantisation(model)
    assert not feed_pixels(model)
    assert model.SerializeToString() == before
