"""The demo's linear probe and raw-pixel baseline: headstart vs scikit-learn on the same features.

Both sides do the same work in the same process on the same inputs (the demo's efficientnet-lite0
features of ``builtin:mnist:100`` for the probe, its 32x32 greyscale pixels for the baseline):
standardise, sweep the C grid with lbfgs warm-started along it, score each C on val, refit on
train + val with the best C. scikit-learn runs ``LogisticRegression(warm_start=True)`` with the
same tolerance as headstart, once with its default BLAS threads and once with one BLAS thread (what headstart
uses for problems this small). Repeats alternate between the sides; the table gives medians.
Then ``headstart demo`` runs twice with one fresh HEADSTART_CACHE; the second run is cache-warm.

    python bench/probe_speed.py [--repeats 5] [--no-demo] [--features-cache DIR]   # writes bench/results/probe_speed.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from headstart.train.linear_probe import DEFAULT_CS, LinearProbeConfig, linear_probe, standardiser
from headstart.train.logistic import TOL
from headstart.workflows.pipeline import encode_labels
from headstart.backbones import create_backbone
from headstart.data import load_data, split
from headstart.evaluation.baselines import _is_grey, raw_pixels
from headstart.features import extract_features_many

DEMO_DATA, DEMO_BACKBONE = "builtin:mnist:100", "efficientnet-lite0"
BASELINE_CS = tuple(float(c) for c in np.logspace(-4, 4, 9))  # as in evaluate/baselines.py


def demo_inputs(cache_dir: str) -> dict[str, dict[str, np.ndarray]]:
    data = load_data(DEMO_DATA)
    parts = split(data)
    sets = [parts.train, parts.val, parts.test]
    feats = extract_features_many(create_backbone(DEMO_BACKBONE), sets, cache_dir=cache_dir, progress=False)
    grey = _is_grey(parts.train)
    ys = [encode_labels(s.labels, data.label_names, "demo") for s in sets]
    return {"probe": {"xtr": feats[0], "xva": feats[1], "ytr": ys[0], "yva": ys[1]},
            "baseline": {"xtr": raw_pixels(parts.train, grey=grey), "xva": raw_pixels(parts.val, grey=grey),
                         "ytr": ys[0], "yva": ys[1]}}


def sklearn_sweep(xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray, cs: tuple[float, ...]) -> float:
    """The same protocol written with scikit-learn; returns the chosen C."""
    mean, std = standardiser(xtr)
    ztr, zva = (xtr - mean) / std, (xva - mean) / std
    model = LogisticRegression(warm_start=True, max_iter=500, tol=TOL)
    best = None
    for C in sorted(cs):
        model.set_params(C=C).fit(ztr, ytr)
        p = model.predict_proba(zva)
        acc = float((p.argmax(1) == yva).mean())
        loss = float(-np.log(np.clip(p[np.arange(len(yva)), yva], 1e-300, None)).mean())
        if best is None or (acc, -loss) > best[:2]:
            best = (acc, -loss, C)
    x_all, y_all = np.concatenate([xtr, xva]), np.concatenate([ytr, yva])
    mean, std = standardiser(x_all)
    LogisticRegression(C=best[2], max_iter=500, tol=TOL).fit((x_all - mean) / std, y_all)
    return best[2]


def time_cases(inputs: dict, repeats: int) -> list[dict]:
    rows = []
    for name, cs in (("probe", DEFAULT_CS), ("baseline", BASELINE_CS)):
        d = inputs[name]
        args = (d["xtr"], d["ytr"], d["xva"], d["yva"])
        times: dict[str, list[float]] = {"headstart": [], "sklearn": [], "sklearn_1_thread": []}
        chosen = {}
        for _ in range(repeats):
            t = time.perf_counter()
            _, info = linear_probe(*args[:2], *args[2:], 10, LinearProbeConfig(Cs=cs))
            times["headstart"].append(time.perf_counter() - t)
            chosen["headstart"] = info["C"]
            t = time.perf_counter()
            chosen["sklearn"] = sklearn_sweep(d["xtr"], d["ytr"], d["xva"], d["yva"], cs)
            times["sklearn"].append(time.perf_counter() - t)
            with threadpool_limits(1, user_api="blas"):
                t = time.perf_counter()
                sklearn_sweep(d["xtr"], d["ytr"], d["xva"], d["yva"], cs)
                times["sklearn_1_thread"].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"case": name, "shape": list(d["xtr"].shape), "n_val": len(d["yva"]), "Cs": len(cs),
                     "median_s": med, "all_s": times, "chosen_C": chosen,
                     "ratio_vs_sklearn": med["headstart"] / med["sklearn"],
                     "ratio_vs_sklearn_1_thread": med["headstart"] / med["sklearn_1_thread"]})
        print(rows[-1], flush=True)
    return rows


def time_demo(cache_dir: str, out_dir: str) -> dict:
    env = {**os.environ, "HEADSTART_CACHE": cache_dir}
    runs = []
    for i in range(2):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "headstart", "demo", "--out", f"{out_dir}/run{i}"], env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
        timings = json.loads((Path(out_dir) / f"run{i}" / "headstart.json").read_text()).get("timings_s", {})
        said = re.search(r"Total time: (\d+) s", proc.stdout)
        runs.append({"wall_s": wall, "demo_says_s": int(said.group(1)) if said else None, "timings_s": timings})
        print(f"demo run {i + 1}: {wall:.1f} s {timings}", flush=True)
    return {"cold": runs[0], "warm": runs[1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-demo", action="store_true")
    ap.add_argument("--features-cache", default=None,
                    help="a HEADSTART_CACHE that already holds the demo's features (default: the demo runs' own)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        demo = None if args.no_demo else time_demo(f"{tmp}/cache", f"{tmp}/out")
        rows = time_cases(demo_inputs(f"{args.features_cache or tmp + '/cache'}/features"), args.repeats)
    result = {"cases": rows, "demo": demo, "repeats": args.repeats, "cpus": os.cpu_count(),
              "load_average_at_end": os.getloadavg(), "python": platform.python_version()}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "probe_speed.json").write_text(json.dumps(result, indent=2))
    lines = [f"Medians of {args.repeats} alternating repeats; C sweep (lbfgs, warm-started) + val scoring + refit on "
             f"train + val. {os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.1f}.", "",
             "| case | train x dims | Cs | headstart | scikit-learn | ratio | scikit-learn, 1 BLAS thread | ratio | "
             "C (headstart / sklearn) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["median_s"]
        lines.append(f"| {r['case']} | {r['shape'][0]} x {r['shape'][1]} | {r['Cs']} | {m['headstart']:.2f} s | "
                     f"{m['sklearn']:.2f} s | {r['ratio_vs_sklearn']:.2f}x | {m['sklearn_1_thread']:.2f} s | "
                     f"{r['ratio_vs_sklearn_1_thread']:.2f}x | {r['chosen_C']['headstart']:.3g} / "
                     f"{r['chosen_C']['sklearn']:.3g} |")
    if demo:
        lines += ["", "| `headstart demo` | wall | load and check | adapt (features + probe) | evaluate + baseline |",
                  "|---|---|---|---|---|"]
        for k in ("cold", "warm"):
            t = demo[k]["timings_s"]
            lines.append(f"| {k} cache | {demo[k]['wall_s']:.1f} s | {t.get('load_and_check', float('nan')):.1f} s | "
                         f"{t.get('adapt', float('nan')):.1f} s | {t.get('evaluate_and_baseline', float('nan')):.1f} s |")
    lines += ["", "`python bench/probe_speed.py`"]
    (out / "probe_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
