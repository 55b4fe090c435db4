"""Quantisation-aware tuning of an int8 image graph, on a torch simulation read from that graph.

:class:`QDQSimulation` interprets the int8 QDQ graph written by
:func:`headstart.export.quantize.quantize_image` node by node, in torch:

- every activation ``QuantizeLinear`` / ``DequantizeLinear`` pair is a fake quantisation with the
  graph's own scale and zero point (uint8; rounding with a straight-through gradient, the clamp's
  gradient as it is). The ReLU6 after a convolution was folded into its [0, 6] pair, so the clamp
  is the quantiser's, as in the deployed graph;
- every weight ``DequantizeLinear`` is a per-channel int8 fake quantisation of a float *master*
  weight on the graph's fixed scales; every bias one on its int32 grid (scale = input scale x
  weight scale, as ONNX Runtime stored it). The master weights start from the fp32 graph (BatchNorm
  already folded, same initializer names);
- the other ops (normalisation, ``Conv``, ``Add``, ``ReduceMean``, ``Gemm``, ``Softmax``...) are
  the same ops in torch. Whatever the graph left in fp32 stays fp32 here too.

With ``exact = True`` the forward values are ONNX Runtime's integer kernels, emulated bit for bit
on x86 (``QLinearConv``: int32 accumulation, requantisation by the float32 ratio
``x_scale * w_scale / y_scale``, rounding half to even; ``QLinearAdd``: the float32 ratios and
fused multiply-adds of the MLAS kernel), while the gradient goes through the float simulation. Without
it the simulation differs from ONNX Runtime by float rounding at a few activation steps.

:func:`tune` fine-tunes the master weights with every scale fixed, distilled towards the fp32
model's logits; :meth:`QDQSimulation.write_int8` puts the tuned weights back into the int8 graph on
the same scales, so the deployed graph computes what was tuned. Because the simulation is read from
the graph, any backbone whose int8 graph is made of the ops in :data:`OPS` can be tuned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .quantize import QAT_EPOCHS

QAT_LR = 1e-5
QAT_BATCH = 16
OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Conv", "Add", "Sub", "Mul", "Div", "Cast", "Transpose",
                 "Clip", "ReduceMean", "Gemm", "Softmax"})
_ELEMENTWISE = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer (half to even) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def _channel_shape(scale: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-output-channel scale shaped to broadcast over a weight of ``ndim`` dimensions."""
    return scale.reshape(-1, *[1] * (ndim - 1)) if scale.numel() > 1 else scale


@dataclass(frozen=True)
class _WeightQuant:
    """A weight or bias ``DequantizeLinear``: its integer initializer, fixed scale and grid."""

    key: str  # the master weight in ``QDQSimulation.weights``
    initializer: str  # name of the integer initializer in the int8 graph
    scale: torch.Tensor  # float32, shaped to broadcast over the weight
    qmin: int
    qmax: int


def _round(w: torch.Tensor, wq: _WeightQuant) -> torch.Tensor:
    """The integers ONNX Runtime's quantiser stores for ``w``: weights rounded in float32 (w / s),
    int32 biases in float64 (their grid is much finer)."""
    if wq.qmax > 127:
        return torch.clamp(torch.round(w.double() / wq.scale.double()), wq.qmin, wq.qmax)
    return torch.clamp(torch.round(w / wq.scale), wq.qmin, wq.qmax)


# A float32 sum of this many products of a uint8 code (minus its zero point: |x| <= 255) and an int8
# weight (|w| <= 127) stays below 2**24 in every partial sum, so float32 adds them exactly, in any order.
_EXACT_TERMS = 2**24 // (255 * 127)


def _integer_conv(conv: Callable[..., torch.Tensor], x: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    """The int32 accumulator of a convolution of integer-valued ``x`` and ``w``, exactly, as
    float64. float32 convolutions (fast) over slices of the input channels small enough to be
    exact, summed in float64; float64 (slow on CPU) where the channels cannot be sliced."""
    taps = w.shape[2] * w.shape[3]
    if w.shape[1] * taps <= _EXACT_TERMS:
        return conv(x.float(), w.float(), None).double()
    if groups != 1 or taps > _EXACT_TERMS:
        return conv(x.double(), w.double(), None)
    step = _EXACT_TERMS // taps
    acc = conv(x[:, :step].float(), w[:, :step].float(), None).double()
    for k in range(step, w.shape[1], step):
        acc = acc + conv(x[:, k:k + step].float(), w[:, k:k + step].float(), None).double()
    return acc


@dataclass(frozen=True)
class _ActQuant:
    """An activation ``QuantizeLinear``: per-tensor scale and zero point, and the code range."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int


class _Run:
    """What one forward pass computes: float values, and for the exact kernels the integer codes."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.codes: dict[str, tuple[torch.Tensor, _ActQuant]] = {}  # DQ output -> (uint8 codes, detached)
        self.exact: dict[str, torch.Tensor] = {}  # Conv / Add output -> the codes ONNX Runtime's kernel writes


class QDQSimulation(nn.Module):
    """The int8 QDQ graph ``int8_graph`` as a torch module; master weights from ``fp32_graph``
    (the float initializers of the same names), else the int8 graph's own dequantised weights.

    ``forward`` takes uint8 pixels ``[N, S, S, 3]`` (as a tensor) and returns what the graph
    returns (the probabilities); :meth:`logits` returns the input of the final ``Softmax``.
    ``quantize = False`` switches every rounding off (the clamps of the activation ranges stay);
    ``exact = True`` emulates ONNX Runtime's integer kernels in the forward (see the module
    docstring). The trainable parameters are the master weights, :attr:`weights`.
    """

    def __init__(self, int8_graph: str | Path, fp32_graph: str | Path | None = None) -> None:
        import onnx
        from onnx import numpy_helper

        super().__init__()
        self.quantize = True
        self.exact = False
        self.int8_graph = Path(int8_graph)
        self._model = onnx.load(str(int8_graph))
        graph = self._model.graph
        arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        masters = ({} if fp32_graph is None else
                   {t.name: numpy_helper.to_array(t) for t in onnx.load(str(fp32_graph)).graph.initializer})
        self.weights = nn.ParameterDict()
        self._consts = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
        self._weight_q: dict[str, _WeightQuant] = {}  # DQ output -> its weight
        self._act_q: dict[str, _ActQuant] = {}  # Q output -> its activation grid
        self._nodes: list[Any] = []
        self._attrs: dict[str, dict[str, Any]] = {}
        users: dict[str, list[tuple[Any, int]]] = {}
        for node in graph.node:
            for i, name in enumerate(node.input):
                users.setdefault(name, []).append((node, i))
        # quantised constants: codes, grid, and the float value (from the fp32 graph) for quantize = False
        self._fixed: dict[str, tuple[torch.Tensor, _ActQuant, torch.Tensor]] = {}
        for node in graph.node:
            if node.op_type not in OPS:
                raise ConfigError(f"The int8 graph {int8_graph} has a {node.op_type} node ({node.name or 'unnamed'}), "
                                  "which the quantisation-aware tuning cannot simulate (it knows "
                                  f"{', '.join(sorted(OPS))}).",
                                  fix="export with --quantize int8 (post-training int8 needs no simulation).")
            if node.op_type == "DequantizeLinear" and node.input[0] in arrays:
                if all(user.op_type in ("Conv", "Gemm") and i in (1, 2) for user, i in users[node.output[0]]):
                    self._weight_q[node.output[0]] = self._add_weight(node, arrays, masters)
                else:  # a quantised constant operand (the normalisation's shift): fixed, as deployed
                    codes, grid = arrays[node.input[0]].astype(np.float32), self._grid(node, arrays)
                    exact = masters.get(node.input[0].removesuffix("_quantized"), (codes - grid.zero_point) * grid.scale)
                    self._fixed[node.output[0]] = (torch.from_numpy(codes), grid,
                                                   torch.from_numpy(np.array(exact, dtype=np.float32)))
                continue
            if node.op_type == "QuantizeLinear":
                self._act_q[node.output[0]] = self._grid(node, arrays)
            elif node.op_type == "DequantizeLinear" and node.input[0] not in self._act_q:
                # integer codes from the graph's input itself (the uint8 pixels, see pixel_input)
                self._act_q[node.input[0]] = self._grid(node, arrays)
            self._nodes.append(node)
            self._attrs[node.output[0]] = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        self._consumers: dict[str, list[Any]] = {}
        for node in self._nodes:
            for name in node.input:
                self._consumers.setdefault(name, []).append(node)
        self._output = graph.output[0].name
        self._logits = logits_name(self._model)
        self._initial = {k: p.detach().clone() for k, p in self.weights.items()}
        # The graph's integers, used while a weight is unchanged: a master weight read back from
        # them (no fp32 graph) need not round to exactly the same int32 bias.
        self._stored = {wq.key: torch.from_numpy(arrays[wq.initializer].astype(np.float64))
                        for wq in self._weight_q.values()}

    @staticmethod
    def _grid(node: Any, arrays: dict[str, np.ndarray]) -> _ActQuant:
        """The per-tensor grid of a Q or DQ node of an activation (or of a quantised constant)."""
        scale, zero = arrays[node.input[1]], arrays[node.input[2]]
        info = np.iinfo(zero.dtype)
        return _ActQuant(float(np.float32(scale)), int(zero), int(info.min), int(info.max))

    def _add_weight(self, node: Any, arrays: dict[str, np.ndarray], masters: dict[str, np.ndarray]) -> _WeightQuant:
        codes = arrays[node.input[0]]
        scale = np.array(arrays[node.input[1]], dtype=np.float32)
        zero = arrays[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros(1, codes.dtype)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if np.any(zero) or (scale.size > 1 and axis != 0):
            raise ConfigError(f"The int8 graph {self.int8_graph}: weight {node.input[0]} is not quantised "
                              "symmetrically per output channel (zero point 0, axis 0), as the tuning expects.",
                              fix="export with --quantize int8.")
        t_scale = _channel_shape(torch.from_numpy(scale), codes.ndim)
        if codes.dtype == np.int8:  # ONNX Runtime's symmetric int8 range
            qmin, qmax = -127, 127
        else:
            info = np.iinfo(codes.dtype)
            qmin, qmax = int(info.min), int(info.max)
        wq = _WeightQuant(f"w{len(self.weights)}", node.input[0], t_scale, qmin, qmax)  # keys cannot hold dots
        master = masters.get(node.input[0].removesuffix("_quantized"))
        if master is None or master.shape != codes.shape or not np.array_equal(
                _round(torch.from_numpy(np.array(master, dtype=np.float32)), wq).numpy(), codes):
            # No float weight of that name, or one this graph was not quantised from (a graph tuned
            # before): start from the graph's own integers.
            master = codes.astype(np.float64) * t_scale.double().numpy()
        self.weights[wq.key] = nn.Parameter(torch.from_numpy(np.array(master, dtype=np.float32)))
        return wq

    # -- the integer values -------------------------------------------------------------------

    def _codes(self, wq: _WeightQuant) -> torch.Tensor:
        """The integers of the current master weight: the graph's own while it is unchanged."""
        w = self.weights[wq.key].detach()
        if torch.equal(w, self._initial[wq.key]):
            return self._stored[wq.key].to(torch.float64 if wq.qmax > 127 else torch.float32)
        return _round(w, wq)

    def _fake_weight(self, wq: _WeightQuant) -> torch.Tensor:
        w = self.weights[wq.key]
        if not self.quantize:
            return w
        if wq.qmax > 127:
            q = w.double() / wq.scale.double()
            return (torch.clamp(_ste_round(q), wq.qmin, wq.qmax) * wq.scale.double()).float()
        return torch.clamp(_ste_round(w / wq.scale), wq.qmin, wq.qmax) * wq.scale

    def int8_initializers(self) -> dict[str, np.ndarray]:
        """The integer initializers of the int8 graph for the current master weights (name -> array).
        A weight that was not changed keeps the graph's own integers."""
        from onnx import numpy_helper

        stored = {t.name: t for t in self._model.graph.initializer}
        out = {}
        for wq in self._weight_q.values():
            old = numpy_helper.to_array(stored[wq.initializer])
            out[wq.initializer] = self._codes(wq).numpy().astype(old.dtype).reshape(old.shape)
        return out

    def write_int8(self, dst: str | Path) -> None:
        """Write the int8 graph with the current master weights quantised on its own (unchanged)
        scales to ``dst``; nothing else in the graph changes."""
        import onnx
        from onnx import numpy_helper

        model = onnx.ModelProto()
        model.CopyFrom(self._model)
        tensors = {t.name: t for t in model.graph.initializer}
        for name, codes in self.int8_initializers().items():
            tensors[name].CopyFrom(numpy_helper.from_array(codes, name))
        onnx.save(model, str(dst))

    # -- the forward pass ---------------------------------------------------------------------

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._forward(pixels).values[self._output]

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """The input of the graph's final ``Softmax`` (the logits), for a loss in logit space."""
        return self._forward(pixels).values[self._logits]

    def _forward(self, pixels: torch.Tensor) -> _Run:
        run = _Run()
        run.values[self._model.graph.input[0].name] = pixels
        for name, wq in self._weight_q.items():
            run.values[name] = self._fake_weight(wq)
        for name, (codes, grid, value) in self._fixed.items():
            run.values[name] = (codes - grid.zero_point) * grid.scale if self.quantize else value
            run.codes[name] = (codes, grid)
        for node in self._nodes:
            run.values[node.output[0]] = getattr(self, f"_op_{node.op_type}")(node, run, self._attrs[node.output[0]])
        return run

    def _get(self, run: _Run, name: str) -> Any:
        return run.values[name] if name in run.values else self._consts[name]

    def _next_quant(self, node: Any) -> _ActQuant | None:
        """The grid of the ``QuantizeLinear`` that alone reads ``node``'s output: ONNX Runtime fuses
        the two into an integer kernel only then."""
        users = self._consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "QuantizeLinear":
            return self._act_q[users[0].output[0]]
        return None

    def _op_QuantizeLinear(self, node: Any, run: _Run, attrs: dict[str, Any]) -> torch.Tensor:
        q = self._act_q[node.output[0]]
        x = self._get(run, node.input[0])
        if not self.quantize:
            return torch.clamp(x / q.scale + q.zero_point, q.qmin, q.qmax)
        codes = torch.clamp(_ste_round(x / q.scale) + q.zero_point, q.qmin, q.qmax)
        exact = run.exact.get(node.input[0]) if self.exact else None
        return codes if exact is None else codes + (exact - codes).detach()

    def _op_DequantizeLinear(self, node: Any, run: _Run, attrs: dict[str, Any]) -> torch.Tensor:
        q = self._act_q[node.input[0]]
        codes = run.values[node.input[0]]
        codes = codes if codes.is_floating_point() else codes.float()
        run.codes[node.output[0]] = (codes.detach(), q)
        return (codes - q.zero_point) * q.scale

    def _op_Conv(self, node: Any, run: _Run, attrs: dict[str, Any]) -> torch.Tensor:
        x, w = self._get(run, node.input[0]), self._get(run, node.input[1])
        b = self._get(run, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
        stride, dilation, groups = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1]), attrs.get("group", 1)

        def conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
            if top == bottom and left == right:
                return F.conv2d(x, w, b, stride, (top, left), dilation, groups)
            return F.conv2d(F.pad(x, [left, right, top, bottom]), w, b, stride, 0, dilation, groups)

        out = conv(x, w, b)
        grid = self._next_quant(node)
        wq = self._weight_q.get(node.input[1])
        bq = self._weight_q.get(node.input[2]) if b is not None else None
        if (self.exact and self.quantize and grid is not None and node.input[0] in run.codes and wq is not None
                and (b is None or bq is not None)):
            # QLinearConv: int32 accumulation, then the float32 requantisation.
            codes, xq = run.codes[node.input[0]]
            acc = _integer_conv(conv, codes - xq.zero_point, self._codes(wq), groups)
            if bq is not None:
                acc = acc + self._codes(bq).double().reshape(1, -1, 1, 1)
            ratio = (torch.tensor(xq.scale, dtype=torch.float32) * wq.scale.reshape(-1)) / torch.tensor(
                grid.scale, dtype=torch.float32)
            scaled = acc.float() * ratio.reshape(1, -1, 1, 1)
            run.exact[node.output[0]] = torch.clamp(torch.round(scaled) + grid.zero_point, grid.qmin, grid.qmax)
        return out

    def _op_elementwise(self, node: Any, run: _Run) -> torch.Tensor:
        return _ELEMENTWISE[node.op_type](self._get(run, node.input[0]), self._get(run, node.input[1]))

    def _op_Add(self, node: Any, run: _Run, attrs: dict[str, Any]) -> torch.Tensor:
        out = self._op_elementwise(node, run)
        grid = self._next_quant(node)
        a, b = node.input[0], node.input[1]
        if self.exact and self.quantize and grid is not None and a in run.codes and b in run.codes:
            # QLinearAdd (MLAS, x86): C = rint(fma(A, ra, fma(B, rb, fixed))) on the uint8 codes, with
            # ra = sa / sc and rb = sb / sc in float32 and fixed = zc - fma(ra, za, rb * zb) (the
            # compiler fuses that multiply-add too). float64 holds each float32 product exactly, so
            # one rounding to float32 after it is the fused multiply-add's.
            f32 = np.float32
            (ca, qa), (cb, qb) = run.codes[a], run.codes[b]
            ra, rb = f32(f32(qa.scale) / f32(grid.scale)), f32(f32(qb.scale) / f32(grid.scale))
            zero_part = f32(float(ra) * qa.zero_point + float(f32(rb * f32(qb.zero_point))))
            fixed = f32(f32(grid.zero_point) - zero_part)
            t = (cb.double() * float(rb) + float(fixed)).float()
            t = (ca.double() * float(ra) + t.double()).float()
            run.exact[node.output[0]] = torch.clamp(torch.round(t), grid.qmin, grid.qmax)
        return out

    def _op_Sub(self, node: Any, run: _Run, attrs: dict[str, Any]) -> torch.Tensor:
        return self._op_elementwise(node, run)

    _op_Mul = _op_Div = _op_Sub

    def _op_Cast(self, node: Any, run: _Run, attrs: dict[str, Any]) -> torch.Tensor:
        import onnx

        dtype = onnx.helper.tensor_dtype_to_np_dtype(attrs["to"])
        return self._get(run, node.input[0]).to(torch.from_numpy(np.zeros(0, dtype)).dtype)

    def _op_Transpose(self, node: Any, run: _Run, attrs: dict[str, Any]) -> torch.Tensor:
        return self._get(run, node.input[0]).permute(*attrs["perm"])

    def _op_Clip(self, node: Any, run: _Run, attrs: dict[str, Any]) -> torch.Tensor:
        lo = float(self._get(run, node.input[1])) if len(node.input) > 1 and node.input[1] else None
        hi = float(self._get(run, node.input[2])) if len(node.input) > 2 and node.input[2] else None
        return torch.clamp(self._get(run, node.input[0]), lo, hi)

    def _op_ReduceMean(self, node: Any, run: _Run, attrs: dict[str, Any]) -> torch.Tensor:
        x = self._get(run, node.input[0])
        axes = attrs.get("axes") or ([int(a) for a in self._get(run, node.input[1]).tolist()]
                                     if len(node.input) > 1 and node.input[1] else list(range(x.dim())))
        return x.mean(dim=tuple(axes), keepdim=bool(attrs.get("keepdims", 1)))

    def _op_Gemm(self, node: Any, run: _Run, attrs: dict[str, Any]) -> torch.Tensor:
        x, w = self._get(run, node.input[0]), self._get(run, node.input[1])
        x = x.t() if attrs.get("transA", 0) else x
        w = w.t() if attrs.get("transB", 0) else w
        out = attrs.get("alpha", 1.0) * (x @ w)
        if len(node.input) > 2 and node.input[2]:
            out = out + attrs.get("beta", 1.0) * self._get(run, node.input[2])
        return out

    def _op_Softmax(self, node: Any, run: _Run, attrs: dict[str, Any]) -> torch.Tensor:
        return self._get(run, node.input[0]).softmax(attrs.get("axis", -1))


def logits_name(model: Any) -> str:
    """The tensor that enters the ``Softmax`` producing the graph's output: what is tuned towards."""
    producer = {n.output[0]: n for n in model.graph.node}
    node = producer.get(model.graph.output[0].name)
    if node is None or node.op_type != "Softmax":
        raise ConfigError("The exported graph does not end in a Softmax, so it has no logits to tune towards.",
                          fix="export with --quantize int8.")
    return str(node.input[0])


def fp32_logits(fp32_graph: str | Path, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    """The fp32 graph's logits (the input of its final ``Softmax``) for uint8 ``pixels``, by ONNX Runtime."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(fp32_graph))
    name = logits_name(model)
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run([name], {"pixels": pixels[k:k + batch]})[0]
                           for k in range(0, len(pixels), batch)])


def _batches(n: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    order = rng.permutation(n)
    for k in range(0, n, batch):
        yield np.sort(order[k:k + batch])


def tune(sim: QDQSimulation, pixels: np.ndarray, targets: np.ndarray, *, epochs: int = QAT_EPOCHS,
         lr: float = QAT_LR, batch: int = QAT_BATCH, seed: int = 0, log: Callable[[str], None] = lambda msg: None,
         after_epoch: Callable[[int], None] | None = None) -> list[float]:
    """Fine-tune ``sim``'s master weights (every scale fixed) so that its logits on ``pixels``
    (``uint8 [N, S, S, 3]``) match ``targets`` (the fp32 logits, ``[N, classes]``).

    Adam at a constant ``lr``, shuffled batches of ``batch``, ``epochs`` passes; the loss is the mean
    squared error of the logits over the targets' variance. The logits carry what the probabilities
    of confident training images do not (how far each item is from the next class). Whatever
    ``sim.exact`` is, gradients go through the float simulation. ``after_epoch(epoch)`` runs after each
    epoch (1-based). Returns each epoch's mean training loss.
    """
    x_all = torch.from_numpy(np.ascontiguousarray(pixels))
    t_all = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    norm = float(t_all.var()) or 1.0
    params = [p for p in sim.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(seed)

    def loss_of(idx: np.ndarray) -> torch.Tensor:
        return F.mse_loss(sim.logits(x_all[idx]), t_all[idx]) / norm

    started = time.perf_counter()
    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        total = 0.0
        for idx in _batches(len(x_all), batch, rng):
            loss = loss_of(idx)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x_all))
        log(f"  QAT epoch {epoch}/{epochs}: loss {losses[-1]:.4f} (MSE of the logits / their variance; "
            f"{time.perf_counter() - started:.0f} s)")
        if after_epoch is not None:
            after_epoch(epoch)
    for p in params:
        p.grad = None
    return losses


def quantization_aware_int8(int8_graph: Path, fp32_graph: Path, dst: Path, pixels: np.ndarray, *,
                            epochs: int = QAT_EPOCHS, lr: float = QAT_LR, batch: int = QAT_BATCH, seed: int = 0,
                            probe: np.ndarray | None = None,
                            log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Tune the post-training int8 graph ``int8_graph`` on ``pixels`` towards ``fp32_graph`` and
    write the result to ``dst`` (same scales, same graph, new integer weights).

    The simulation emulates ONNX Runtime's integer kernels, so the loss is the deployed model's.
    With ``probe`` (other uint8 pixels, not the parity items), each epoch's written graph is measured
    there by ONNX Runtime (agreement with fp32, KL) and reported; the last epoch is kept.
    Returns what was done."""
    import tempfile

    from .quantize import _kl, _run, _session

    started = time.perf_counter()
    targets = fp32_logits(fp32_graph, pixels)
    sim = QDQSimulation(int8_graph, fp32_graph)
    sim.exact = True
    log(f"  QAT: fp32 logits of {len(pixels)} images; simulating {len(sim.weights)} int8 weights and biases "
        f"({time.perf_counter() - started:.0f} s)")
    per_epoch: list[dict[str, float]] = []
    p_fp32 = _run(_session(fp32_graph), probe) if probe is not None and len(probe) else None

    def measure(epoch: int) -> None:
        if p_fp32 is None:
            return
        assert probe is not None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "epoch.onnx"
            sim.write_int8(path)
            p = _run(_session(path), probe)
        per_epoch.append({"epoch": epoch, "probe_agreement": float((p.argmax(1) == p_fp32.argmax(1)).mean()),
                          "probe_kl": _kl(p_fp32, p)})
        log(f"  QAT epoch {epoch}: probe agreement {per_epoch[-1]['probe_agreement']:.3f}, "
            f"KL {per_epoch[-1]['probe_kl']:.4f}")

    measure(0)
    losses = tune(sim, pixels, targets, epochs=epochs, lr=lr, batch=batch, seed=seed, log=log, after_epoch=measure)
    sim.write_int8(dst)
    return {"epochs": epochs, "lr": lr, "batch": batch, "items": int(len(pixels)),
            "loss": "MSE of the logits over their variance, simulated int8 (ONNX Runtime's kernels) vs fp32",
            "loss_per_epoch": [round(x, 6) for x in losses], "probe_per_epoch": per_epoch,
            "seconds": round(time.perf_counter() - started, 1)}
