"""Does the torch simulation match ONNX Runtime's int8 graph? (Lite0 / MNIST, after prep.py)

    python bench/results/edge/qat_prototype/match.py lite0 int8_all.onnx

Compares on the 120 held-out digits (and the first 64 calibration images):
- simq.QDQGraph (scales and zero points read from the int8 graph, see simq.py), in float and with
  ONNX Runtime's integer kernels emulated (QLinearConv requantisation, the AVX2 QLinearAdd),
- qat.py's simulation (its own ranges, a fake quantisation on every conv input and output),
  with ablations that locate the difference,
against ONNX Runtime's int8 graph: KL from fp32 and top-1 agreement with ORT int8.
"""
import sys, time, copy
from pathlib import Path
import numpy as np, onnxruntime as ort, torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from simq import QDQGraph

torch.set_num_threads(1)
bb, int8_name = sys.argv[1], sys.argv[2]
D = Path(f"/tmp/qatp/{bb}")
d = np.load(D / "pix.npz")
pt = np.load(D / "p_torch_test.npy")
sets = {"test": d["te"], "calib64": d["tr"][:64]}


def run(p, x):
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.log_severity_level = 3
    s = ort.InferenceSession(str(p), o, providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {"pixels": x[i:i + 32]})[0] for i in range(0, len(x), 32)])


def kl(p, q):
    return float((p * (np.log(p + 1e-9) - np.log(q + 1e-9))).sum(1).mean())


def torch_run(f, x):
    with torch.no_grad():
        return np.concatenate([f(torch.from_numpy(x[i:i + 16])).numpy() for i in range(0, len(x), 16)])


t0 = time.time()
ref = {k: (run(D / "fp32.onnx", x), run(D / int8_name, x)) for k, x in sets.items()}
print(f"ORT fp32 vs original torch fp32 (test): agree {(ref['test'][0].argmax(1) == pt.argmax(1)).mean():.3f}")


def report(tag, f):
    for k, x in sets.items():
        p32, p8 = ref[k]
        ps = torch_run(f, x)
        print(f"{tag:38s} {k:8s} KL(fp32||sim) {kl(p32, ps):.4f}  KL(fp32||ORT8) {kl(p32, p8):.4f}  "
              f"KL(ORT8||sim) {kl(p8, ps):.4f}  agree(sim,ORT8) {(ps.argmax(1) == p8.argmax(1)).mean():.3f}  "
              f"max|dp| {np.abs(ps - p8).max():.3f}", flush=True)


sim = QDQGraph(D / int8_name, D / "fp32.onnx").eval()
sim.quant = False
report("graph sim, quantisation off", sim)
sim.quant = True
report("graph sim, float (the one QAT trains)", sim)
sim.exact = True
report("graph sim, integer kernels emulated", sim)
sim.exact = False
print(f"  [{time.time() - t0:.0f}s]", flush=True)

# qat.py's simulation, rebuilt, with switches
import headstart
from headstart.backbones.base import normalise
import onnx
model = headstart.load(D / "run")
spec = model.backbone.card.input
head = model.head.eval()
g = onnx.load(str(D / "fp32.onnx")).graph
clipn = {n.input[0] for n in g.node if n.op_type == "Clip"}
clipped = {n.input[1].removeprefix("backbone.").removesuffix(".weight") for n in g.node
           if n.op_type == "Conv" and n.output[0] in clipn}


def fq(x, lo, hi):
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-8) / 255
    zp = round(-lo / scale)
    q = torch.clamp(torch.round(x / scale) + zp, 0, 255)
    return (q - zp) * scale


def qatpy_sim(in_q=True, add_q=False, clean_ranges=False):
    student = copy.deepcopy(model.backbone.for_inference()).eval()
    ranges, state = {}, {"calib": False}
    with torch.no_grad():
        for name, m in student.named_modules():
            if isinstance(m, nn.Conv2d):
                w = m.weight
                s = w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8) / 127
                m.weight.copy_(torch.clamp(torch.round(w / s), -127, 127) * s)

    def obs(key, x):
        lo, hi = ranges.get(key, (0.0, 0.0)); ranges[key] = (min(lo, x.min().item()), max(hi, x.max().item()))

    def out_hook(name):
        def hook(mod, inp, out):
            if name in clipped:
                return out if (state["calib"] and clean_ranges) else fq(out, 0.0, 6.0)
            if state["calib"]:
                obs(name, out); return out
            return fq(out, *ranges[name])
        return hook

    def in_hook(name):
        def hook(mod, args):
            if state["calib"]:
                obs(name + ":in", args[0]); return None
            return (fq(args[0], *ranges[name + ":in"]),)
        return hook

    def add_hook(key):
        def hook(mod, inp, out):
            if state["calib"]:
                obs(key, out); return out
            return fq(out, *ranges[key])
        return hook

    def install(net):  # the same fake-quantisation points on the student and on the calibration copy
        for name, m in net.named_modules():
            if isinstance(m, nn.Conv2d):
                m.register_forward_hook(out_hook(name))
                if in_q or name == "_conv_stem":
                    m.register_forward_pre_hook(in_hook(name))
        if add_q:
            for i, b in enumerate(net._blocks):
                if b.residual:
                    b.register_forward_hook(add_hook(f"add{i}"))

    install(student)
    if clean_ranges:  # calibrate with the fp32 weights and no fake quantisation (as ORT's calibrator)
        fp = model.backbone.for_inference().eval()
        calib_model = copy.deepcopy(fp)
        install(calib_model)
    else:
        calib_model = student
    state["calib"] = True
    with torch.no_grad():
        for k in range(0, 256, 32):
            calib_model(pixel_values=normalise(torch.from_numpy(d["tr"][k:k + 32]), spec))
    state["calib"] = False
    return lambda px: head(student(pixel_values=normalise(px, spec))).softmax(-1)


report("qat.py sim (as written)", qatpy_sim())
report("qat.py sim, no conv-input quant", qatpy_sim(in_q=False))
report("qat.py sim, no input q, + Add q", qatpy_sim(in_q=False, add_q=True))
report("  ... + ranges from clean fp32", qatpy_sim(in_q=False, add_q=True, clean_ranges=True))
print(f"total {time.time() - t0:.0f}s")
