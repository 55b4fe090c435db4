import sys, time, numpy as np, torch
from pathlib import Path
import headstart
from headstart.export.onnx import _export
from headstart.export.quantize import quantize_image, qat_backbone, mixup
torch.set_num_threads(1)
bb, epochs, lr, blocks, tag, nmix = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
D = Path(f"/tmp/qatp/{bb}")
d = np.load(D / "pix.npz")
model = headstart.load(D / "run")
t0 = time.time()
pix = np.concatenate([d["tr"][:256], mixup(d["tr"][:256], nmix)])
tuned, info = qat_backbone(model.backbone.for_inference(), model.head, pix, D / "fp32.onnx", D / "int8_all.onnx",
                           epochs=epochs, lr=lr, blocks=blocks, log=print)
print(info, flush=True)
_export(model, D / f"qat_{tag}_fp32.onnx", backbone=tuned)
q = quantize_image(D / f"qat_{tag}_fp32.onnx", D / f"qat_{tag}.onnx", d["tr"][:256], d["va"][:128], max_fp32_layers=0)
print("total", time.time() - t0, flush=True)
