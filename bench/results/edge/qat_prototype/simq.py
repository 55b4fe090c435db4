"""Torch simulation of an ONNX Runtime QDQ int8 image graph, read from the graph itself.

QDQGraph walks the int8 ONNX graph node by node: every activation QuantizeLinear/DequantizeLinear
pair becomes a fake quantisation with the graph's own scale and zero point (uint8, straight-through
rounding, the clamp's gradient as it is), every weight DequantizeLinear an int8 per-channel fake
quantisation of a float master weight with the graph's fixed scales, every bias one on its int32
grid (scale = input scale x weight scale, as ONNX Runtime stored it). Conv, Add, the normalisation,
ReduceMean, Gemm and Softmax are the same ops in torch. What the graph left in fp32 (layers the
sensitivity sweep kept, the head) stays fp32 here, because it has no Q/DQ there either.

The master weights start from the fp32 graph (BatchNorm folded, same initializer names). After
tuning, `write_int8` puts them back into the int8 graph on the same scales (the deployed model
then computes exactly what was simulated, up to ONNX Runtime's integer kernels).
"""
import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper as nh
from torch import nn


def _ste_round(x):
    return x + (torch.round(x) - x).detach()


def _attrs(n):
    return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}


class QDQGraph(nn.Module):
    def __init__(self, int8_path, fp32_path):
        super().__init__()
        self.model8 = onnx.load(str(int8_path))
        g = self.model8.graph
        init = {t.name: nh.to_array(t) for t in g.initializer}
        fp = {t.name: nh.to_array(t) for t in onnx.load(str(fp32_path)).graph.initializer}
        self.consts = {k: torch.from_numpy(np.array(v)) for k, v in init.items()}
        self.params = nn.ParameterDict()
        self.pnames = {}  # sanitized -> onnx name
        self.wq = {}  # DQ output name -> (param key, scale tensor, zp, axis, qmin, qmax, int initializer name)
        self.steps = []
        self.quant = True
        self.exact = False  # emulate ONNX Runtime's integer kernels (QLinearConv, QLinearAdd) in the forward
        for n in g.node:
            if n.op_type == "DequantizeLinear" and n.input[0] in init:  # weight or bias
                q = init[n.input[0]]
                scale = torch.from_numpy(np.array(init[n.input[1]], dtype=np.float32))
                zp = init[n.input[2]] if len(n.input) > 2 else np.zeros_like(q.flat[0])
                assert not np.any(zp), n.name
                name = n.input[0].removesuffix("_quantized")
                master = fp.get(name)
                if master is None:  # no float weight of that name: start from the dequantised one
                    master = (q.astype(np.float32) * (np.array(init[n.input[1]]).reshape(-1, *[1] * (q.ndim - 1))
                                                      if q.ndim > 1 else init[n.input[1]]))
                key = name.replace(".", "__")
                self.params[key] = nn.Parameter(torch.from_numpy(np.array(master, dtype=np.float32)))
                self.pnames[key] = name
                info = np.iinfo(q.dtype)
                qmin, qmax = (-127, 127) if q.dtype == np.int8 else (info.min, info.max)
                self.wq[n.output[0]] = (key, scale, qmin, qmax, n.input[0])
                continue
            self.steps.append(n)
        self.act_q = {}  # Q output -> (scale, zp, qmin, qmax)
        for n in self.steps:
            if n.op_type == "QuantizeLinear":
                s = float(init[n.input[1]]); zp = init[n.input[2]]
                info = np.iinfo(zp.dtype)
                self.act_q[n.output[0]] = (s, int(zp), info.min, info.max)

    def int_values(self, key, scale, qmin, qmax):
        """What ONNX Runtime's quantiser stores: weights w / s in float32, biases (int32) in float64."""
        w = self.params[key].detach()
        s = scale.reshape(-1, *[1] * (w.dim() - 1)) if scale.numel() > 1 else scale
        if qmax > 127:
            return torch.clamp(torch.round(w.double() / s.double()), qmin, qmax)
        return torch.clamp(torch.round(w / s), qmin, qmax)

    def forward(self, pixels):
        v = {"pixels": pixels}
        c = self.consts
        ints = {}  # DQ output -> (q - zp as float tensor, scale)
        pre = {}  # conv output -> value in units of the following Q's scale before rounding, as ORT computes it
        absolute = {}  # add output -> the same with the zero point already added
        consumers = {}
        for n in self.steps:
            for i in n.input:
                consumers.setdefault(i, []).append(n)

        def int_weight(name):
            key, scale, qmin, qmax, _ = self.wq[name]
            return self.int_values(key, scale, qmin, qmax), scale

        def get(name):
            if name in v:
                return v[name]
            if name in self.wq:
                key, scale, qmin, qmax, _ = self.wq[name]
                w = self.params[key]
                if not self.quant:
                    return w
                s = scale.reshape(-1, *[1] * (w.dim() - 1)) if scale.numel() > 1 else scale
                if qmax > 127:  # int32 bias: its grid is fine, round in float64 as the quantiser did
                    q = w.double() / s.double()
                    return (torch.clamp(q + (torch.round(q) - q).detach(), qmin, qmax) * s.double()).float()
                return torch.clamp(_ste_round(w / s), qmin, qmax) * s
            return c[name]

        for n in self.steps:
            op, a = n.op_type, _attrs(n)
            if op == "Cast":
                out = get(n.input[0]).float()
            elif op in ("Div", "Sub", "Add", "Mul"):
                x, y = get(n.input[0]), get(n.input[1])
                out = {"Div": torch.div, "Sub": torch.sub, "Add": torch.add, "Mul": torch.mul}[op](x, y)
                nxt = consumers.get(n.output[0], [])
                if (self.exact and op == "Add" and n.input[0] in ints and n.input[1] in ints and len(nxt) == 1
                        and nxt[0].op_type == "QuantizeLinear"):
                    # MLAS QLinearAdd (AVX2): C = rint(fma(A, ra, fma(B, rb, zc - (ra*za + rb*zb)))) on the raw
                    # uint8 values, ra = sa/sc, rb = sb/sc in float32; rounded half to even, zero point included.
                    f32 = np.float32
                    (xa, sa), (xb, sb) = ints[n.input[0]], ints[n.input[1]]
                    za, zb = self.act_q[v[n.input[0] + ":q"]][1], self.act_q[v[n.input[1] + ":q"]][1]
                    sc, zc = self.act_q[nxt[0].output[0]][:2]
                    ra, rb = f32(f32(sa) / f32(sc)), f32(f32(sb) / f32(sc))
                    fixed = f32(f32(zc) - f32(f32(ra * f32(za)) + f32(rb * f32(zb))))
                    t = ((xb + zb).double() * float(rb) + float(fixed)).float()
                    t = ((xa + za).double() * float(ra) + t.double()).float()
                    absolute[n.output[0]] = t
            elif op == "Transpose":
                out = get(n.input[0]).permute(*a["perm"])
            elif op == "QuantizeLinear":
                x = get(n.input[0])
                s, zp, lo, hi = self.act_q[n.output[0]]
                out = ("q", x, s, zp, lo, hi, n.input[0])
            elif op == "DequantizeLinear":
                t = v[n.input[0]]
                assert isinstance(t, tuple)
                _, x, s, zp, lo, hi, src = t
                if self.quant:
                    q = torch.clamp(_ste_round(x / s) + zp, lo, hi)
                    if self.exact and src in pre:
                        qx = torch.clamp(torch.round(pre[src]) + zp, lo, hi)
                        q = q + (qx - q).detach()
                    elif self.exact and src in absolute:
                        qx = torch.clamp(torch.round(absolute[src]), lo, hi)
                        q = q + (qx - q).detach()
                    ints[n.output[0]] = ((q - zp).detach(), s)
                    v[n.output[0] + ":q"] = n.input[0]
                    out = (q - zp) * s
                else:  # no rounding, only the range (a Clip the quantiser folded into the Q/DQ pair stays)
                    out = torch.clamp(x, (lo - zp) * s, (hi - zp) * s)
            elif op == "Conv":
                x, w = get(n.input[0]), get(n.input[1])
                b = get(n.input[2]) if len(n.input) > 2 else None
                pads = a.get("pads", [0, 0, 0, 0])
                t, l, bo, r = pads
                if t == bo and l == r:
                    out = F.conv2d(x, w, b, a.get("strides", [1, 1]), (t, l), a.get("dilations", [1, 1]), a.get("group", 1))
                else:
                    x = F.pad(x, [l, r, t, bo])
                    out = F.conv2d(x, w, b, a.get("strides", [1, 1]), 0, a.get("dilations", [1, 1]), a.get("group", 1))
                nxt = consumers.get(n.output[0], [])
                if (self.exact and n.input[0] in ints and n.input[1] in self.wq and len(nxt) == 1
                        and nxt[0].op_type == "QuantizeLinear"):
                    xi, sx = ints[n.input[0]]
                    wi, sw = int_weight(n.input[1])
                    bi, _ = int_weight(n.input[2])
                    if not (t == bo and l == r):
                        xi = F.pad(xi, [l, r, t, bo])
                        t = l = 0
                    acc = F.conv2d(xi.double(), wi.double(), bi.double(), a.get("strides", [1, 1]), (t, l),
                                   a.get("dilations", [1, 1]), a.get("group", 1))
                    sy = self.act_q[nxt[0].output[0]][0]
                    m = (torch.tensor(sx, dtype=torch.float32) * sw.float()) / torch.tensor(sy, dtype=torch.float32)
                    pre[n.output[0]] = acc.float() * m.reshape(1, -1, 1, 1)
            elif op == "Clip":
                lo, hi = float(get(n.input[1])), float(get(n.input[2]))
                out = torch.clamp(get(n.input[0]), lo, hi)
            elif op == "ReduceMean":
                axes = a.get("axes") or [int(x) for x in get(n.input[1]).tolist()]
                out = get(n.input[0]).mean(dim=tuple(axes), keepdim=bool(a.get("keepdims", 1)))
            elif op == "Gemm":
                x, w = get(n.input[0]), get(n.input[1])
                if a.get("transA", 0):
                    x = x.t()
                if a.get("transB", 0):
                    w = w.t()
                out = a.get("alpha", 1.0) * (x @ w)
                if len(n.input) > 2:
                    out = out + a.get("beta", 1.0) * get(n.input[2])
            elif op == "Softmax":
                out = get(n.input[0]).softmax(a.get("axis", -1))
            else:
                raise ValueError(f"simq reads only the ops of headstart's EfficientNet-Lite int8 graph; "
                                 f"{op} (node {n.name}) is not among them (headstart.export.qat reads more)")
            v[n.output[0]] = out
        self._values = v
        return v[self.model8.graph.output[0].name]

    def logits(self, pixels):
        """The Softmax's input (the graph's last Gemm), for a KL loss in log space."""
        self.forward(pixels)
        sm = [n for n in self.steps if n.op_type == "Softmax"][-1]
        return self._values[sm.input[0]]

    def write_int8(self, dst):
        """The int8 graph with the master weights quantised on its own (unchanged) scales."""
        m = onnx.ModelProto(); m.CopyFrom(self.model8)
        inits = {t.name: t for t in m.graph.initializer}
        for out_name, (key, scale, qmin, qmax, int_name) in self.wq.items():
            old = nh.to_array(inits[int_name])
            q = self.int_values(key, scale, qmin, qmax).numpy().astype(old.dtype)
            inits[int_name].CopyFrom(nh.from_array(q, int_name))
        onnx.save(m, str(dst))

    def write_fp32(self, fp32_path, dst):
        """The fp32 graph with the master weights (for reference)."""
        m = onnx.load(str(fp32_path))
        inits = {t.name: t for t in m.graph.initializer}
        for key, name in self.pnames.items():
            if name in inits:
                inits[name].CopyFrom(nh.from_array(self.params[key].detach().numpy(), name))
        onnx.save(m, str(dst))
