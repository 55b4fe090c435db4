"""int8-qat's simulation of the int8 graph (headstart.export.qat): it computes what ONNX Runtime
computes, tuning moves the deployed int8 model towards fp32, and the tuned weights go back into the
graph on its own scales. A small convolutional network with the exporter's ops (normalisation,
strided, depthwise and pointwise convolutions with ReLU6, a residual Add, pooling, a linear head)
exported and quantised the way `headstart export --quantize int8` does it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from headstart.errors import ConfigError

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.functional import relu6  # noqa: E402

from headstart.export.qat import QDQSimulation, fp32_logits, quantization_aware_int8, tune  # noqa: E402
from headstart.export.quantize import quantize_image  # noqa: E402

SIZE = 32


class _Net(nn.Module):
    """Normalisation, stem, a residual block (depthwise + pointwise), a strided depthwise, a head
    convolution, pooling and a linear head."""

    def __init__(self, width: int = 48, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.pw = nn.Conv2d(width, width, 1)
        self.dw2 = nn.Conv2d(width, width, 3, stride=2, padding=1, groups=width)
        self.head = nn.Conv2d(width, 64, 1)
        self.fc = nn.Linear(64, classes)
        self.register_buffer("scale", torch.tensor([1 / (255 * s) for s in (0.229, 0.224, 0.225)]).reshape(1, 3, 1, 1))
        self.register_buffer("shift", torch.tensor([-m / s for m, s in ((0.485, 0.229), (0.456, 0.224), (0.406, 0.225))])
                             .reshape(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float() * self.scale + self.shift  # as the exporter normalises
        x = relu6(self.stem(x))
        x = x + self.pw(relu6(self.dw(x)))
        x = relu6(self.head(relu6(self.dw2(x))))
        return self.fc(x.mean(dim=(2, 3))).softmax(-1)


def _pixels(n: int, seed: int) -> np.ndarray:
    """Smooth random images (low-frequency noise upsampled), less uniform than white noise."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.uniform(0, 255, (n, 3, 4, 4)).astype(np.float32))
    big = torch.nn.functional.interpolate(small, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    noisy = big.permute(0, 2, 3, 1).numpy() + rng.normal(0, 20, (n, SIZE, SIZE, 3))
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict:
    torch.manual_seed(0)
    net = _Net().eval()
    with torch.no_grad():
        net.pw.weight[0] *= 60  # one loud channel widens the residual's activation range: coarse int8 steps
        net.fc.weight *= 30  # logits spread like a fitted head's
    out = tmp_path_factory.mktemp("qat")
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(net, (torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8),), dynamo=True,
                                    input_names=["pixels"], output_names=["probabilities"],
                                    dynamic_shapes={"pixels": {0: batch}}, optimize=True, verbose=False)
    program.save(str(out / "fp32.onnx"))
    calibration, probe, held_out = _pixels(64, 0), _pixels(16, 1), _pixels(48, 2)
    quantize_image(out / "fp32.onnx", out / "int8.onnx", calibration, probe, max_fp32_layers=0)
    return {"dir": out, "fp32": out / "fp32.onnx", "int8": out / "int8.onnx", "calibration": calibration,
            "probe": probe, "held_out": held_out}


def _session(graph: Path | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), options,
                                providers=["CPUExecutionProvider"])


def _ort_codes(graph: Path, pixels: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """ONNX Runtime's probabilities and every uint8 activation (each QuantizeLinear's output)."""
    model = onnx.load(str(graph))
    names = [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, None))
    outputs = _session(model.SerializeToString()).run(None, {"pixels": pixels})
    return outputs[0], dict(zip(names, outputs[1:]))


def _sim_codes(sim: QDQSimulation, pixels: np.ndarray, names: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with torch.no_grad():
        run = sim._forward(torch.from_numpy(pixels))
    return run.values[sim._output].numpy(), {k: run.values[k].numpy() for k in names}


def _probs(graph: Path, pixels: np.ndarray) -> np.ndarray:
    return _session(graph).run(None, {"pixels": pixels})[0]


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((p * (np.log(p + 1e-9) - np.log(q + 1e-9))).sum(1).mean())


# -- the simulation is the deployed graph ---------------------------------------------------------

def test_exact_simulation_computes_onnx_runtimes_uint8_activations(graphs) -> None:
    x = graphs["held_out"]
    p_ort, codes_ort = _ort_codes(graphs["int8"], x)
    assert np.array_equal(p_ort, _probs(graphs["int8"], x))  # the extra outputs left ORT's fused kernels alone
    sim = QDQSimulation(graphs["int8"], graphs["fp32"])
    sim.exact = True
    p_sim, codes_sim = _sim_codes(sim, x, list(codes_ort))
    assert len(codes_ort) >= 6  # input, four convolution outputs, the residual sum at least
    for name, codes in codes_ort.items():
        assert np.array_equal(codes_sim[name], codes.astype(np.float32)), name
    assert np.abs(p_sim - p_ort).max() < 1e-6
    logits_ort = fp32_logits(graphs["int8"], x)  # the int8 graph's logits (fp32 head on int8 features)
    with torch.no_grad():
        logits_sim = sim.logits(torch.from_numpy(x)).numpy()
    assert np.abs(logits_sim - logits_ort).max() <= 1e-5 * max(1.0, float(np.abs(logits_ort).max()))


def test_float_simulation_is_close_to_onnx_runtime_and_without_rounding_is_fp32(graphs) -> None:
    x = graphs["calibration"]  # inside the calibrated ranges
    sim = QDQSimulation(graphs["int8"], graphs["fp32"])
    p8, p32 = _probs(graphs["int8"], x), _probs(graphs["fp32"], x)
    with torch.no_grad():
        p_float = sim(torch.from_numpy(x)).numpy()
        sim.quantize = False
        p_off = sim(torch.from_numpy(x)).numpy()
    assert np.abs(p8 - p32).max() > 1e-3  # the int8 graph does differ from fp32 here
    assert np.abs(p_float - p8).max() < np.abs(p8 - p32).max() / 10
    # Without rounding only the clamps remain (ReLU6 folded into them): within the calibrated ranges
    # up to the zero point's rounding, which may shave half a step off the extreme item.
    assert np.abs(p_off - p32).max() < np.abs(p8 - p32).max() / 10
    with torch.no_grad():
        sim.quantize = True
        assert np.abs(sim(torch.from_numpy(x)).numpy() - p_float).max() == 0  # switched back on


def test_unknown_op_is_a_config_error_naming_op_and_node(graphs, tmp_path) -> None:
    model = onnx.load(str(graphs["int8"]))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    model.graph.node.insert(list(model.graph.node).index(softmax),
                            onnx.helper.make_node("Sigmoid", [softmax.input[0]], ["squashed"], name="odd_sigmoid"))
    softmax.input[0] = "squashed"
    onnx.save(model, str(tmp_path / "odd.onnx"))
    with pytest.raises(ConfigError, match="Sigmoid node \\(odd_sigmoid\\)") as err:
        QDQSimulation(tmp_path / "odd.onnx", graphs["fp32"])
    assert "--quantize int8" in err.value.fix


# -- write-back -----------------------------------------------------------------------------------

def test_write_back_untouched_is_the_same_graph(graphs, tmp_path) -> None:
    sim = QDQSimulation(graphs["int8"], graphs["fp32"])
    sim.write_int8(tmp_path / "same.onnx")
    a, b = onnx.load(str(graphs["int8"])), onnx.load(str(tmp_path / "same.onnx"))
    assert a.graph.SerializeToString() == b.graph.SerializeToString()
    # The master weights are the fp32 graph's: on the graph's scales they round to its integers
    # (weights in float32, int32 biases in float64, as ONNX Runtime's quantiser does).
    arrays = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    masters = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(graphs["fp32"])).graph.initializer}
    tuned = [n for n in a.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith(("weight_quantized",
                                                                                                 "bias_quantized"))]
    assert len(tuned) == len(sim._weight_q) == 10  # five convolutions, weight and bias each
    for node in tuned:
        stored, scale = arrays[node.input[0]], arrays[node.input[1]]
        master = masters[node.input[0].removesuffix("_quantized")]
        if stored.dtype == np.int8:
            codes = np.clip(np.round(master / scale.reshape(-1, 1, 1, 1)), -127, 127)
        else:
            codes = np.round(master.astype(np.float64) / scale.astype(np.float64))
        assert np.array_equal(codes.astype(stored.dtype), stored), node.input[0]
        key = next(wq.key for wq in sim._weight_q.values() if wq.initializer == node.input[0])
        assert np.array_equal(sim.weights[key].detach().numpy(), master)


def test_tuned_weights_are_written_on_the_same_scales_and_onnx_runtime_computes_the_simulation(graphs,
                                                                                                tmp_path) -> None:
    sim = QDQSimulation(graphs["int8"], graphs["fp32"])
    sim.exact = True
    frozen = next(wq for wq in sim._weight_q.values() if wq.initializer.startswith("head.weight"))
    sim.weights[frozen.key].requires_grad_(False)
    x = np.concatenate([graphs["calibration"], graphs["calibration"][::-1] // 2 + 60])
    target = torch.from_numpy(fp32_logits(graphs["fp32"], x))

    def distance() -> float:  # the simulated (exact) int8 logits' distance from fp32's
        with torch.no_grad():
            return float(((sim.logits(torch.from_numpy(x)) - target) ** 2).mean())

    before = distance()
    tune(sim, x, target.numpy(), epochs=2, lr=1e-4, batch=16)
    assert distance() < before
    sim.write_int8(tmp_path / "tuned.onnx")
    before = {t.name: t for t in onnx.load(str(graphs["int8"])).graph.initializer}
    after = {t.name: t for t in onnx.load(str(tmp_path / "tuned.onnx")).graph.initializer}
    assert set(before) == set(after)
    changed = {k for k in before if before[k].SerializeToString() != after[k].SerializeToString()}
    integers = {wq.initializer for wq in sim._weight_q.values()}
    assert changed and changed <= integers - {frozen.initializer}  # scales, zero points, the frozen one: bit-equal
    for name in changed:
        assert after[name].data_type == before[name].data_type and list(after[name].dims) == list(before[name].dims)
    nodes = lambda m: [(n.op_type, list(n.input), list(n.output)) for n in m.graph.node]  # noqa: E731
    assert nodes(onnx.load(str(graphs["int8"]))) == nodes(onnx.load(str(tmp_path / "tuned.onnx")))
    p_ort, codes_ort = _ort_codes(tmp_path / "tuned.onnx", graphs["held_out"])
    p_sim, codes_sim = _sim_codes(sim, graphs["held_out"], list(codes_ort))
    for name, codes in codes_ort.items():
        assert np.array_equal(codes_sim[name], codes.astype(np.float32)), name
    assert np.abs(p_sim - p_ort).max() < 1e-6


# -- tuning ---------------------------------------------------------------------------------------

def test_tuning_moves_the_deployed_int8_model_towards_fp32(graphs, tmp_path) -> None:
    x = graphs["calibration"]
    info = quantization_aware_int8(graphs["int8"], graphs["fp32"], tmp_path / "tuned.onnx", x, epochs=2,
                                   probe=graphs["probe"])  # export's learning rate
    assert len(info["loss_per_epoch"]) == 2 and [e["epoch"] for e in info["probe_per_epoch"]] == [0, 1, 2]
    target = fp32_logits(graphs["fp32"], x)
    before = float(((fp32_logits(graphs["int8"], x) - target) ** 2).mean())
    after = float(((fp32_logits(tmp_path / "tuned.onnx", x) - target) ** 2).mean())
    assert after < 0.9 * before  # ONNX Runtime measures the same on the written graph
    p32 = _probs(graphs["fp32"], x)
    assert _kl(p32, _probs(tmp_path / "tuned.onnx", x)) < _kl(p32, _probs(graphs["int8"], x))
