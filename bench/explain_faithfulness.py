"""Are the explanations faithful to the model? Each method against a random order, on real data.

1. mnist: efficientnet-lite0 linear probe (fitted by headstart.fit on builtin:mnist:100 at
   IMAGE_SIZE px); the digits come from the same seed-0 split's 200 test digits. Deletion (lower is
   better) and insertion (higher is better) AUC of the target-class probability.
2. photos: the backbone's own ImageNet head on real photos (skimage.data and scikit-learn's sample
   images); the same two curves.
3. bbc: minilm-l6 linear probe (builtin:bbc-news:200 at MAX_LENGTH tokens) on its test split's 200
   articles. Comprehensiveness (higher is better) and sufficiency (lower is better), averaged over
   removing / keeping the top 10, 20 and 50% of the words.
4. sanity: the model-randomisation check. Attributions of the trained model against those after
   re-drawing the head, then the head and the backbone's top parameter group; the mean Spearman
   rank correlation must fall.

Seeds change which test items are drawn, the random order, tie-breaks and KernelSHAP's samples. A
method "beats random" when its mean paired difference to random is on the right side and larger
than the spread (one standard deviation) of that difference over seeds.

    nice scripts/offline .venv/bin/python bench/explain_faithfulness.py            # all parts
    .venv/bin/python bench/explain_faithfulness.py --digits 4 --photos 2 --articles 4 --seeds 0   # smoke
Writes bench/results/explain_faithfulness/{results.json,table.md} and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import headstart  # noqa: E402
from headstart.backbones import create_backbone  # noqa: E402
from headstart.data import load_data, split  # noqa: E402
from headstart.explain import EXPLAINERS, Settings, Subject  # noqa: E402
from headstart.explain.faithfulness import (comprehensiveness_sufficiency, deletion_insertion, random_scores,  # noqa: E402
                                            randomised, rank_correlation)

OUT = Path(__file__).parent / "results" / "explain_faithfulness"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
SK_PHOTOS = ("china.jpg", "flower.jpg")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def methods_for(modality: str) -> list[str]:
    return [n for n in EXPLAINERS if modality in EXPLAINERS.get(n).modalities]


def photos() -> list:
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_image

    imgs = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in PHOTOS]
    return imgs + [Image.fromarray(load_sample_image(n)).convert("RGB") for n in SK_PHOTOS]


def run_images(name: str, subject: Subject, items: list, n: int, seeds: list[int], settings: Settings,
               steps: int) -> dict:
    rows: dict = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(items), size=min(n, len(items)), replace=False).tolist())
        prep = subject.prepare([items[i] for i in pick])
        targets = subject.image_proba(prep.x).argmax(1)
        runs = {m: None for m in methods_for("image")}
        runs["random"] = None
        for m in runs:
            t = time.perf_counter()
            s = (random_scores(prep, seed) if m == "random" else
                 EXPLAINERS.get(m).run(subject, prep, targets, Settings(**{**settings.__dict__, "seed": seed})))
            t_attr = time.perf_counter() - t
            d, i = deletion_insertion(subject, prep, targets, s, steps=steps, seed=seed)
            rows.setdefault(m, []).append({"seed": seed, "n": len(prep), "deletion": float(d.mean()),
                                           "insertion": float(i.mean()), "seconds_per_item": t_attr / len(prep),
                                           "deletion_items": d.tolist(), "insertion_items": i.tolist()})
            log(f"{name} seed {seed} {m}: deletion {d.mean():.3f} insertion {i.mean():.3f} "
                f"({t_attr / len(prep):.2f} s/item)")
    return rows


def run_text(subject: Subject, items: list, n: int, seeds: list[int], settings: Settings) -> dict:
    rows: dict = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(items), size=min(n, len(items)), replace=False).tolist())
        prep = subject.prepare([items[i] for i in pick])
        # The document is the words the model reads: removals then never pull unread words into the window.
        prep = subject.prepare([prep.text_from(i, np.ones(len(prep.spans[i]), bool)) for i in range(len(prep))])
        targets = subject.text_proba(prep.texts).argmax(1)
        for m in [*methods_for("text"), "random"]:
            t = time.perf_counter()
            s = (random_scores(prep, seed) if m == "random" else
                 EXPLAINERS.get(m).run(subject, prep, targets, Settings(**{**settings.__dict__, "seed": seed})))
            t_attr = time.perf_counter() - t
            c, su = comprehensiveness_sufficiency(subject, prep, targets, s, seed=seed)
            rows.setdefault(m, []).append({"seed": seed, "n": len(prep), "comprehensiveness": float(c.mean()),
                                           "sufficiency": float(su.mean()), "seconds_per_item": t_attr / len(prep),
                                           "comprehensiveness_items": c.tolist(), "sufficiency_items": su.tolist()})
            log(f"bbc seed {seed} {m}: comprehensiveness {c.mean():.3f} sufficiency {su.mean():.3f} "
                f"({t_attr / len(prep):.2f} s/item)")
    return rows


def sanity(name: str, subject: Subject, items: list, n: int, settings: Settings, methods: list[str]) -> dict:
    prep = subject.prepare(items[:n])
    if prep.modality == "text":
        prep = subject.prepare([prep.text_from(i, np.ones(len(prep.spans[i]), bool)) for i in range(len(prep))])
    proba = subject.image_proba(prep.x) if prep.modality == "image" else subject.text_proba(prep.texts)
    targets = proba.argmax(1)
    probe = ({"pixel_values": prep.x[:2]} if prep.modality == "image"
             else subject.backbone.preprocess(prep.texts[:2]))
    levels = {"head re-drawn": randomised(subject, backbone_top=False, seed=1),
              "head + top backbone block re-drawn": randomised(subject, backbone_top=True, probe=probe, seed=1)}
    out: dict = {}
    for m in methods:
        original = EXPLAINERS.get(m).run(subject, prep, targets, settings)
        again = EXPLAINERS.get(m).run(subject, prep, targets, Settings(**{**settings.__dict__, "seed": 7}))
        out[m] = {"same model, rerun": [rank_correlation(a, b) for a, b in zip(original, again)]}
        for level, other in levels.items():
            scores = EXPLAINERS.get(m).run(other, prep, targets, settings)
            out[m][level] = [rank_correlation(a, b) for a, b in zip(original, scores)]
        log(f"sanity {name} {m}: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in out[m].items()))
    return out


def summarise(rows: dict, better: dict[str, int]) -> list[dict]:
    """Per method and metric: mean and spread over seeds, the paired difference to random, and
    whether it beats random on that metric (right side, by more than the spread of the difference)."""
    table = []
    for m, runs in rows.items():
        entry = {"method": m, "n_per_seed": runs[0]["n"], "seeds": len(runs),
                 "seconds_per_item": float(np.mean([r["seconds_per_item"] for r in runs]))}
        beats = []
        for metric, sign in better.items():
            vals = np.array([r[metric] for r in runs])
            entry[metric] = [float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0]
            if m != "random":
                diff = vals - np.array([r[metric] for r in rows["random"]])
                spread = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
                entry[f"{metric}_vs_random"] = [float(diff.mean()), spread]
                if sign * diff.mean() > max(spread, 1e-9):
                    beats.append(metric)
        if m != "random":
            entry["beats_random_on"] = beats
            entry["beats_random"] = len(beats) == len(better)
        table.append(entry)
    return table


def markdown(results: dict) -> str:
    lines = []
    for part, better in (("mnist", {"deletion": -1, "insertion": 1}), ("photos", {"deletion": -1, "insertion": 1}),
                         ("bbc", {"comprehensiveness": 1, "sufficiency": -1})):
        if part not in results:
            continue
        keys = list(better)
        head = " | ".join(f"{k} ({'higher' if s > 0 else 'lower'} is better)" for k, s in better.items())
        lines += [f"### {results[part]['title']}", "",
                  f"| method | items x seeds | {head} | vs random (paired) | beats random on | s / item |",
                  "|---|---|" + "---|" * len(keys) + "---|---|---|"]
        for e in summarise(results[part]["rows"], better):
            vs = "; ".join(f"{e[k + '_vs_random'][0]:+.3f} ± {e[k + '_vs_random'][1]:.3f}" for k in keys) \
                if e["method"] != "random" else "-"
            cells = " | ".join(f"{e[k][0]:.3f} ± {e[k][1]:.3f}" for k in keys)
            verdict = ("-" if e["method"] == "random" else "both" if e["beats_random"] else
                       " ".join(e["beats_random_on"]) if e["beats_random_on"] else "**neither**")
            lines.append(f"| {e['method']} | {e['n_per_seed']} x {e['seeds']} | {cells} | {vs} | {verdict} | "
                         f"{e['seconds_per_item']:.2f} |")
        lines.append("")
    for part, title in (("sanity_mnist", "Sanity, MNIST"), ("sanity_bbc", "Sanity, BBC News")):
        if part not in results:
            continue
        res = results[part]
        levels = list(next(iter(res.values())))
        lines += [f"### {title}: mean Spearman correlation with the trained model's attributions", "",
                  "| method | " + " | ".join(levels) + " |", "|---|" + "---|" * len(levels)]
        for m, v in res.items():
            lines.append(f"| {m} | " + " | ".join(f"{np.mean(v[k]):.3f} ± {np.std(v[k]):.3f}" for k in levels) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--digits", type=int, default=200)
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--articles", type=int, default=200)
    ap.add_argument("--sanity-items", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--photo-size", type=int, default=160)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16, help="Integrated Gradients steps")
    ap.add_argument("--samples", type=int, default=64, help="KernelSHAP samples per item")
    ap.add_argument("--grid", type=int, default=6, help="KernelSHAP cells per image side")
    ap.add_argument("--curve-steps", type=int, default=8, help="points on the deletion / insertion curves")
    ap.add_argument("--parts", default="mnist,photos,bbc,sanity",
                    help="mnist, photos, bbc, sanity-mnist, sanity-bbc (sanity = both)")
    ap.add_argument("--skip-sanity", nargs="*", default=[], help="methods left out of the text sanity check")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--table-only", action="store_true", help="print the table of results.json again, run nothing")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if "sanity" in parts:
        parts |= {"sanity-mnist", "sanity-bbc"}
    settings = Settings(steps=args.steps, samples=args.samples, grid=args.grid, batch_size=32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results: dict = json.loads(path.read_text()) if path.exists() else {}  # parts run separately add up
    if args.table_only:
        (out / "table.md").write_text(markdown(results))
        print(markdown(results))
        return
    results.setdefault("configs", []).append(vars(args))
    results.pop("config", None)
    t0 = time.perf_counter()

    def save() -> None:
        path.write_text(json.dumps(results, indent=1))
        (out / "table.md").write_text(markdown(results))

    if parts & {"mnist", "sanity-mnist"}:
        log("fitting the MNIST probe")
        model = headstart.fit("builtin:mnist:100", image_size=args.image_size, baseline=False, progress=False, seed=0)
        test = split(load_data("builtin:mnist:100"), val=0.15, test=0.2, seed=0).test
        digits = [test.load(i) for i in range(len(test))]
        mnist = Subject(model.backbone, model.head)
        if "mnist" in parts:
            rows = run_images("mnist", mnist, digits, args.digits, args.seeds, settings, args.curve_steps)
            results["mnist"] = {"title": f"MNIST test digits (efficientnet-lite0 at {args.image_size} px, linear probe, "
                                         f"test accuracy {model.info['metrics']['test']['accuracy']:.3f})",
                                "table": summarise(rows, {"deletion": -1, "insertion": 1}), "rows": rows}
            save()
        if "sanity-mnist" in parts:
            results["sanity_mnist"] = sanity("mnist", mnist, digits, args.sanity_items, settings, methods_for("image"))
            save()
    if "photos" in parts:
        bb = create_backbone("efficientnet-lite0", image_size=args.photo_size)
        subject = Subject(bb, bb.source_head())
        rows = run_images("photos", subject, photos(), args.photos, args.seeds, settings, args.curve_steps)
        results["photos"] = {"title": f"Real photos (skimage.data, scikit-learn samples; efficientnet-lite0's ImageNet "
                                      f"head at {args.photo_size} px)",
                             "table": summarise(rows, {"deletion": -1, "insertion": 1}), "rows": rows}
        save()
    if parts & {"bbc", "sanity-bbc"}:
        log("fitting the BBC News probe")
        model = headstart.fit("builtin:bbc-news:200", max_length=args.max_length, baseline=False, progress=False, seed=0)
        test = split(load_data("builtin:bbc-news:200"), val=0.15, test=0.2, seed=0).test
        articles = [test.load(i) for i in range(len(test))]
        bbc = Subject(model.backbone, model.head)
        if "bbc" in parts:
            rows = run_text(bbc, articles, args.articles, args.seeds, settings)
            results["bbc"] = {"title": f"BBC News test articles (minilm-l6 at {args.max_length} tokens, linear probe, "
                                       f"test accuracy {model.info['metrics']['test']['accuracy']:.3f})",
                              "table": summarise(rows, {"comprehensiveness": 1, "sufficiency": -1}), "rows": rows}
            save()
        if "sanity-bbc" in parts:
            results["sanity_bbc"] = sanity("bbc", bbc, articles, args.sanity_items, settings,
                                           [m for m in methods_for("text") if m not in args.skip_sanity])
            save()
    results["seconds"] = time.perf_counter() - t0
    save()
    print(markdown(results))


if __name__ == "__main__":
    main()
