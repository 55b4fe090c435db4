"""Whole-network QAT on the simulation read from the deployed int8 graph (simq.QDQGraph).

    python bench/results/edge/qat_prototype/qat_match.py lite0 int8_all.onnx EPOCHS LR TAG [BLENDS] [T] [exact|float] [kl|logit|feat] [constant|cosine]

Fixed ranges: every activation scale / zero point and every per-channel weight scale is the int8
graph's own; the float master weights (BatchNorm folded, from fp32.onnx) are tuned with a
straight-through rounding, distilled towards fp32.onnx (KL of the probabilities at temperature T, default 1;
or MSE of the logits; or MSE of the logits and of the pooled features, each over its fp32 variance)
on the 256 calibration images (tr[:256]) and BLENDS blends of two of them (default 0).
The forward is ONNX Runtime's integer arithmetic emulated bit for bit ("exact", the default; the
gradient goes through the float simulation) or the float simulation alone ("float", 2-3x faster).
After each epoch the tuned weights are written into the int8 graph on the same scales
(qatm_TAG_eN.onnx) and ONNX Runtime measures it: agreement with fp32 and accuracy on the probe
(va, 90 items: for choosing an epoch) and on the held-out test digits (te, 120 items).
"""
import sys, time, json
from pathlib import Path
import numpy as np, onnxruntime as ort, torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from simq import QDQGraph
from headstart.export.quantize import mixup

torch.set_num_threads(1)
bb, int8_name, epochs, lr, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
blends = int(sys.argv[6]) if len(sys.argv) > 6 else 0
temp = float(sys.argv[7]) if len(sys.argv) > 7 else 1.0
exact = (sys.argv[8] if len(sys.argv) > 8 else "exact") == "exact"
loss_kind = sys.argv[9] if len(sys.argv) > 9 else "kl"  # kl | logit (MSE of the logits) | feat (+ pooled features)
schedule = sys.argv[10] if len(sys.argv) > 10 else "constant"  # constant | cosine (LR to 0 over the epochs)
D = Path(f"/tmp/qatp/{bb}")
d = np.load(D / "pix.npz")
pt = np.load(D / "p_torch_test.npy")


def session(p):
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.log_severity_level = 3
    return ort.InferenceSession(str(p), o, providers=["CPUExecutionProvider"])


def run(p, x):
    s = session(p)
    return np.concatenate([s.run(None, {"pixels": x[i:i + 32]})[0] for i in range(0, len(x), 32)])


def kl(p, q):
    return float((p * (np.log(p + 1e-9) - np.log(q + 1e-9))).sum(1).mean())


t0 = time.time()
x_train = d["tr"][:256]
if blends:
    x_train = np.concatenate([x_train, mixup(x_train, blends, seed=0)])
p32 = {k: run(D / "fp32.onnx", d[k]) for k in ("va", "te")}
import onnx
fp = onnx.load(str(D / "fp32.onnx"))
sm = [n for n in fp.graph.node if n.op_type == "Softmax"][-1].input[0]
pool = [n for n in fp.graph.node if n.op_type == "ReduceMean"][-1].output[0]
for name in (sm, pool):
    fp.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.log_severity_level = 3
s32 = ort.InferenceSession(fp.SerializeToString(), o, providers=["CPUExecutionProvider"])
outs = [s32.run([sm, pool], {"pixels": x_train[i:i + 32]}) for i in range(0, len(x_train), 32)]
target = torch.from_numpy(np.concatenate([a for a, _ in outs]))  # fp32 logits
feats = torch.from_numpy(np.concatenate([b for _, b in outs]))  # fp32 pooled features
feat_scale = float(feats.pow(2).mean())
logit_scale = float(target.var())
print(f"{len(x_train)} training items, targets in {time.time() - t0:.0f}s", flush=True)
rows = []


def evaluate(path, epoch, train_kl):
    row = {"epoch": epoch, "train_loss": round(train_kl, 5)}
    for k in ("va", "te"):
        p = run(path, d[k])
        row[f"{k}_agree"] = round(float((p.argmax(1) == p32[k].argmax(1)).mean()), 4)
        row[f"{k}_kl"] = round(kl(p32[k], p), 4)
    p = run(path, d["te"])
    row["te_agree_torch_fp32"] = round(float((p.argmax(1) == pt.argmax(1)).mean()), 4)
    row["te_acc"] = round(float((p.argmax(1) == d["yte"]).mean()), 4)
    row["minutes"] = round((time.time() - t0) / 60, 1)
    rows.append(row)
    print(json.dumps(row), flush=True)


sim = QDQGraph(D / int8_name, D / "fp32.onnx")
sim.quant, sim.exact = True, exact
opt = torch.optim.Adam(sim.parameters(), lr=lr)
steps_per_epoch = -(-len(x_train) // 16)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, (lambda i: 0.5 * (1 + np.cos(np.pi * i / (epochs * steps_per_epoch)))) if schedule == "cosine" else (lambda i: 1.0))
rng = np.random.default_rng(0)
batch = 16


def loss_of(idx):
    logits = sim.logits(torch.from_numpy(x_train[idx]))
    if loss_kind == "logit":
        return F.mse_loss(logits, target[idx]) / logit_scale
    if loss_kind == "feat":
        f = sim._values[pool]
        return F.mse_loss(f, feats[idx]) / feat_scale + F.mse_loss(logits, target[idx]) / logit_scale
    return F.kl_div(F.log_softmax(logits / temp, -1), F.log_softmax(target[idx] / temp, -1), log_target=True,
                    reduction="batchmean") * temp * temp


with torch.no_grad():
    k0 = sum(float(loss_of(np.arange(k, min(k + 64, len(x_train))))) * min(64, len(x_train) - k)
             for k in range(0, len(x_train), 64)) / len(x_train)
sim.write_int8(D / f"qatm_{tag}_e0.onnx")
evaluate(D / f"qatm_{tag}_e0.onnx", 0, k0)
for ep in range(1, epochs + 1):
    order = rng.permutation(len(x_train)); tot = 0.0
    for k in range(0, len(order), batch):
        idx = np.sort(order[k:k + batch])
        loss = loss_of(idx)
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        tot += float(loss.detach()) * len(idx)
    out = D / f"qatm_{tag}_e{ep}.onnx"
    sim.write_int8(out)
    evaluate(out, ep, tot / len(x_train))
json.dump({"argv": sys.argv[1:], "rows": rows}, open(D / f"qatm_{tag}.json", "w"), indent=1)
print(f"total {(time.time() - t0) / 60:.1f} min")
