"""``--strategy auto`` against the linear probe and the best single strategy in hindsight (the oracle).

For each data set and seed, on the same split (``headstart.fit`` with the same seed): auto with a
time budget; then every single strategy auto may pick, each at its defaults, scored on the test
split; the oracle is the best of those test accuracies (which no honest method can know in
advance). Reported: test accuracy of auto, the probe and the oracle, auto's time against its
budget, and what auto chose.

    python bench/auto.py [--sets mnist32,bbc8] [--seeds 0] [--budget 180] [--image-size 96]

Writes bench/results/auto/{results.json,summary.md} (rows are appended as they finish, so a long
run can be read while it goes).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

import headstart

SETS = {
    "mnist32": {"data": "builtin:mnist:32", "backbone": "efficientnet-lite0", "single": ["partial", "full", "lp-ft"]},
    "digits32": {"data": "builtin:digits:32", "backbone": "efficientnet-lite0", "single": ["partial", "full", "lp-ft"]},
    "bbc8": {"data": "builtin:bbc-news:8", "backbone": "minilm-l6", "single": ["partial", "full", "lp-ft", "lora"]},
    "bbc32": {"data": "builtin:bbc-news:32", "backbone": "minilm-l6", "single": ["partial", "full", "lp-ft", "lora"]},
}
OUT = Path(__file__).parent / "results" / "auto"


def fit(spec: dict, strategy: str, seed: int, args: argparse.Namespace, options: dict | None = None) -> dict:
    kw = {"image_size": args.image_size} if spec["backbone"].startswith("efficientnet") else {"max_length": 128}
    t = time.perf_counter()
    model = headstart.fit(spec["data"], backbone=spec["backbone"], strategy=strategy, seed=seed, baseline=False,
                          progress=False, options=options or {}, **kw)
    seconds = time.perf_counter() - t
    details = model.info["strategy"]["details"]
    return {"strategy": strategy, "test_accuracy": model.info["metrics"]["test"]["accuracy"], "seconds": seconds,
            "chosen": details.get("chosen_strategy"), "chosen_lr": details.get("chosen_lr"),
            "search": details.get("search"), "search_seconds": details.get("search_seconds"),
            "n_test": model.info["metrics"]["test"]["n"]}


def summarise(rows: list[dict], budget: float) -> str:
    lines = [f"auto with a {budget:.0f} s budget vs the linear probe vs the oracle (best single strategy on the test "
             "split, in hindsight); test accuracy in %.", "",
             "| set | seed | n test | auto (chose) | probe | oracle (which) | auto - oracle | auto - probe | "
             "auto's search time |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, p, o = r["auto"]["test_accuracy"], r["probe"]["test_accuracy"], r["oracle"]["test_accuracy"]
        lines.append(f"| {r['set']} | {r['seed']} | {r['auto']['n_test']} | {100 * a:.1f} ({r['auto']['chosen']}"
                     + (f", lr {r['auto']['chosen_lr']:.2g}" if r['auto'].get('chosen_lr') else "") + ") | "
                     f"{100 * p:.1f} | {100 * o:.1f} ({r['oracle']['strategy']}) | {100 * (a - o):+.1f} | "
                     f"{100 * (a - p):+.1f} | {r['auto']['search_seconds']:.0f} s of {budget:.0f} s |")
    if rows:
        d_o = np.mean([r["auto"]["test_accuracy"] - r["oracle"]["test_accuracy"] for r in rows])
        worst_p = min(r["auto"]["test_accuracy"] - r["probe"]["test_accuracy"] for r in rows)
        inside = all(r["auto"]["search_seconds"] <= budget * 1.05 for r in rows)
        lines += ["", f"Mean auto - oracle: {100 * d_o:+.1f} points (goal: within 1). Worst auto - probe: "
                      f"{100 * worst_p:+.1f} points (goal: never below -1). Inside the budget every time: "
                      f"{'yes' if inside else 'no'}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="mnist32,bbc8")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--budget", type=float, default=180.0)
    ap.add_argument("--image-size", type=int, default=96, help="images: smaller than the backbone's 224 for CPU time")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for name in args.sets.split(","):
        spec = SETS[name]
        for seed in (int(s) for s in args.seeds.split(",")):
            auto = fit(spec, "auto", seed, args, {"budget_s": args.budget})
            print(f"{name} seed {seed}: auto chose {auto['chosen']} -> {auto['test_accuracy']:.3f} "
                  f"({auto['seconds']:.0f} s)", flush=True)
            singles = [fit(spec, s, seed, args) for s in ["linear-probe", "prototypes", *spec["single"]]]
            for s in singles:
                print(f"  {s['strategy']}: {s['test_accuracy']:.3f} ({s['seconds']:.0f} s)", flush=True)
            oracle = max(singles, key=lambda s: s["test_accuracy"])
            rows.append({"set": name, "seed": seed, "auto": auto, "probe": singles[0], "oracle": oracle,
                         "singles": singles})
            (OUT / "results.json").write_text(json.dumps({"budget_s": args.budget, "image_size": args.image_size,
                                                          "cpus": os.cpu_count(), "rows": rows}, indent=2))
            (OUT / "summary.md").write_text(summarise(rows, args.budget))
    print(summarise(rows, args.budget))


if __name__ == "__main__":
    main()
