"""Parity and speed of the ONNX export, image and text, fp32 and int8.

For each artifact: max |p_torch - p_onnx| and top-1 agreement on held-out test items, and latency
(batch 1) / throughput (batch 32) of torch vs ONNX Runtime, measured side by side in this process.
Variants that fail the tolerance are reported with their numbers (``headstart export`` refuses them).

    python bench/export_parity.py          # writes bench/results/export_parity.{json,md}
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

import headstart
from headstart.backbones.base import resize_crop
from headstart.data import load_data, split
from headstart.export.onnx import TOLERANCES, OnnxPredictor, _export, _quantize, _timing, parity

CASES = [("image", "builtin:mnist:100", "efficientnet-lite0", {}), ("text", "builtin:bbc-news:60", "minilm-l6", {"max_length": 128})]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for modality, data_name, backbone, kw in CASES:
            data = load_data(data_name)
            run = Path(tmp) / modality
            model = headstart.fit(data, backbone=backbone, out=run, progress=False, baseline=False, **kw)
            test = split(data).test
            items = [test.load(i) for i in range(min(100, len(test)))]
            folder = run / "onnx"
            folder.mkdir()
            _export(model, folder / "model.onnx")
            calibration = None
            if modality == "image":
                px = np.stack([resize_crop(i, model.backbone.card.input) for i in items[:64]])
                calibration = [{"pixels": px[k:k + 8]} for k in range(0, len(px), 8)]
            else:
                model.backbone.tokenizer.save_pretrained(folder / "tokenizer")
            _quantize(folder / "model.onnx", folder / "model.int8.onnx", calibration)
            (folder / "export.json").write_text(json.dumps({
                "modality": modality, "labels": model.label_names, "card": model.backbone.card.to_dict(),
                "files": {"fp32": "model.onnx", "int8": "model.int8.onnx"}}))
            model = headstart.load(run)
            t1, t32 = _timing(model.predict_proba, items, 1), _timing(model.predict_proba, items, 32)
            for variant in ("fp32", "int8"):
                runner = OnnxPredictor(folder, variant)
                p = parity(model, runner, items)
                tol = TOLERANCES[variant]
                o1, o32 = _timing(runner.predict_proba, items, 1), _timing(runner.predict_proba, items, 32)
                rows.append({"modality": modality, "backbone": backbone, "variant": variant, **p,
                             "passes_tolerance": p["max_abs_diff"] <= tol.max_abs_diff and p["top1_agreement"] >= tol.min_top1_agreement,
                             "torch_b1_ms": t1["latency_ms"], "onnx_b1_ms": o1["latency_ms"],
                             "torch_b32_items_s": t32["items_per_s"], "onnx_b32_items_s": o32["items_per_s"],
                             "size_mb": (folder / runner.info["files"][variant]).stat().st_size / 1e6})
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "export_parity.json").write_text(json.dumps(rows, indent=2))
    lines = ["| model | variant | n | max abs dp | top-1 agreement | passes | batch 1 ms torch / ORT | batch 32 items/s torch / ORT | ORT speed-up b32 | file MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['modality']} {r['backbone']} | {r['variant']} | {r['n']} | {r['max_abs_diff']:.2e} | "
                     f"{r['top1_agreement']:.3f} | {'yes' if r['passes_tolerance'] else 'NO (refused)'} | "
                     f"{r['torch_b1_ms']:.1f} / {r['onnx_b1_ms']:.1f} | {r['torch_b32_items_s']:.1f} / {r['onnx_b32_items_s']:.1f} | "
                     f"{r['onnx_b32_items_s'] / r['torch_b32_items_s']:.2f}x | {r['size_mb']:.0f} |")
    (out / "export_parity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
