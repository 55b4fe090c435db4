import sys, time, json
from pathlib import Path
import numpy as np
import headstart
from headstart.backbones.base import resize_crop
from headstart.data import load_data, split
from headstart.export.onnx import _export
from headstart.export.quantize import quantize_image
bb = sys.argv[1]
out = Path(f"/tmp/qatp/{bb}"); out.mkdir(parents=True, exist_ok=True)
data = load_data("builtin:mnist:60"); parts = split(data, seed=0)
run = out / "run"
t=time.time(); model = headstart.fit(data, backbone=f"efficientnet-{bb}", out=run, progress=False, baseline=False); print("fit", time.time()-t, flush=True)
spec = model.backbone.card.input
_export(model, out / "fp32.onnx")
tr = np.stack([resize_crop(parts.train.load(i), spec) for i in range(len(parts.train))])
va = np.stack([resize_crop(parts.val.load(i), spec) for i in range(len(parts.val))])
te = np.stack([resize_crop(parts.test.load(i), spec) for i in range(len(parts.test))])
yte = np.array([model.label_names.index(l) for l in parts.test.labels])
np.savez(out / "pix.npz", tr=tr, va=va, te=te, yte=yte)
pt = headstart.load(run).predict_proba([parts.test.load(i) for i in range(len(parts.test))])
np.save(out / "p_torch_test.npy", pt)
t=time.time(); q = quantize_image(out/"fp32.onnx", out/"int8_all.onnx", tr[:256], va[:128], max_fp32_layers=0); print("q0", time.time()-t, flush=True)
t=time.time(); q = quantize_image(out/"fp32.onnx", out/"int8.onnx", tr[:256], va[:128], log=print); print("q", time.time()-t, flush=True)
q.pop("sweep", None); json.dump(q, open(out/"q.json","w"), indent=2)
