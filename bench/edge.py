"""fp32 vs int8 ONNX for the edge, side by side: size, speed, accuracy, agreement.

For each zoo image backbone (EfficientNet-Lite0/1/2, at their own resolution) on MNIST
(``builtin:mnist:60``: 600 digits) and on real photos (``skimage.data.lfw_subset()``: 100 faces and
100 non-face patches), and for the text backbone (MiniLM-L6 on ``builtin:bbc-news:30``): fit a
linear probe, export fp32, quantise with headstart's recipe (images: static per-channel QDQ,
calibrated on the training split, sensitivity sweep on the validation split; text: dynamic MatMul),
then on the test split: accuracy of each, top-1 agreement, and ONNX Runtime with 2 threads on the
same prepared inputs (preprocessing excluded): batch-1 latency (median of repeats, fp32 and int8
alternating) and batch-32 throughput. ``passes`` applies export's rule (images: agreement >= 99% and
accuracy within 1 point; text: agreement >= 95%, |dp| <= 0.2).

    python bench/edge.py [--only lite0-mnist,...]   # writes bench/results/edge/{results.json,table.md}
    python bench/edge.py --qat --only lite0-mnist   # + int8-qat: bench/results/edge/{qat.json,qat.md} (merged by case)
    python bench/edge.py --profile                  # ONNX Runtime per-operator profile: profile.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import headstart
from headstart.backbones.base import resize_crop
from headstart.data import load_data, split
from headstart.export.onnx import _export, _passes, tolerance
from headstart.export.pixel_input import feed_pixels_file
from headstart.export.quantize import quantize_image, quantize_text

OUT = Path(__file__).parent / "results" / "edge"
THREADS = 2


def lfw():
    from skimage.data import lfw_subset

    faces = lfw_subset()  # 200 x 25 x 25 floats in [0, 1]: the first 100 faces, then 100 non-faces
    images = [(f * 255).round().astype(np.uint8) for f in faces]
    return load_data(images, labels=["face"] * 100 + ["non-face"] * 100, modality="image")


CASES = {f"{bb.split('-')[-1]}-{name}": (bb, data) for bb in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
         for name, data in (("mnist", "builtin:mnist:60"), ("photos", "lfw"))}
CASES["minilm-l6-bbc"] = ("minilm-l6", "builtin:bbc-news:30")
ORDER = ["lite0-mnist", "lite0-photos", "minilm-l6-bbc", "lite1-mnist", "lite1-photos", "lite2-mnist", "lite2-photos"]


def session(path: Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feeds_for(model, items) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    if model.modality == "image":
        return {"pixels": np.stack([resize_crop(i, model.backbone.card.input) for i in items])}
    enc = model.backbone.tokenizer(list(items), padding=True, truncation=True,
                                   max_length=model.backbone.card.input.max_length, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


def run_all(s, feeds: dict[str, np.ndarray], batch: int = 32) -> np.ndarray:  # type: ignore[no-untyped-def]
    n = len(next(iter(feeds.values())))
    return np.concatenate([s.run(None, {k: v[i:i + batch] for k, v in feeds.items()})[0] for i in range(0, n, batch)])


def speed(sessions: dict[str, object], feeds: dict[str, np.ndarray], repeats_b1: int = 30,
          repeats_b32: int = 5) -> dict[str, dict[str, float]]:
    """Median batch-1 latency over the first items and median batch-32 throughput, variants alternating."""
    n = len(next(iter(feeds.values())))
    b32 = {k: np.resize(v, (32, *v.shape[1:])) if n < 32 else v[:32] for k, v in feeds.items()}
    times: dict[str, dict[str, list[float]]] = {v: {"b1": [], "b32": []} for v in sessions}
    for s in sessions.values():  # warm-up
        s.run(None, {k: v[:1] for k, v in feeds.items()})
        s.run(None, b32)
    for r in range(repeats_b1):
        one = {k: v[r % n:r % n + 1] for k, v in feeds.items()}
        for name, s in sessions.items():
            t = time.perf_counter()
            s.run(None, one)
            times[name]["b1"].append(time.perf_counter() - t)
    for _ in range(repeats_b32):
        for name, s in sessions.items():
            t = time.perf_counter()
            s.run(None, b32)
            times[name]["b32"].append(time.perf_counter() - t)
    return {name: {"b1_ms": 1000 * statistics.median(t["b1"]), "b32_items_s": 32 / statistics.median(t["b32"])}
            for name, t in times.items()}


def one_case(key: str, tmp: Path, with_qat: bool = False) -> dict:
    bb, data_name = CASES[key]
    data = lfw() if data_name == "lfw" else load_data(data_name)
    parts = split(data, seed=0)
    run = tmp / key
    kw = {"max_length": 128} if bb.startswith("minilm") else {}
    t0 = time.time()
    model = headstart.fit(data, backbone=bb, out=run, progress=False, baseline=False, **kw)
    fit_s = time.time() - t0
    test_items = [parts.test.load(i) for i in range(len(parts.test))]
    y = np.array([model.label_names.index(label) for label in parts.test.labels])
    fp32, int8 = run / "fp32.onnx", run / "int8.onnx"
    _export(model, fp32)
    t0 = time.time()
    if model.modality == "image":
        spec = model.backbone.card.input
        calib = np.stack([resize_crop(parts.train.load(i), spec) for i in range(min(256, len(parts.train)))])
        probe = np.stack([resize_crop(parts.val.load(i), spec) for i in range(min(128, len(parts.val)))])
        q = quantize_image(fp32, int8, calib, probe, log=print)
        q["pixels_fed_directly"] = feed_pixels_file(int8)  # as export does
    else:
        q = quantize_text(fp32, int8)
    quantize_s = time.time() - t0
    qat: dict = {}
    if with_qat and model.modality == "image":
        from headstart.export.onnx import _quantize_qat

        t0 = time.time()
        qat = _quantize_qat(model, fp32, run / "qat.onnx", calib, probe, "minmax", None, print)
        qat["seconds"] = round(time.time() - t0, 1)
        qat["pixels_fed_directly"] = feed_pixels_file(run / "qat.onnx")
    model = headstart.load(run)
    p_torch = model.predict_proba(test_items)
    feeds = feeds_for(model, test_items)
    sessions = {"fp32": session(fp32), "int8": session(int8)}
    if qat:
        sessions["int8-qat"] = session(run / "qat.onnx")
    probs = {v: run_all(s, feeds) for v, s in sessions.items()}
    sp = speed(sessions, feeds)
    load = os.getloadavg()[0]  # the machine is shared: how busy it was while timing
    row = {"case": key, "backbone": bb, "data": data_name, "modality": model.modality, "n_test": len(test_items),
           "n_train": len(parts.train), "fit_s": round(fit_s, 1), "quantize_s": round(quantize_s, 1),
           "load_average_while_timing": round(load, 1),
           "accuracy_torch": float((p_torch.argmax(1) == y).mean()),
           "quantization": {k: v for k, v in q.items() if k != "sweep"}, "sweep": q.get("sweep", {})}
    for v in sessions:
        p = probs[v]
        check = {"n": len(p), "max_abs_diff": float(np.abs(p - p_torch).max()),
                 "top1_agreement": float((p.argmax(1) == p_torch.argmax(1)).mean()),
                 "accuracy_torch": row["accuracy_torch"], "accuracy": float((p.argmax(1) == y).mean())}
        row[v] = {**check, "passes": _passes(check, tolerance("fp32" if v == "fp32" else "int8", model.modality)),
                  "size_mb": {"fp32": fp32, "int8": int8, "int8-qat": run / "qat.onnx"}[v].stat().st_size / 1e6, **sp[v]}
    row["int8_vs_fp32"] = {"agreement": float((probs["int8"].argmax(1) == probs["fp32"].argmax(1)).mean()),
                           "speedup_b1": row["fp32"]["b1_ms"] / row["int8"]["b1_ms"],
                           "speedup_b32": row["int8"]["b32_items_s"] / row["fp32"]["b32_items_s"],
                           "size_ratio": row["int8"]["size_mb"] / row["fp32"]["size_mb"],
                           "accuracy_drop_pts": 100 * (row["fp32"]["accuracy"] - row["int8"]["accuracy"])}
    if qat:
        row["int8_qat"] = {k: v for k, v in qat.items() if k != "sweep"}
        row["int8-qat_vs_fp32"] = {"speedup_b1": row["fp32"]["b1_ms"] / row["int8-qat"]["b1_ms"],
                                   "speedup_b32": row["int8-qat"]["b32_items_s"] / row["fp32"]["b32_items_s"],
                                   "size_ratio": row["int8-qat"]["size_mb"] / row["fp32"]["size_mb"],
                                   "accuracy_drop_pts": 100 * (row["fp32"]["accuracy"] - row["int8-qat"]["accuracy"])}
    return row


def methods_case(tmp: Path) -> list[dict]:
    """Calibration methods compared on lite0 / MNIST: every convolution int8 (no sweep), test agreement."""
    from headstart.export.quantize import CALIBRATION_METHODS, _kl

    data = load_data("builtin:mnist:60")
    parts = split(data, seed=0)
    run = tmp / "methods"
    model = headstart.fit(data, backbone="efficientnet-lite0", out=run, progress=False, baseline=False)
    spec = model.backbone.card.input
    fp32 = run / "fp32.onnx"
    _export(model, fp32)
    calib = np.stack([resize_crop(parts.train.load(i), spec) for i in range(min(256, len(parts.train)))])
    probe = np.stack([resize_crop(parts.val.load(i), spec) for i in range(min(128, len(parts.val)))])
    feeds = {"pixels": np.stack([resize_crop(parts.test.load(i), spec) for i in range(len(parts.test))])}
    p32 = run_all(session(fp32), feeds)
    out = []
    for method in CALIBRATION_METHODS:
        t0 = time.time()
        q = quantize_image(fp32, run / f"{method}.onnx", calib, probe, method=method, max_fp32_layers=0)
        p8 = run_all(session(run / f"{method}.onnx"), feeds)
        out.append({"method": method, "calibrate_s": round(time.time() - t0, 1), "probe_kl": q["probe_kl"],
                    "test_kl": _kl(p32, p8), "test_agreement": float((p8.argmax(1) == p32.argmax(1)).mean()),
                    "n_test": len(p32)})
        print(out[-1], flush=True)
    return out


def methods_table(rows: list[dict]) -> str:
    lines = ["| calibration | every convolution int8: test agreement with fp32 | test KL | probe KL | calibration time |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['test_agreement']:.3f} (n={r['n_test']}) | {r['test_kl']:.4f} | "
                     f"{r['probe_kl']:.4f} | {r['calibrate_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def qat_table(rows: list[dict]) -> str:
    lines = ["| case | n test | fp32 acc | int8 acc / agreement (fp32 layers) | int8-qat acc / agreement | passes int8 / qat "
             "| size ratio qat | batch 1 speed-up int8 / qat | batch 32 speed-up int8 / qat | qat time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "int8-qat" not in r:
            continue
        f, i, q = r["fp32"], r["int8"], r["int8-qat"]
        x, y = r["int8_vs_fp32"], r["int8-qat_vs_fp32"]
        lines.append(f"| {r['case']} | {r['n_test']} | {100 * f['accuracy']:.1f}% | {100 * i['accuracy']:.1f}% / "
                     f"{i['top1_agreement']:.3f} ({len(r['quantization']['fp32_layers'])}) | {100 * q['accuracy']:.1f}% / "
                     f"{q['top1_agreement']:.3f} | {'yes' if i['passes'] else 'NO'} / {'yes' if q['passes'] else 'NO'} | "
                     f"{y['size_ratio']:.2f} | {x['speedup_b1']:.2f}x / {y['speedup_b1']:.2f}x | "
                     f"{x['speedup_b32']:.2f}x / {y['speedup_b32']:.2f}x | {r['int8_qat']['seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


def table(rows: list[dict]) -> str:
    lines = ["| case | n test | fp32 acc | int8 acc | drop (pts) | int8 vs torch agreement | passes | fp32 layers kept | "
             "size MB fp32 / int8 (ratio) | batch 1 ms fp32 / int8 (speed-up) | batch 32 items/s fp32 / int8 (speed-up) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, i, x = r["fp32"], r["int8"], r["int8_vs_fp32"]
        kept = r["quantization"].get("fp32_layers")
        kept_s = f"{len(kept)} of {r['quantization']['conv_layers']}" if kept is not None else "-"
        lines.append(f"| {r['case']} | {r['n_test']} | {100 * f['accuracy']:.1f}% | {100 * i['accuracy']:.1f}% | "
                     f"{x['accuracy_drop_pts']:+.1f} | {i['top1_agreement']:.3f} | {'yes' if i['passes'] else 'NO'} | "
                     f"{kept_s} | {f['size_mb']:.1f} / {i['size_mb']:.1f} ({x['size_ratio']:.2f}) | "
                     f"{f['b1_ms']:.1f} / {i['b1_ms']:.1f} ({x['speedup_b1']:.2f}x) | "
                     f"{f['b32_items_s']:.0f} / {i['b32_items_s']:.0f} ({x['speedup_b32']:.2f}x) |")
    return "\n".join(lines) + "\n"


def profile_case(tmp: Path, runs: int = 30) -> dict:
    """ONNX Runtime's profiler on lite0 / MNIST, batch 1, fp32 vs int8 (headstart's recipe): time per
    operator type, summed over the runs, and per optimisation level for the int8 graph."""
    import onnxruntime as ort

    data = load_data("builtin:mnist:60")
    parts = split(data, seed=0)
    run = tmp / "profile"
    model = headstart.fit(data, backbone="efficientnet-lite0", out=run, progress=False, baseline=False)
    spec = model.backbone.card.input
    fp32, int8 = run / "fp32.onnx", run / "int8.onnx"
    _export(model, fp32)
    calib = np.stack([resize_crop(parts.train.load(i), spec) for i in range(min(256, len(parts.train)))])
    probe = np.stack([resize_crop(parts.val.load(i), spec) for i in range(min(128, len(parts.val)))])
    q = quantize_image(fp32, int8, calib, probe)
    feed_pixels_file(int8)  # as export does
    one = {"pixels": calib[:1]}
    out: dict = {"fp32_layers": q["fp32_layers"], "conv_layers": q["conv_layers"], "runs": runs, "threads": THREADS}
    for name, graph in (("fp32", fp32), ("int8", int8)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.enable_profiling = True
        options.profile_file_prefix = str(run / name)
        s = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        for _ in range(5):
            s.run(None, one)
        t = time.perf_counter()
        for _ in range(runs):
            s.run(None, one)
        wall = (time.perf_counter() - t) / runs
        events = json.loads(Path(s.end_profiling()).read_text())
        per_op: dict[str, float] = {}
        kernels: dict[str, int] = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                op = e["args"].get("op_name", "?")
                per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1000 / (runs + 5)
                kernels[op] = kernels.get(op, 0) + 1
        total = sum(per_op.values())
        out[name] = {"wall_ms": 1000 * wall, "kernel_ms": total,
                     "ops": {k: {"ms": round(v, 3), "share": round(v / total, 3), "kernels": kernels[k] // (runs + 5)}
                             for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])}}
        print(name, json.dumps(out[name])[:600], flush=True)
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    out["optimisation_levels_b1_ms"] = {}
    sessions = {}
    for level, value in levels.items():
        for name, graph in (("fp32", fp32), ("int8", int8)):
            options = ort.SessionOptions()
            options.intra_op_num_threads = THREADS
            options.graph_optimization_level = value
            sessions[f"{name}-{level}"] = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    sp = speed(sessions, {"pixels": calib[:32]}, repeats_b1=20, repeats_b32=2)
    out["optimisation_levels_b1_ms"] = {k: round(v["b1_ms"], 1) for k, v in sp.items()}
    print(out["optimisation_levels_b1_ms"], flush=True)
    return out


def profile_table(p: dict) -> str:
    ops = sorted(set(p["fp32"]["ops"]) | set(p["int8"]["ops"]),
                 key=lambda o: -max(p["fp32"]["ops"].get(o, {}).get("ms", 0), p["int8"]["ops"].get(o, {}).get("ms", 0)))
    lines = [f"Lite0, batch 1, {p['threads']} threads, {p['runs']} runs; int8 keeps {len(p['fp32_layers'])} of "
             f"{p['conv_layers']} convolutions in fp32. Wall {p['fp32']['wall_ms']:.1f} ms fp32, "
             f"{p['int8']['wall_ms']:.1f} ms int8.", "",
             "| operator | fp32 ms (kernels) | int8 ms (kernels) |", "|---|---|---|"]
    for o in ops:
        f, i = p["fp32"]["ops"].get(o), p["int8"]["ops"].get(o)
        show = lambda x: f"{x['ms']:.2f} ({x['kernels']})" if x else "-"  # noqa: E731
        lines.append(f"| {o} | {show(f)} | {show(i)} |")
    lines.append(f"| total kernel time | {p['fp32']['kernel_ms']:.2f} | {p['int8']['kernel_ms']:.2f} |")
    lines += ["", "| graph optimisation level | " + " | ".join(p["optimisation_levels_b1_ms"]) + " |",
              "|---" * (len(p["optimisation_levels_b1_ms"]) + 1) + "|",
              "| batch-1 ms | " + " | ".join(f"{v:.1f}" for v in p["optimisation_levels_b1_ms"].values()) + " |"]
    return "\n".join(lines) + "\n"


def merge_rows(path: Path, rows: list[dict]) -> list[dict]:
    """``rows`` written into the JSON list at ``path``, replacing the earlier rows of the same cases."""
    old = json.loads(path.read_text()) if path.exists() else []
    done = {r["case"] for r in rows}
    merged = sorted([r for r in old if r["case"] not in done] + rows, key=lambda r: ORDER.index(r["case"]))
    path.write_text(json.dumps(merged, indent=2))
    return merged


def main() -> None:
    global THREADS
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(ORDER))
    parser.add_argument("--methods", action="store_true", help="compare the calibration methods (lite0, MNIST) only")
    parser.add_argument("--profile", action="store_true", help="ONNX Runtime's per-operator profile, lite0 batch 1")
    parser.add_argument("--qat", action="store_true", help="image rows also with int8-qat (writes qat.json, qat.md)")
    parser.add_argument("--threads", type=int, default=THREADS, help="ONNX Runtime intra-op threads for the timing")
    parser.add_argument("--tag", default="", help="suffix of results / table file names (e.g. t1 for --threads 1)")
    args = parser.parse_args()
    THREADS = args.threads
    results, table_md = f"results{'_' + args.tag if args.tag else ''}.json", f"table{'_' + args.tag if args.tag else ''}.md"
    OUT.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.profile:
            prof = profile_case(Path(tmp))
            (OUT / "profile.json").write_text(json.dumps(prof, indent=2))
            (OUT / "profile.md").write_text(profile_table(prof))
            return
        if args.methods:
            methods = methods_case(Path(tmp))
            (OUT / "calibration_methods.json").write_text(json.dumps(methods, indent=2))
            (OUT / "calibration_methods.md").write_text(methods_table(methods))
            return
        json_name, render, md_name = ("qat.json", qat_table, "qat.md") if args.qat else (results, table, table_md)
        merged: list[dict] = []
        for key in args.only.split(","):
            print(f"== {key}", flush=True)
            rows.append(one_case(key, Path(tmp), args.qat))
            merged = merge_rows(OUT / json_name, rows)  # cases run separately are merged with the earlier ones
            (OUT / md_name).write_text(render(merged))
            print(render(rows[-1:]), flush=True)
        if args.qat:
            return

    load = os.getloadavg()[0]
    (OUT / table_md).write_text(table(merged) + f"\nONNX Runtime {THREADS} threads; load average at the end of the "
                                f"last run ({', '.join(r['case'] for r in rows)}) {load:.1f}.\n")

if __name__ == "__main__":
    main()
