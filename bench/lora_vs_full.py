"""LoRA vs full fine-tuning of minilm-l6 - trainable parameters, peak
memory, time, accuracy; and the merged LoRA artifact predicts what the unmerged adapter did.

Each strategy runs in its own subprocess (peak resident memory is its own), on the same 16 BBC
articles per class, 2 epochs, seed 0.

    python bench/lora_vs_full.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time


def one(strategy: str) -> dict:
    import numpy as np

    import headstart

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = headstart.fit("builtin:bbc-news:16", backbone="minilm-l6", max_length=128, strategy=strategy,
                              options={"epochs": 2, "batch_size": 8}, progress=False, baseline=False, out=f"{tmp}/m")
        seconds = time.perf_counter() - start
        d = model.info["strategy"]["details"]
        texts = headstart.load_data("builtin:bbc-news:3").items
        same = float(np.abs(headstart.load(f"{tmp}/m").predict_proba(texts) - model.predict_proba(texts)).max())
    return {"strategy": strategy, "trainable_params": d["trainable_params"], "total_params": d["total_params"],
            "adapter_params": d.get("adapter_params"), "merge_max_abs_feature_diff": d.get("merge_max_abs_diff"),
            "reload_max_abs_proba_diff": same, "test_accuracy": model.info["metrics"]["test"]["accuracy"],
            "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2])))
        return
    rows = []
    for strategy in ("full", "lora"):
        out = subprocess.run([sys.executable, __file__, "--one", strategy], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| strategy | trainable params | share | peak RSS MB | seconds | test accuracy | merged vs adapter (max feature diff) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        merge = f"{r['merge_max_abs_feature_diff']:.1e}" if r["merge_max_abs_feature_diff"] is not None else "-"
        print(f"| {r['strategy']} | {r['trainable_params']:,} | {100 * r['trainable_params'] / r['total_params']:.2f}% | "
              f"{r['peak_rss_mb']:.0f} | {r['seconds']:.0f} | {100 * r['test_accuracy']:.1f}% | {merge} |")
    full, lora = rows
    print(f"LoRA / full: {lora['trainable_params'] / full['trainable_params']:.4f}x trainable parameters, "
          f"{lora['peak_rss_mb'] / full['peak_rss_mb']:.2f}x peak memory")


if __name__ == "__main__":
    main()
