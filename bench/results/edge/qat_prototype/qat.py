import sys, time, copy, numpy as np, torch, onnx
import torch.nn.functional as F
from torch import nn
from pathlib import Path
import headstart
from headstart.backbones.base import normalise
from headstart.export.onnx import ImagePredictor, _Folded
from headstart.export.quantize import quantize_image
torch.set_num_threads(2)
bb = sys.argv[1]; epochs = int(sys.argv[2]); lr = float(sys.argv[3]); loss_kind = sys.argv[4]; tag = sys.argv[5]
D = Path(f"/tmp/qatp/{bb}")
d = np.load(D / "pix.npz")
model = headstart.load(D / "run")
spec = model.backbone.card.input
teacher = model.backbone.for_inference().eval()
student = copy.deepcopy(teacher)
head = model.head.eval()
for p in head.parameters(): p.requires_grad_(False)
for p in teacher.parameters(): p.requires_grad_(False)

# clip-bounded convs from the ONNX graph: weight initializer name -> module path
g = onnx.load(str(D / "fp32.onnx")).graph
clips = {n.input[0]: n for n in g.node if n.op_type == "Clip"}
clipped = set()
for n in g.node:
    if n.op_type == "Conv" and n.output[0] in clips:
        clipped.add(n.input[1].removeprefix("backbone.").removesuffix(".weight"))
print("clipped convs", len(clipped))

def fq(x, lo, hi):  # uint8 asymmetric, STE
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-8) / 255
    zp = round(-lo / scale)
    q = torch.clamp(torch.round(x / scale) + zp, 0, 255)
    return x + ((q - zp) * scale - x).detach()

class WQ(nn.Module):
    def forward(self, w):
        s = w.detach().abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8) / 127
        return w + (torch.clamp(torch.round(w / s), -127, 127) * s - w).detach()

ranges = {}
state = {"calib": False}
def out_hook(name):
    def hook(mod, inp, out):
        if name in clipped:
            return fq(out, 0.0, 6.0)
        if state["calib"]:
            lo, hi = ranges.get(name, (0.0, 0.0)); ranges[name] = (min(lo, out.min().item()), max(hi, out.max().item())); return out
        return fq(out, *ranges[name])
    return hook
def in_hook(name):
    def hook(mod, args):
        x = args[0]; key = name + ":in"
        if state["calib"]:
            lo, hi = ranges.get(key, (0.0, 0.0)); ranges[key] = (min(lo, x.min().item()), max(hi, x.max().item())); return None
        return (fq(x, *ranges[key]),)
    return hook
import torch.nn.utils.parametrize as P
for name, m in student.named_modules():
    if isinstance(m, nn.Conv2d):
        P.register_parametrization(m, "weight", WQ())
        m.register_forward_hook(out_hook(name)); m.register_forward_pre_hook(in_hook(name))

def x_of(pix): return normalise(torch.from_numpy(pix), spec)
tr = np.concatenate([d["tr"], d["va"]])
def calibrate():
    state["calib"] = True; ranges.clear()
    with torch.no_grad():
        for k in range(0, 256, 32): student(pixel_values=x_of(d["tr"][k:k+32]))
    state["calib"] = False
for p in student.parameters(): p.requires_grad_(True)
opt = torch.optim.Adam([p for p in student.parameters()], lr=lr)
rng = np.random.default_rng(0)
t0 = time.time()
for ep in range(epochs):
    calibrate()
    student.train(False)
    order = rng.permutation(len(tr)); tot = 0
    for k in range(0, len(tr), 16):
        idx = order[k:k+16]
        x = x_of(tr[idx])
        with torch.no_grad():
            ft = teacher(pixel_values=x); lt = head(ft)
        fs = student(pixel_values=x); ls = head(fs)
        if loss_kind == "kl":
            loss = F.kl_div(F.log_softmax(ls, -1), F.log_softmax(lt, -1), log_target=True, reduction="batchmean")
        elif loss_kind == "logit":
            loss = F.mse_loss(ls, lt)
        else:
            loss = F.mse_loss(fs, ft) / ft.pow(2).mean() + F.mse_loss(ls, lt)
        opt.zero_grad(); loss.backward(); opt.step(); tot += loss.item()
    print(f"epoch {ep} loss {tot:.4f} {time.time()-t0:.0f}s", flush=True)
# strip parametrizations and hooks
for name, m in student.named_modules():
    if isinstance(m, nn.Conv2d):
        P.remove_parametrizations(m, "weight", leave_parametrized=False)
        m._forward_hooks.clear(); m._forward_pre_hooks.clear()
student.eval()
mod = ImagePredictor(_Folded(model, student)).eval()
s = spec.image_size
with torch.no_grad():
    prog = torch.onnx.export(mod, (torch.zeros(2, s, s, 3, dtype=torch.uint8),), dynamo=True, input_names=["pixels"], output_names=["probabilities"], dynamic_shapes={"pixels": {0: torch.export.Dim("batch", min=1, max=4096)}}, optimize=True, verbose=False)
prog.save(str(D / f"qat_{tag}_fp32.onnx"))
q = quantize_image(D / f"qat_{tag}_fp32.onnx", D / f"qat_{tag}.onnx", d["tr"][:256], d["va"][:128], max_fp32_layers=0)
print("total", time.time() - t0)
