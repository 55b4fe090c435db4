import sys, numpy as np, onnxruntime as ort
d = np.load(f"/tmp/qatp/{sys.argv[1]}/pix.npz")
def run(p, x):
    o = ort.SessionOptions(); o.intra_op_num_threads=1; o.log_severity_level=3
    s = ort.InferenceSession(p, o, providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {"pixels": x[i:i+32]})[0] for i in range(0, len(x), 32)])
pt = np.load(f"/tmp/qatp/{sys.argv[1]}/p_torch_test.npy")
for f in sys.argv[2:]:
    p = run(f"/tmp/qatp/{sys.argv[1]}/{f}", d["te"])
    print(f, "agree", (p.argmax(1)==pt.argmax(1)).mean(), "acc", (p.argmax(1)==d["yte"]).mean(), "torch acc", (pt.argmax(1)==d["yte"]).mean())
