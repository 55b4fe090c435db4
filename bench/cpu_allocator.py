"""CPU throughput of the two memory settings that #4's cost work found, each beside its baseline.

1. glibc malloc tuning (``headstart._malloc``), in child processes with ``HEADSTART_MALLOC_TUNING=1``
   and ``=0``, alternated, so that load on the machine hits both: PyTorch inference
   (BatchNorm-folded EfficientNet-Lite0, batch 64, as feature extraction runs it) and fine-tuning
   steps (batch 16, forward + backward + AdamW, as the training loop runs them) in one child; one
   epoch of headstart's loop on minilm-l6 (48 BBC texts at 512 tokens, batch 16, as
   ``bench/throughput.py`` runs it) in another. Peak resident memory per child: the price.
2. ONNX Runtime call size (``headstart.engine.ONNX_CHUNK``): a fresh session's first pass over
   128 images in calls of 8 vs 64, per backbone; ranking runs each session only once or twice, so
   the first pass is what it pays.

    python bench/cpu_allocator.py [--rounds 2]      # writes bench/results/cpu_allocator.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "cpu_allocator.md"


def child_text() -> None:
    """One process: an epoch of headstart's loop on text, under whatever the environment says."""
    from throughput import run  # bench/throughput.py: the same text fine-tuning, one epoch

    r = run("headstart", 48, 16, 512)
    print(json.dumps({"text_samples_per_s": r["samples_per_s"], "text_peak_rss_mb": r["peak_rss_mb"]}))


def child() -> None:
    """One process: torch inference and training throughput under whatever the environment says."""
    import torch

    from headstart._malloc import tune_malloc
    from headstart.backbones import create_backbone
    from headstart.data import load_data
    from headstart.train.loop import _freeze_batchnorm

    tuned = tune_malloc()
    data = load_data("builtin:digits")
    bb = create_backbone("efficientnet-lite0")
    x = bb.preprocess([data.load(i) for i in range(128)])["pixel_values"].contiguous(memory_format=torch.channels_last)
    net = bb.for_inference().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        net(pixel_values=x[:64])  # warm-up
        t = time.perf_counter()
        for i in range(0, 128, 64):
            net(pixel_values=x[i:i + 64])
        infer = (time.perf_counter() - t) / 128
    train = bb.train().to(memory_format=torch.channels_last)
    _freeze_batchnorm(train)  # as the training loop does: pre-trained BatchNorm statistics kept
    opt = torch.optim.AdamW(train.parameters(), lr=1e-5, fused=True)

    def steps(n: int) -> None:
        for i in range(n):
            train(pixel_values=x[16 * i:16 * (i + 1)]).square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    steps(1)  # warm-up
    t = time.perf_counter()
    steps(6)
    step = (time.perf_counter() - t) / 96
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tuned": tuned, "infer_ms": 1000 * infer, "train_ms": 1000 * step, "image_peak_rss_mb": peak_mb}))


def onnx_first_pass() -> dict[str, dict[int, float]]:
    """ms per image of a fresh session's first pass over 128 images, in calls of 8 and of 64."""
    import numpy as np

    from headstart._malloc import tune_malloc
    from headstart.backbones import create_backbone
    from headstart.data import load_data
    from headstart.engine import _export, cpu_session

    tune_malloc()  # as in a ranking
    data = load_data("builtin:digits")
    result: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"):
            bb = create_backbone(name)
            x = bb.preprocess([data.load(i) for i in range(128)])["pixel_values"]
            path = Path(tmp) / f"{name}.onnx"
            _export(bb.for_inference(), x[:2], path)
            arr = x.numpy()
            result[name] = {}
            for chunk in (64, 8, 64, 8):
                session = cpu_session(path)  # as extraction opens it
                t = time.perf_counter()
                for i in range(0, 128, chunk):
                    session.run(None, {"pixel_values": arr[i:i + chunk]})
                ms = 1000 * (time.perf_counter() - t) / 128
                result[name][chunk] = min(ms, result[name].get(chunk, np.inf))
            print(f"{name}: first pass {result[name][64]:.1f} ms/image in calls of 64, {result[name][8]:.1f} in calls of 8",
                  flush=True)
    return result


def main() -> None:
    if "--child" in sys.argv:
        child_text() if "text" in sys.argv else child()
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2, help="alternating pairs of child processes")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"1": [], "0": []}
    for _ in range(args.rounds):
        for setting in ("0", "1"):
            row = {}
            for kind in ("image", "text"):
                out = subprocess.run([sys.executable, __file__, "--child", kind], capture_output=True, text=True,
                                     check=True, env={**os.environ, "HEADSTART_MALLOC_TUNING": setting}).stdout
                row.update(json.loads(out.strip().splitlines()[-1]))
            runs[setting].append(row)
            print(f"malloc tuning {setting}: {row}", flush=True)
    keys = ("infer_ms", "train_ms", "image_peak_rss_mb", "text_samples_per_s", "text_peak_rss_mb")
    med = {s: {k: statistics.median(r[k] for r in rs) for k in keys} for s, rs in runs.items()}
    ort = onnx_first_pass()
    import torch

    lines = [f"CPU memory settings, {torch.get_num_threads()} threads, EfficientNet-Lite on UCI digits images "
             f"(`python bench/cpu_allocator.py`, {args.rounds} alternating process pairs, medians).", "",
             "| PyTorch, ms per image | glibc defaults | headstart's malloc tuning | speed-up |", "|---|---|---|---|"]
    for key, label in (("infer_ms", "inference, lite0, batch 64"), ("train_ms", "fine-tuning step, lite0, batch 16")):
        lines.append(f"| {label} | {med['0'][key]:.1f} | {med['1'][key]:.1f} | {med['0'][key] / med['1'][key]:.2f}x |")
    lines += ["", "| the price and the text case | glibc defaults | headstart's malloc tuning | ratio |", "|---|---|---|---|",
              f"| peak RSS MB, the image child | {med['0']['image_peak_rss_mb']:.0f} | {med['1']['image_peak_rss_mb']:.0f} | "
              f"{med['1']['image_peak_rss_mb'] / med['0']['image_peak_rss_mb']:.2f}x |",
              f"| minilm-l6 fine-tuning at 512 tokens, samples/s | {med['0']['text_samples_per_s']:.2f} | "
              f"{med['1']['text_samples_per_s']:.2f} | {med['1']['text_samples_per_s'] / med['0']['text_samples_per_s']:.2f}x |",
              f"| peak RSS MB, the text child | {med['0']['text_peak_rss_mb']:.0f} | {med['1']['text_peak_rss_mb']:.0f} | "
              f"{med['1']['text_peak_rss_mb'] / med['0']['text_peak_rss_mb']:.2f}x |"]
    lines += ["", "| ONNX Runtime, fresh session's first pass, ms per image | calls of 64 | calls of 8 | speed-up |",
              "|---|---|---|---|"]
    for name, r in ort.items():
        lines.append(f"| {name} | {r[64]:.1f} | {r[8]:.1f} | {r[64] / r[8]:.2f}x |")
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
