"""``--strategy auto`` against the linear probe and the best single strategy in hindsight (the oracle).

Each set is a small labelled set (K examples per class, drawn with the seed) plus a large held-out
test set drawn from the rest, so that the test accuracy of a strategy is known to about a point and
the oracle (the best test accuracy among the single strategies, which no honest method can know in
advance) is not inflated by picking the luckiest of several noisy scores. headstart carves its
validation split out of the labelled items, as it would for a user.

For each set and seed: auto with a time budget; every single strategy auto may pick, each at its
defaults (kept in ``singles_s<seed>.json`` and reused when the set, seed, strategy and sizes match, so auto
can be re-measured alone with ``--auto-only``; one file per seed). Reported: test accuracy of auto, the probe and the
oracle, auto's search time against its budget, and what auto chose.

    python bench/auto.py [--sets mnist32,digits32,bbc8,bbc32,lfw] [--seeds 0,1,2] [--budget 150]
                         [--image-size 64] [--singles-only | --auto-only] [--tag NAME]

Writes bench/results/auto/{results[_TAG].json,summary[_TAG].md}; rows are written as they finish.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

import headstart
from headstart.data import Dataset
from headstart.data.builtin import load_builtin

OUT = Path(__file__).parent / "results" / "auto"
TEST_PER_CLASS = 100


def _lfw() -> Dataset:
    from skimage.data import lfw_subset

    faces = lfw_subset()  # 200 x 25 x 25 floats in [0, 1]: 100 faces, then 100 non-face patches
    images = [(f * 255).round().astype(np.uint8) for f in faces]
    labels = ["face"] * 100 + ["not-face"] * 100
    return Dataset("image", images, labels, [f"lfw_subset #{i}" for i in range(200)], source="lfw_subset")


SETS = {
    "mnist32": {"data": "builtin:mnist", "k": 32, "backbone": "efficientnet-lite0"},
    "digits32": {"data": "builtin:digits", "k": 32, "backbone": "efficientnet-lite0"},
    "bbc8": {"data": "builtin:bbc-news", "k": 8, "backbone": "minilm-l6"},
    "bbc32": {"data": "builtin:bbc-news", "k": 32, "backbone": "minilm-l6"},
    "lfw": {"data": "lfw", "k": 30, "backbone": "efficientnet-lite0", "test_per_class": 70},
}
SINGLES = {"image": ["linear-probe", "prototypes", "partial", "full", "lp-ft"],
           "text": ["linear-probe", "prototypes", "partial", "full", "lp-ft", "lora", "setfit"]}


def make_set(name: str, seed: int) -> Dataset:
    """K labelled items per class (split 'train') and a test set from the rest (split 'test')."""
    spec = SETS[name]
    data = _lfw() if spec["data"] == "lfw" else load_builtin(spec["data"].split(":", 1)[1])
    # one copy of each item (BBC News has a few articles twice): a copy on both sides is a leak
    _, first = np.unique(data.content_hashes(), return_index=True)
    data = data.subset(np.sort(first))
    rng = np.random.default_rng(1000 + seed)
    labels = np.asarray(data.labels)
    keep, split = [], []
    for c in data.label_names:
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = spec.get("test_per_class", TEST_PER_CLASS)
        keep += idx[:spec["k"]].tolist() + idx[spec["k"]:spec["k"] + n_test].tolist()
        split += ["train"] * min(spec["k"], len(idx)) + ["test"] * len(idx[spec["k"]:spec["k"] + n_test])
    out = data.subset(keep)
    out.splits = split
    out.source = f"{name} (seed {seed})"
    return out


def fit(name: str, strategy: str, seed: int, args: argparse.Namespace, options: dict | None = None) -> dict:
    spec = SETS[name]
    kw = {"image_size": args.image_size} if spec["backbone"].startswith("efficientnet") else {"max_length": 128}
    data = make_set(name, seed)
    t = time.perf_counter()
    model = headstart.fit(data, backbone=spec["backbone"], strategy=strategy, seed=seed, baseline=False,
                          progress=False, options=options or {}, **kw)
    seconds = time.perf_counter() - t
    details = model.info["strategy"]["details"]
    return {"strategy": strategy, "test_accuracy": model.info["metrics"]["test"]["accuracy"], "seconds": seconds,
            "chosen": details.get("chosen_strategy"), "chosen_lr": details.get("chosen_lr"),
            "search": details.get("search"), "search_seconds": details.get("search_seconds"),
            "reasons": details.get("reasons"), "n_test": model.info["metrics"]["test"]["n"],
            "n_val": model.info["data"]["splits"]["val"]}


def summarise(rows: list[dict], budget: float) -> str:
    lines = [f"auto with a time budget (the last column) vs the linear probe vs the oracle (best single strategy on the test "
             "split, in hindsight); test accuracy in %.", "",
             "| set | seed | n test | auto (chose) | probe | oracle (which) | auto - oracle | auto - probe | "
             "auto's search time |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, p, o = r["auto"]["test_accuracy"], r["probe"]["test_accuracy"], r["oracle"]["test_accuracy"]
        lines.append(f"| {r['set']} | {r['seed']} | {r['auto']['n_test']} | {100 * a:.1f} ({r['auto']['chosen']}"
                     + (f", lr {r['auto']['chosen_lr']:.2g}" if r['auto'].get('chosen_lr') else "") + ") | "
                     f"{100 * p:.1f} | {100 * o:.1f} ({r['oracle']['strategy']}) | {100 * (a - o):+.1f} | "
                     f"{100 * (a - p):+.1f} | {r['auto']['search_seconds']:.0f} s of {r.get('budget_s', budget):.0f} s |")
    if rows:
        d_o = [r["auto"]["test_accuracy"] - r["oracle"]["test_accuracy"] for r in rows]
        d_p = [r["auto"]["test_accuracy"] - r["probe"]["test_accuracy"] for r in rows]
        inside = all(r["auto"]["search_seconds"] <= r.get("budget_s", budget) * 1.05 for r in rows)
        se = np.std(d_o, ddof=1) / np.sqrt(len(d_o)) if len(d_o) > 1 else float("nan")
        lines += ["", f"Mean auto - oracle: {100 * np.mean(d_o):+.1f} points (+- {100 * 1.96 * se:.1f}, 95% over the "
                      f"{len(rows)} rows; goal: within 1). Mean auto - probe: {100 * np.mean(d_p):+.1f}; worst auto - "
                      f"probe: {100 * min(d_p):+.1f} points (goal: never below -1). Inside the budget every time: "
                      f"{'yes' if inside else 'no'}."]
    return "\n".join(lines) + "\n"


def merge(prefix: str = "") -> None:
    """The rows of every tagged run whose tag starts with ``prefix`` (one per set and seed; the latest
    run wins) in one table."""
    rows: dict[tuple[str, int], dict] = {}
    budgets = set()
    for path in sorted(OUT.glob(f"results_{prefix}*.json"), key=lambda p: p.stat().st_mtime):
        d = json.loads(path.read_text())
        budgets.add(d["budget_s"])
        for r in d["rows"]:
            rows[(r["set"], r["seed"])] = {"budget_s": d["budget_s"], **r}
    order = list(SETS)
    merged = sorted(rows.values(), key=lambda r: (order.index(r["set"]), r["seed"]))
    (OUT / "results.json").write_text(json.dumps({"budget_s": sorted(budgets), "rows": merged}, indent=2))
    text = summarise(merged, max(budgets))
    per_set = ["", "| set | seeds | auto | probe | oracle | auto - oracle | auto - probe |", "|---|---|---|---|---|---|---|"]
    for name in order:
        rs = [r for r in merged if r["set"] == name]
        if rs:
            a, p, o = (100 * np.mean([r[k]["test_accuracy"] for r in rs]) for k in ("auto", "probe", "oracle"))
            per_set.append(f"| {name} | {len(rs)} | {a:.1f} | {p:.1f} | {o:.1f} | {a - o:+.1f} | {a - p:+.1f} |")
    (OUT / "summary.md").write_text(text + "\n".join(per_set) + "\n")
    print(text + "\n".join(per_set))


def replay(prefix: str = "final_") -> str:
    """Replay auto's final choice on the stored fold scores under other rules, to see what the rule
    costs and buys. A strategy auto did not deploy is read from its single run's test accuracy (the
    same strategy at its default setting): an approximation, said so in the output."""
    rows: dict[tuple[str, int], dict] = {}
    for path in sorted(OUT.glob(f"results_{prefix}*.json"), key=lambda p: p.stat().st_mtime):
        for r in json.loads(path.read_text())["rows"]:
            rows[(r["set"], r["seed"])] = r
    rules = {"one standard error (auto's rule)": 1.0, "half a standard error": 0.5, "best fold score": 0.0}
    lines = ["| rule | mean auto - oracle | worst auto - probe | rows that leave the probe |", "|---|---|---|---|"]
    for rule, k in rules.items():
        d_o, d_p, moved = [], [], 0
        for r in rows.values():
            test = {s["strategy"]: s["test_accuracy"] for s in r["singles"]}
            folds = [s for s in r["auto"]["search"] if s.get("cv_accuracy") is not None]
            probe = next(s for s in folds if s["strategy"] == "linear-probe")
            best = max(folds, key=lambda s: s["cv_accuracy"])  # first of equals: the race order
            n = best["cv_items"]  # distinct items: repeated folds score the same ones again
            shrunk = (best["cv_accuracy"] * n + 2) / (n + 4)
            if probe["cv_accuracy"] >= best["cv_accuracy"] - k * np.sqrt(shrunk * (1 - shrunk) / n):
                best = probe
            moved += best is not probe
            acc = (r["auto"]["test_accuracy"] if best["strategy"] == r["auto"]["chosen"]
                   else test[best["strategy"]])
            d_o.append(acc - max(test.values()))
            d_p.append(acc - test["linear-probe"])
        lines.append(f"| {rule} | {100 * np.mean(d_o):+.1f} | {100 * min(d_p):+.1f} | {moved} of {len(rows)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="mnist32,digits32,bbc8,bbc32,lfw")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=float, default=150.0)
    ap.add_argument("--image-size", type=int, default=64, help="images: smaller than the backbone's 224 for CPU time")
    ap.add_argument("--singles-only", action="store_true", help="only the single strategies (the oracle's runs)")
    ap.add_argument("--auto-only", action="store_true", help="only auto; the singles come from singles.json")
    ap.add_argument("--tag", default="")
    ap.add_argument("--merge", action="store_true",
                    help="only combine every results_TAG.json into results.json and summary.md")
    ap.add_argument("--merge-prefix", default="", help="with --merge: only the tags that start with this")
    ap.add_argument("--replay", action="store_true",
                    help="only replay the final choice of the --merge-prefix runs under other selection rules")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merge(args.merge_prefix)
        return
    if args.replay:
        print(replay(args.merge_prefix))
        return
    # the single strategies' results: one file per seed, so that seeds can run in parallel processes
    cache: dict[str, dict] = {}
    for path in sorted(OUT.glob("singles*.json")):
        cache.update(json.loads(path.read_text()))
    suffix = f"_{args.tag}" if args.tag else ""
    rows: list[dict] = []
    for name in args.sets.split(","):
        modality = "image" if SETS[name]["backbone"].startswith("efficientnet") else "text"
        for seed in (int(s) for s in args.seeds.split(",")):
            singles = []
            for s in SINGLES[modality]:
                key = f"{name}|{seed}|{s}|{args.image_size if modality == 'image' else 128}"
                if key not in cache:
                    if args.auto_only:
                        continue
                    cache[key] = fit(name, s, seed, args)
                    path = OUT / f"singles_s{seed}.json"
                    mine = {k: v for k, v in cache.items() if k.split("|")[1] == str(seed)}
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(mine, indent=1))
                    os.replace(tmp, path)
                singles.append(cache[key])
                print(f"{name} seed {seed} {s}: {cache[key]['test_accuracy']:.3f} ({cache[key]['seconds']:.0f} s)",
                      flush=True)
            if args.singles_only or not singles:
                continue
            auto = fit(name, "auto", seed, args, {"budget_s": args.budget})
            print(f"{name} seed {seed}: auto chose {auto['chosen']} -> {auto['test_accuracy']:.3f} "
                  f"({auto['seconds']:.0f} s)", flush=True)
            oracle = max(singles, key=lambda s: s["test_accuracy"])
            rows.append({"set": name, "seed": seed, "budget_s": args.budget, "auto": auto, "probe": singles[0], "oracle": oracle,
                         "singles": singles})
            (OUT / f"results{suffix}.json").write_text(json.dumps(
                {"budget_s": args.budget, "image_size": args.image_size, "cpus": os.cpu_count(), "rows": rows},
                indent=2))
            (OUT / f"summary{suffix}.md").write_text(summarise(rows, args.budget))
    if rows:
        print(summarise(rows, args.budget))


if __name__ == "__main__":
    main()
