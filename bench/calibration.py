"""Temperature scaling on the fine-tuning strategies: test ECE before / after, accuracy unchanged.

The same data protocol as bench/strategies.py (a fixed test split, K examples per class for
training, K/4 per class for validation): BBC News at 8 and 32 per class (minilm-l6), MNIST at 32
per class (efficientnet-lite0). The temperature is fitted on the validation split only.

    python bench/calibration.py                      # every row, seed 0
    python bench/calibration.py --seeds 0,1,2 --only full,lp-ft
Rows are appended to bench/results/calibration.jsonl; the table goes to bench/results/calibration.md.
Each run's uncalibrated validation and test probabilities are kept in bench/results/calibration/*.npz,
so that `python bench/calibration.py --refit` re-scores the calibration method without training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from strategies import SETTINGS  # noqa: E402  (the same data and options as the strategies table)

from headstart.runtime import Runtime
from headstart.methods import make_config  # noqa: E402
from headstart.workflows.pipeline import train_model  # noqa: E402
from headstart.backbones import create_backbone  # noqa: E402
from headstart.data import load_data, split  # noqa: E402
from headstart.data.builtin import take_per_class  # noqa: E402
from headstart.data.splits import Splits  # noqa: E402
from headstart.evaluation.calibration import apply_temperature, fit_temperature  # noqa: E402
from headstart.evaluation.metrics import classification_metrics  # noqa: E402

ROWS = [("text", 8), ("text", 32), ("image", 32)]
FINE_TUNING = ("full", "lp-ft", "partial", "gradual", "lora")
OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--only", default="", help="comma-separated strategies (default: every fine-tuning one)")
    ap.add_argument("--rows", default="", help="e.g. text:8,image:32 (default: all three)")
    ap.add_argument("--refit", action="store_true", help="re-fit the temperature on the saved probabilities only")
    args = ap.parse_args()
    if args.refit:
        return refit()
    rows = [(r.split(":")[0], int(r.split(":")[1])) for r in args.rows.split(",")] if args.rows else ROWS
    OUT.mkdir(exist_ok=True)
    for kind, k in rows:
        cfg = SETTINGS[kind]
        data = load_data(cfg["data"])
        fixed = split(data, val=0.15, test=0.2, seed=0)
        names = data.label_names
        for seed in (int(s) for s in args.seeds.split(",")):
            parts = Splits(take_per_class(fixed.train, k, seed=seed), take_per_class(fixed.val, max(2, k // 4), seed=seed),
                           fixed.test)
            for strategy, options in cfg["strategies"].items():
                if strategy not in FINE_TUNING or (args.only and strategy not in args.only.split(",")):
                    continue
                t = time.perf_counter()
                model, proba, ys, chosen = train_model(create_backbone(cfg["backbone"], **cfg["kw"]), parts, names,
                                                       strategy, make_config(strategy, **options), seed=seed,
                                                       runtime=Runtime(progress=False))
                cal = chosen["calibration"]
                raw = apply_temperature(proba, 1.0 / cal["temperature"])
                raw_val = apply_temperature(model.predict_proba(parts.val), 1.0 / cal["temperature"])
                (OUT / "calibration").mkdir(exist_ok=True)
                np.savez_compressed(OUT / "calibration" / f"{kind}-{k}-{strategy}-{seed}.npz", val=raw_val,
                                    y_val=ys["val"], test=raw, y_test=ys["test"])
                before, after = (classification_metrics(ys["test"], p, names) for p in (raw, proba))
                row = {"data": kind, "per_class": k, "seed": seed, "strategy": strategy, "n_val": len(parts.val),
                       "n_test": len(parts.test), "temperature": cal["temperature"], "kept": cal["kept"],
                       "ece_before": before["ece"], "ece_after": after["ece"], "nll_before": before["log_loss"],
                       "nll_after": after["log_loss"], "accuracy_before": before["accuracy"],
                       "accuracy_after": after["accuracy"], "seconds": time.perf_counter() - t}
                with open(OUT / "calibration.jsonl", "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    table()


def refit() -> None:
    """Today's fit_temperature on each saved run's validation probabilities; test ECE before / after."""
    rows = []
    for f in sorted((OUT / "calibration").glob("*.npz")):
        d = np.load(f)
        parts = f.stem.split("-")  # kind-k-strategy-seed, the strategy may hold dashes
        kind, k, strategy, seed = parts[0], parts[1], "-".join(parts[2:-1]), parts[-1]
        cal = fit_temperature(d["val"], d["y_val"])
        after = apply_temperature(d["test"], cal["temperature"])
        names = [str(i) for i in range(d["test"].shape[1])]
        before_m, after_m = (classification_metrics(d["y_test"], p, names) for p in (d["test"], after))
        rows.append({"data": kind, "per_class": int(k), "seed": int(seed), "strategy": strategy,
                     "n_val": len(d["y_val"]), "n_test": len(d["y_test"]), "temperature": cal["temperature"],
                     "kept": cal["kept"], "ece_before": before_m["ece"], "ece_after": after_m["ece"],
                     "accuracy_before": before_m["accuracy"], "accuracy_after": after_m["accuracy"]})
    with open(OUT / "calibration.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    table()


def table() -> None:
    rows = [json.loads(line) for line in open(OUT / "calibration.jsonl")]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["data"], r["per_class"], r["strategy"]), []).append(r)
    lines = ["| data | per class | strategy | seeds | T | test ECE before | test ECE after | accuracy before -> after |",
             "|---|---|---|---|---|---|---|---|"]
    for key in sorted(groups):
        g = groups[key]

        def m(field: str) -> str:
            v = np.array([r[field] for r in g])
            return f"{v.mean():.3f}" + (f" +- {v.std(ddof=1):.3f}" if len(v) > 1 else "")
        acc_b = np.mean([r["accuracy_before"] for r in g]) * 100
        acc_a = np.mean([r["accuracy_after"] for r in g]) * 100
        name = {"text": "BBC News", "image": "MNIST"}[key[0]]
        lines.append(f"| {name} | {key[1]} | {key[2]} | {len(g)} | {m('temperature')} | {m('ece_before')} | "
                     f"{m('ece_after')} | {acc_b:.1f} -> {acc_a:.1f} |")
    (OUT / "calibration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
