"""Do the transferability scores rank backbones the way fine-tuning does,
and what does ranking cost next to fine-tuning?

For each data set: a fixed stratified split per class (``--per-class`` for training, 8 for
validation, ``--test`` held out for testing, so that the "true" accuracy is measured on hundreds of
examples rather than a few dozen). Every candidate backbone is
(a) ranked by ``rank_backbones`` with the default scores (plus the plain H-score), timed from a cold
    feature cache: loading the backbone, extracting features, scoring: all a user waits for; once
    with the default engine (ONNX Runtime for the image backbones, exported once per run of this
    script and timed apart, as a user's first ranking pays it) and once with eager PyTorch;
(b) fine-tuned as the published model-selection benchmarks do it (TLlib, the LogME paper): a small
    learning-rate grid (``--image-lrs`` / ``--text-lrs``), LP-FT up to ``--epochs`` epochs with
    early stopping per rate, the run with the best validation accuracy chosen and its test accuracy
    reported; backbones that cannot train (raw pixels, the ONNX MiniLM) get the linear probe, all a
    user could do with them. Each run is timed without its test prediction.
Agreement between each score and the fine-tuned accuracy is the weighted Kendall tau (scipy's
``weightedtau``, hyperbolic weights, as in the TLlib model-selection benchmark that reports LogME's
mean 0.665 over 10 ImageNet models x 8 data sets). Cross-validated probe accuracy, the slow
reference score, is computed on the cached features and timed separately.

Images: efficientnet-lite0/1/2 + raw-pixels on MNIST, UCI digits and scikit-image's LFW subset
(face / not face). Text: minilm-l6, minilm-l3-onnx and a randomly initialised 2-layer BERT (the
no-transfer reference) on BBC News.

Cost: the ranking time over (1) the learning-rate search of the cheapest pre-trained trainable
candidate (the fine-tuning that produced its accuracy; the random BERT is a reference, not a
candidate), (2) the fastest single run of any candidate, the strictest reading, and (3) brute-force
selection, every candidate's search.

    python bench/rank_validation.py [--tasks mnist,digits,lfw,bbc] [--epochs 20] [--per-class 20]
    python bench/rank_validation.py --tasks mnist-scale      # the cost at 3920 training images
Each task writes bench/results/rank_validation/<task>.json (so tasks can run separately); the
summary bench/results/rank_validation.md is rebuilt from all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import weightedtau

from headstart.runtime import Runtime
from headstart.methods import make_config
from headstart.workflows.pipeline import train_model
from headstart.backbones import _minilm_l6_dir, create_backbone
from headstart.data import Dataset, load_data
from headstart.data.splits import Splits
from headstart.features import extract_features
from headstart.rank import score
from headstart.workflows.rank import DEFAULT_SCORES, rank_backbones

RANKED = (*DEFAULT_SCORES, "hscore")  # what the timed ranking computes
SCORES = ("logme", "hscore", "hscore-shrink", "nce", "leep", "knn", "probe-cv")
OUT = Path(__file__).parent / "results" / "rank_validation"


def lfw() -> Dataset:
    from skimage.data import lfw_subset

    x = (lfw_subset() * 255).round().astype(np.uint8)  # 100 faces, then 100 non-faces
    labels = ["face"] * 100 + ["not-face"] * 100
    return Dataset("image", list(x), labels, [f"lfw_subset #{i}" for i in range(200)], source="skimage lfw_subset")


def tiny_random_bert(folder: Path) -> str:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(_minilm_l6_dir())
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=256)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return f"hf:{folder}"


def fixed_split(data: Dataset, train: int | None, val: int, test: int, seed: int = 0) -> Splits:
    """Per class: ``train`` / ``val`` / up to ``test`` examples, disjoint, seeded; ``train=None``:
    everything that validation and test leave."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(data.labels)
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c)).tolist()
        if train is None:
            spans = [(val + test, len(idx)), (0, val), (val, val + test)]
        else:
            spans = [(0, train), (train, train + val), (train + val, train + val + test)]
        for k, (a, b) in enumerate(spans):
            parts[k] += idx[a:b]
    return Splits(*(data.subset(p) for p in parts))


def timed_rankings(data: Dataset, backbones: list[str], cache: Path) -> tuple[dict, float, float]:
    """The ranking with the default engine on a cold cache, and the seconds it took; then the
    seconds eager PyTorch takes for the same ranking on its own cold cache, side by side."""
    seconds = {}
    for engine in ("torch", "auto"):
        t = time.perf_counter()
        ranking = rank_backbones(data, backbones, scores=RANKED, progress=False, engine=engine,
                                 cache_dir=cache if engine == "auto" else cache.with_name(cache.name + "-torch"))
        seconds[engine] = time.perf_counter() - t
    return ranking, seconds["auto"], seconds["torch"]


def exports_for(backbones: list[str], args: argparse.Namespace) -> float:
    """The one-off export seconds of the candidates that have an export."""
    return sum(args.export_seconds.get(b, 0.0) for b in backbones)


def run_task(name: str, data: Dataset, backbones: list[str], args: argparse.Namespace, cache: Path) -> dict:
    parts = fixed_split(data, args.per_class, 8, args.test)
    names = data.label_names
    ranking, rank_seconds, rank_seconds_torch = timed_rankings(parts.train, backbones, cache)
    rows = {r["backbone"]: r for r in ranking["rows"]}
    y = np.asarray(parts.train.labels)
    probe_cv_seconds = {}
    for b in backbones:  # the slow reference, on the features the ranking cached
        t = time.perf_counter()
        rows[b]["scores"]["probe-cv"] = score("probe-cv", extract_features(create_backbone(b), parts.train,
                                                                           cache_dir=cache, progress=False), y)
        probe_cv_seconds[b] = time.perf_counter() - t
    search = {b: finetune_search(name, b, parts, names, args, cache) for b in backbones}
    accs = {b: r["test_accuracy"] for b, r in search.items()}
    strategies = {b: r["strategy"] for b, r in search.items()}
    taus = {}
    for s in SCORES:
        pairs = [(rows[b]["scores"][s], accs[b]) for b in backbones if rows[b]["scores"][s] is not None]
        if len(pairs) >= 3:
            taus[s] = float(weightedtau([p[0] for p in pairs], [p[1] for p in pairs]).statistic)
    candidates = [b for b in backbones if strategies[b] == "lp-ft" and not b.startswith("hf:")]
    cheapest = min(candidates, key=lambda b: search[b]["seconds"])
    runs = [(b, r) for b in candidates for r in search[b]["runs"]]
    fastest_b, fastest = min(runs, key=lambda br: br[1]["seconds"])
    ft_seconds, brute_force = search[cheapest]["seconds"], sum(search[b]["seconds"] for b in backbones)
    return {"task": name, "n_train": len(parts.train), "n_val": len(parts.val), "n_test": len(parts.test),
            "epochs": args.epochs, "accuracy": accs, "scores": {b: rows[b]["scores"] for b in backbones},
            "weighted_tau": taus, "rank_seconds_cold_cache": rank_seconds, "ranked_scores": list(RANKED),
            "rank_seconds_torch_engine": rank_seconds_torch, "export_seconds": args.export_seconds,
            "rank_seconds_per_backbone": {b: rows[b]["seconds"] for b in backbones},
            "probe_cv_seconds": probe_cv_seconds, "finetune_search": search, "strategy": strategies,
            "cheapest_finetune": cheapest, "finetune_seconds": ft_seconds, "cost_ratio": rank_seconds / ft_seconds,
            "cost_ratio_torch_engine": rank_seconds_torch / ft_seconds,
            "cost_ratio_with_exports": (rank_seconds + exports_for(backbones, args)) / ft_seconds,
            "fastest_run": {"backbone": fastest_b, **fastest}, "cost_ratio_one_run": rank_seconds / fastest["seconds"],
            "brute_force_seconds": brute_force, "cost_ratio_brute_force": rank_seconds / brute_force}


def finetune_search(task: str, bb_name: str, parts: Splits, names: list[str], args: argparse.Namespace,
                    cache: Path) -> dict:
    """The accuracy fine-tuning reaches with ``bb_name``, found as TLlib and the LogME paper find it:
    one LP-FT run per learning rate of a small grid (backbone and head at the same rate, as LP-FT
    wants), the run with the best validation accuracy (then loss) chosen, its test accuracy
    reported. Backbones that cannot train get the linear probe, all a user could do with them.
    Each run is timed without its test prediction; ``seconds`` is the whole search."""
    strategy = "lp-ft" if create_backbone(bb_name).trainable else "linear-probe"
    lrs = (args.text_lrs if parts.train.modality == "text" else args.image_lrs) if strategy == "lp-ft" else [None]
    no_test = Splits(parts.train, parts.val, parts.test.subset([]))
    y_test = np.array([names.index(x) for x in parts.test.labels])
    runs = []
    for lr in lrs:
        options = {"epochs": args.epochs, "batch_size": 16, "lr": lr, "head_lr": lr} if lr else {}
        bb = create_backbone(bb_name)  # every run starts from the pre-trained weights
        t = time.perf_counter()
        model, _, _, chosen = train_model(bb, no_test, names, strategy, make_config(strategy, **options),
                                          runtime=Runtime(cache_dir=cache, progress=False))
        seconds = time.perf_counter() - t
        history = chosen.get("history", []) if isinstance(chosen, dict) else []
        best = history[chosen["best_epoch"] - 1] if history else {}
        val_acc = float(chosen.get("val_accuracy", np.nan))
        test_acc = float((model.predict_proba(parts.test, progress=False).argmax(1) == y_test).mean())
        runs.append({"lr": lr, "seconds": seconds, "epochs_run": len(history), "val_accuracy": val_acc,
                     "val_loss": float(best.get("val_loss", np.nan)), "test_accuracy": test_acc})
        print(f"{task}: {bb_name} {strategy}" + (f" lr {lr:g}" if lr else "") + f": val {val_acc:.3f}, "
              f"test {test_acc:.3f} ({seconds:.0f} s, {len(history)} epochs)", flush=True)
    chosen_run = max(runs, key=lambda r: (r["val_accuracy"], -np.nan_to_num(r["val_loss"], nan=np.inf)))
    return {"strategy": strategy, "runs": runs, "chosen_lr": chosen_run["lr"],
            "test_accuracy": chosen_run["test_accuracy"], "seconds": sum(r["seconds"] for r in runs)}


def run_scale_task(name: str, data: Dataset, backbones: list[str], args: argparse.Namespace, cache: Path) -> dict:
    """The cost on a larger training set: ranking (on its default stratified subset, timed cold) vs
    fine-tuning the cheapest candidate on all of it; plus how well the subset's ranking agrees with
    scoring every example (Kendall tau per score, not timed)."""
    from scipy.stats import kendalltau

    parts = fixed_split(data, None, 8, args.test)  # every example not held out for validation / test
    capped, rank_seconds, rank_seconds_torch = timed_rankings(parts.train, backbones, cache)
    full = rank_backbones(parts.train, backbones, scores=RANKED, cache_dir=cache, progress=False, max_examples=None)
    agreement = {}
    for s in RANKED:
        a = [r["scores"][s] for r in sorted(capped["rows"], key=lambda r: r["backbone"])]
        b = [r["scores"][s] for r in sorted(full["rows"], key=lambda r: r["backbone"])]
        keep = [i for i, v in enumerate(a) if v is not None]
        if len(keep) >= 3:
            agreement[s] = float(kendalltau([a[i] for i in keep], [b[i] for i in keep]).statistic)
    cheapest = backbones[0]
    bb = create_backbone(cheapest)
    t = time.perf_counter()
    model, _, _, chosen = train_model(bb, Splits(parts.train, parts.val, parts.test.subset([])), data.label_names,
                                      "lp-ft", make_config("lp-ft", epochs=args.scale_epochs, batch_size=16),
                                      runtime=Runtime(cache_dir=cache, progress=False))
    ft_seconds = time.perf_counter() - t
    proba = model.predict_proba(parts.test, progress=False)
    acc = float((proba.argmax(1) == np.array([data.label_names.index(x) for x in parts.test.labels])).mean())
    print(f"{name}: ranking {rank_seconds:.0f} s on {capped['n']} of {capped['n_total']}; {cheapest} LP-FT "
          f"{ft_seconds:.0f} s, test accuracy {acc:.3f}", flush=True)
    return {"task": name, "n_train": len(parts.train), "n_scored": capped["n"], "n_test": len(parts.test),
            "rank_seconds_cold_cache": rank_seconds, "finetune_seconds": ft_seconds, "cheapest_finetune": cheapest,
            "rank_seconds_torch_engine": rank_seconds_torch, "cost_ratio_torch_engine": rank_seconds_torch / ft_seconds,
            "cost_ratio_with_exports": (rank_seconds + exports_for(backbones, args)) / ft_seconds,
            "epochs": args.scale_epochs, "epochs_run": len(chosen.get("history", [])) if isinstance(chosen, dict) else 0,
            "test_accuracy": acc, "cost_ratio": rank_seconds / ft_seconds,
            "subset_vs_all_kendall_tau": agreement, "order_subset": capped["order"], "order_all": full["order"]}


def export_engines(backbones: list[str]) -> dict[str, float]:
    """Seconds per backbone to export its ONNX Runtime graph (with the parity check), the one-off
    cost that ``engine="auto"`` pays on a machine's first large extraction."""
    two = load_data("builtin:digits").subset([0, 1])
    seconds = {}
    for name in backbones:
        bb = create_backbone(name)
        if not bb.trainable:
            continue
        t = time.perf_counter()
        extract_features(bb, two, use_cache=False, engine="onnx", progress=False)
        seconds[name] = time.perf_counter() - t
        print(f"exported {name} for ONNX Runtime in {seconds[name]:.1f} s", flush=True)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="mnist,digits,lfw,bbc")
    ap.add_argument("--epochs", type=int, default=20, help="LP-FT epoch budget (early stopping may end sooner)")
    ap.add_argument("--image-lrs", type=lambda t: [float(x) for x in t.split(",")], default=[2e-5, 1e-4, 5e-4],
                    help="LP-FT learning-rate grid for image backbones (2e-5 is LP-FT's default)")
    ap.add_argument("--text-lrs", type=lambda t: [float(x) for x in t.split(",")], default=[1e-5, 2e-5, 1e-4],
                    help="LP-FT learning-rate grid for text backbones")
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--test", type=int, default=100, help="test examples per class (at most)")
    ap.add_argument("--scale-epochs", type=int, default=5, help="LP-FT epoch budget of the mnist-scale task")
    args = ap.parse_args()
    images = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "raw-pixels"]
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # An empty headstart cache: the one-off ONNX exports are timed here, once per machine (as
        # a user's first ranking pays them), and then reused by every task, as on a user's machine.
        os.environ["HEADSTART_CACHE"] = str(Path(tmp) / "home")
        image_tasks = [k for k in args.tasks.split(",") if k != "bbc"]
        args.export_seconds = export_engines(images) if image_tasks else {}
        text = ["minilm-l6", "minilm-l3-onnx", tiny_random_bert(Path(tmp) / "tiny-bert")]
        tasks = {"mnist": ("MNIST", lambda: load_data("builtin:mnist"), images),
                 "digits": ("UCI digits", lambda: load_data("builtin:digits"), images),
                 "lfw": ("LFW subset", lfw, images),
                 "bbc": ("BBC News", lambda: load_data("builtin:bbc-news"), text)}
        tasks["mnist-scale"] = ("MNIST, all 3920 training digits", lambda: load_data("builtin:mnist"), images)
        for key in args.tasks.split(","):
            name, load, bbs = tasks[key]
            # a fresh cache per task: the ranking time includes extracting every candidate's features
            run = run_scale_task if key == "mnist-scale" else run_task
            result = run(name, load(), bbs, args, Path(tmp) / f"cache-{key}")
            (OUT / f"{key}.json").write_text(json.dumps(result, indent=2))
    summary()


def _get(r: dict, key: str, fmt: str) -> str:
    return format(r[key], fmt) if key in r else "n/a"


def summary() -> None:
    results = [json.loads(p.read_text()) for key in ("mnist", "digits", "lfw", "bbc")
               if (p := OUT / f"{key}.json").exists()]
    for r in [r for r in results if "finetune_search" not in r]:
        print(f"summary: {r['task']} has results from before the learning-rate search; rerun it")
        results.remove(r)
    image_results = [r for r in results if "BBC" not in r["task"]]
    mean_tau = {s: float(np.mean([r["weighted_tau"][s] for r in image_results if s in r["weighted_tau"]]))
                for s in SCORES if any(s in r["weighted_tau"] for r in image_results)}
    lines = ["| task | train / test | " + " | ".join(SCORES) + " | ranking s (cold) | cheapest fine-tune: LR search s "
             "| ratio | one run s | ratio, one run | ranking s, torch engine | ratio, torch engine |",
             "|---" * (len(SCORES) + 9) + "|"]
    for r in results:
        cells = [f"{r['weighted_tau'][s]:+.2f}" if s in r["weighted_tau"] else "n/a" for s in SCORES]
        one = r["fastest_run"]
        lines.append(f"| {r['task']} | {r['n_train']} / {r['n_test']} | " + " | ".join(cells) +
                     f" | {r['rank_seconds_cold_cache']:.1f} | {r['finetune_seconds']:.0f} ({r['cheapest_finetune']}, "
                     f"{len(r['finetune_search'][r['cheapest_finetune']]['runs'])} runs) | {100 * r['cost_ratio']:.1f}% | "
                     f"{one['seconds']:.0f} ({one['backbone']}, lr {one['lr']:g}, {one['epochs_run']} of {r['epochs']} "
                     f"epochs) | {100 * r['cost_ratio_one_run']:.1f}% | {r['rank_seconds_torch_engine']:.1f} | "
                     f"{r['cost_ratio_torch_engine']:.1%} |")
    lines.append("| mean over the image tasks | | " + " | ".join(f"{mean_tau[s]:+.2f}" if s in mean_tau else "n/a"
                                                           for s in SCORES) + " | | | | | | | |")
    lines += ["", "Brute-force selection (every candidate's LR search) against the ranking: "
              + ", ".join(f"{r['task']} {r['brute_force_seconds']:.0f} s ({100 * r['cost_ratio_brute_force']:.1f}%)"
                          for r in results) + "."]
    exports = next((r["export_seconds"] for r in results if r.get("export_seconds")), None)
    if exports:
        lines += ["", "One-off ONNX Runtime exports (once per backbone and machine, then cached): "
                  + ", ".join(f"{b} {t:.0f} s" for b, t in exports.items()) + ". Below 512 images `auto` does not export "
                  "(the first ranking on small data runs the torch engine); a first ranking that did pay them: "
                  + ", ".join(f"{r['task']} {_get(r, 'cost_ratio_with_exports', '.1%')}" for r in results
                              if set(r.get("export_seconds", {})) & set(r["accuracy"])) + "."]
    scale = OUT / "mnist-scale.json"
    if scale.exists():
        r = json.loads(scale.read_text())
        lines += ["", f"At scale ({r['task']}): ranking every candidate on its default subset of {r['n_scored']} "
                  f"examples took {r['rank_seconds_cold_cache']:.0f} s from a cold cache; LP-FT of "
                  f"{r['cheapest_finetune']} on all {r['n_train']} ({r['epochs_run']} of {r['epochs']} epochs) took "
                  f"{r['finetune_seconds']:.0f} s (test accuracy {100 * r['test_accuracy']:.1f}%): ratio "
                  f"{100 * r['cost_ratio']:.1f}%. Kendall tau between the subset's and all examples' scores: "
                  + ", ".join(f"{k} {v:+.2f}" for k, v in r["subset_vs_all_kendall_tau"].items())
                  + f"; order on the subset {' > '.join(r['order_subset'])}, on all {' > '.join(r['order_all'])}."
                  + (f" With the torch engine the ranking took {r['rank_seconds_torch_engine']:.0f} s "
                     f"({r['cost_ratio_torch_engine']:.1%}); counting the one-off exports, "
                     f"{r['cost_ratio_with_exports']:.1%}." if "rank_seconds_torch_engine" in r else "")]
    lines += ["", "Test accuracy reached per backbone (the LP-FT run with the best validation accuracy over the "
              "learning-rate grid, or the linear probe where nothing can train); every run as lr: val / test "
              "accuracy, epochs, seconds:", ""]
    for r in results:
        lines.append(f"- {r['task']}: " + "; ".join(
            f"{b.split('/')[-1]} **{100 * f['test_accuracy']:.1f}%**"
            + (f" (lr {f['chosen_lr']:g}; " + ", ".join(
                f"{x['lr']:g}: {100 * x['val_accuracy']:.0f} / {100 * x['test_accuracy']:.1f}, {x['epochs_run']} ep, "
                f"{x['seconds']:.0f} s" for x in f["runs"]) + ")" if f["chosen_lr"] else "")
            for b, f in r["finetune_search"].items()))
    lines += ["", "Cross-validated probe (the slow reference; not part of the timed ranking), seconds per backbone:", ""]
    for r in results:
        lines.append(f"- {r['task']}: " + ", ".join(f"{b.split('/')[-1]} {t:.1f}" for b, t in r["probe_cv_seconds"].items()))
    (OUT.parent / "rank_validation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
