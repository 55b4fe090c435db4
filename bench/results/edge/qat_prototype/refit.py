import sys, numpy as np, onnx, onnxruntime as ort, torch, time
bb = sys.argv[1]; q = sys.argv[2] if len(sys.argv) > 2 else "int8_all.onnx"
D = f"/tmp/qatp/{bb}"
d = np.load(f"{D}/pix.npz")
def with_feats(path):
    m = onnx.load(path)
    m.graph.output.append(onnx.helper.make_tensor_value_info("mean", onnx.TensorProto.FLOAT, None))
    o = ort.SessionOptions(); o.intra_op_num_threads=1; o.log_severity_level=3
    return ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"]), m
def run(s, x):
    outs = [s.run(None, {"pixels": x[i:i+32]}) for i in range(0, len(x), 32)]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]).reshape(len(x), -1)
s32, m32 = with_feats(f"{D}/fp32.onnx"); s8, m8 = with_feats(f"{D}/{q}")
t=time.time()
X = np.concatenate([d["tr"], d["va"]])
p32, f32 = run(s32, X); p8, f8 = run(s8, X)
tp32, tf32 = run(s32, d["te"]); tp8, tf8 = run(s8, d["te"])
print("feat time", time.time()-t)
pt = np.load(f"{D}/p_torch_test.npy"); y = d["yte"]
init = {i.name: onnx.numpy_helper.to_array(i) for i in m32.graph.initializer if i.name.startswith("head.")}
W0, b0 = torch.tensor(init["head.weight"]), torch.tensor(init["head.bias"])
def ev(name, W, b):
    p = torch.softmax(torch.tensor(tf8) @ W.T + b, -1).numpy()
    ptr = torch.softmax(torch.tensor(f8) @ W.T + b, -1).numpy()
    print(f"{name}: test agree {(p.argmax(1)==pt.argmax(1)).mean():.3f} acc {(p.argmax(1)==y).mean():.3f} (torch {(pt.argmax(1)==y).mean():.3f}) | train agree {(ptr.argmax(1)==p32.argmax(1)).mean():.3f}")
ev("original", W0, b0)
# sanity: fp32 feats
p = torch.softmax(torch.tensor(tf32) @ W0.T + b0, -1).numpy(); print("fp32 feats agree", (p.argmax(1)==pt.argmax(1)).mean())
# ridge on logits
L = np.log(p32 + 1e-12); L = L - L.mean(1, keepdims=True)
for lam in (1e-3, 1e-1, 10):
    A = np.hstack([f8, np.ones((len(f8),1))]); W_ = np.hstack([W0.numpy(), b0.numpy()[:,None]])
    # ridge toward original: min |A w - L|^2 + lam |w - w0|^2 (logits up to a constant; use fp32 logits directly)
    Lt = f32 @ W0.numpy().T + b0.numpy()
    sol = np.linalg.solve(A.T@A + lam*np.eye(A.shape[1]), A.T@Lt + lam*W_.T)
    ev(f"ridge logits lam={lam}", torch.tensor(sol[:-1].T, dtype=torch.float32), torch.tensor(sol[-1], dtype=torch.float32))
# KL distillation
for T, steps, lr in ((1, 300, 1e-3), (2, 300, 1e-3), (1, 1000, 1e-3)):
    W = W0.clone().requires_grad_(); b = b0.clone().requires_grad_()
    opt = torch.optim.Adam([W, b], lr=lr)
    F8 = torch.tensor(f8); T32 = torch.tensor(f32) @ W0.T + b0
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.kl_div(torch.log_softmax((F8 @ W.T + b)/T, -1), torch.log_softmax(T32/T, -1), log_target=True, reduction="batchmean")
        loss.backward(); opt.step()
    ev(f"KL T={T} steps={steps} lr={lr} loss {loss.item():.4f}", W.detach(), b.detach())
