"""Are the explanations faithful to the model? Each method against a random order, on real data.
Every registered method is measured (occlusion with patches of 1/--occlusion-grid of the side, 14 by
default: the curves' cells), beside a random order.

1. mnist: efficientnet-lite0 linear probe (fitted by headstart.fit on builtin:mnist:100 at
   --image-size px, 224 by default as a default fit); the digits are the seed-0 split's 200 test
   digits. Deletion (lower is better) and insertion (higher is better) AUC of the target-class
   probability, the image removed / revealed in cells of a --curve-grid grid (0: pixel by pixel).
   mnist-small: the same at --small-size px (64), where the backbone's last maps are 2 x 2.
2. photos: the backbone's own ImageNet head on the real photos that ship offline (skimage.data and
   scikit-learn's sample images) at --photo-size px; the same two curves.
3. bbc: minilm-l6 linear probe (builtin:bbc-news:200 at MAX_LENGTH tokens) on its test split's 200
   articles. Comprehensiveness (higher is better) and sufficiency (lower is better), averaged over
   removing / keeping the top 10, 20 and 50% of the words.
4. sanity: the model-randomisation check. Attributions of the trained model against those after
   re-drawing the head, then the head and the backbone's top parameter group; the mean Spearman
   rank correlation must fall.

Seeds change which test items are drawn (all of them when a test split has no more than asked),
the random order, tie-breaks and KernelSHAP's samples. A method whose attributions do not depend on
the seed is computed once per set of items. --cap METHOD=N runs a slow method on the first N items of
each seed's draw only; it is then compared with random on those same items. A method "beats random"
when its mean paired difference to random is on the right side and larger than the spread (one
standard deviation) of that difference over seeds.

    nice scripts/offline .venv/bin/python bench/explain_faithfulness.py            # all parts
    .venv/bin/python bench/explain_faithfulness.py --digits 4 --photos 2 --articles 4 --seeds 0   # smoke
    .venv/bin/python bench/explain_faithfulness.py --merge /tmp/a/results.json   # add parts run elsewhere
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
import torch  # noqa: E402

import headstart  # noqa: E402
from headstart.backbones import create_backbone  # noqa: E402
from headstart.data import load_data, split  # noqa: E402
from headstart.explain import EXPLAINERS, Settings, Subject  # noqa: E402
from headstart.explain.faithfulness import pooled  # noqa: E402
from headstart.explain.image import cell_mask, grad_cam, last_conv  # noqa: E402
from headstart.explain.faithfulness import (CURVE_GRID, comprehensiveness_sufficiency, deletion_insertion,  # noqa: E402
                                            random_scores, randomised, rank_correlation)

OUT = Path(__file__).parent / "results" / "explain_faithfulness"
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
          "immunohistochemistry", "moon", "retina", "rocket")
SK_PHOTOS = ("china.jpg", "flower.jpg")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# Measured beside the registered methods: Grad-CAM on the backbone's very last convolution (what
# grad-cam weighed before it moved to a finer layer), to show what the move bought.
LAST_CAM = "grad-cam, last convolution"


def methods_for(modality: str) -> list[str]:
    return [n for n in EXPLAINERS if modality in EXPLAINERS.get(n).modalities]


def last_cam(subject: Subject, prep, targets: np.ndarray, settings: Settings) -> list[np.ndarray]:
    return grad_cam(subject, prep, targets, settings, layer=last_conv(subject.backbone))


def photos() -> list:
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_image

    imgs = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in PHOTOS]  # grey ones as RGB
    return imgs + [Image.fromarray(load_sample_image(n)).convert("RGB") for n in SK_PHOTOS]


def attributions(cache: dict, method: str, subject: Subject, prep, pick: list[int], targets: np.ndarray,
                 settings: Settings, seed: int) -> tuple[list[np.ndarray], float]:
    """The method's attributions and seconds per item; a method that does not depend on the seed
    is computed once per set of items (the seeds draw the same items when they draw a whole split)."""
    if method == "random":
        t = time.perf_counter()
        return random_scores(prep, seed), (time.perf_counter() - t) / max(1, len(prep))
    run, seeded = (last_cam, False) if method == LAST_CAM else (EXPLAINERS.get(method).run, EXPLAINERS.get(method).seeded)
    key = (method, tuple(pick))
    if not seeded and key in cache:
        return cache[key]
    t = time.perf_counter()
    scores = run(subject, prep, targets, Settings(**{**settings.__dict__, "seed": seed}))
    cache[key] = scores, (time.perf_counter() - t) / max(1, len(prep))
    return cache[key]


def tied(scores: list[np.ndarray], prep, grid: int | None) -> bool:
    """Whether any item's attribution gives two of the removed units (cells or pixels) the same score."""
    side = prep.x.shape[-1]
    cells = cell_mask(side, grid) if grid else torch.arange(side * side).reshape(side, side)
    units = int(cells.max()) + 1
    return any(len(np.unique(pooled(s, cells, units))) < units for s in scores)


def capped(caps: dict[str, int], method: str, n: int) -> int:
    return min(n, caps.get(method, n))


def run_images(name: str, subject: Subject, items: list, n: int, seeds: list[int], settings: Settings,
               steps: int, grid: int | None, caps: dict[str, int], done=lambda rows: None,  # noqa: ANN001
               only: list[str] | None = None, same_items: bool = False) -> dict:
    rows: dict = {}
    cache: dict = {}
    # The curves only run the model: the backbone's inference form computes the same function, faster.
    scorer = Subject(subject.backbone.for_inference(), subject.head)
    for seed in seeds:
        rng = np.random.default_rng(0 if same_items else seed)
        pick = sorted(rng.choice(len(items), size=min(n, len(items)), replace=False).tolist())
        prep = subject.prepare([items[i] for i in pick])
        targets = subject.image_proba(prep.x).argmax(1)
        for m in [x for x in [*methods_for("image"), "random", LAST_CAM] if not only or x in only]:
            k = capped(caps, m, len(pick))
            part = prep if k == len(pick) else subject.prepare([items[i] for i in pick[:k]])
            s, per_item = attributions(cache, m, subject, part, pick[:k], targets[:k], settings, seed)
            # The seed reaches a curve only through tie-breaks: an order without ties, from a method that
            # does not depend on the seed, gives the same curves for every seed on the same items.
            key = ("curves", m, tuple(pick[:k]))
            if key in cache:
                d, i = cache[key]
            else:
                d, i = deletion_insertion(scorer, part, targets[:k], s, steps=steps, seed=seed, grid=grid)
                if m != "random" and (m == LAST_CAM or not EXPLAINERS.get(m).seeded) and not tied(s, part, grid):
                    cache[key] = d, i
            rows.setdefault(m, []).append({"seed": seed, "n": k, "deletion": float(d.mean()),
                                           "insertion": float(i.mean()), "seconds_per_item": per_item,
                                           "deletion_items": d.tolist(), "insertion_items": i.tolist()})
            log(f"{name} seed {seed} {m}: deletion {d.mean():.3f} insertion {i.mean():.3f} "
                f"({per_item:.2f} s/item, {k} items)")
        done(rows)  # saved after every seed: a run stopped early keeps the seeds it finished
    return rows


def run_text(subject: Subject, items: list, n: int, seeds: list[int], settings: Settings,
             caps: dict[str, int], done=lambda rows: None, same_items: bool = False) -> dict:  # noqa: ANN001
    rows: dict = {}
    cache: dict = {}
    for seed in seeds:
        rng = np.random.default_rng(0 if same_items else seed)
        pick = sorted(rng.choice(len(items), size=min(n, len(items)), replace=False).tolist())
        prep = subject.prepare([items[i] for i in pick])
        # The document is the words the model reads: removals then never pull unread words into the window.
        read = [prep.text_from(i, np.ones(len(prep.spans[i]), bool)) for i in range(len(prep))]
        prep = subject.prepare(read)
        targets = subject.text_proba(prep.texts).argmax(1)
        for m in [*methods_for("text"), "random"]:
            k = capped(caps, m, len(pick))
            part = prep if k == len(pick) else subject.prepare(read[:k])
            s, per_item = attributions(cache, m, subject, part, pick[:k], targets[:k], settings, seed)
            key = ("scores", m, tuple(pick[:k]))  # as for the image curves: no ties, no seed
            if key in cache:
                c, su = cache[key]
            else:
                c, su = comprehensiveness_sufficiency(subject, part, targets[:k], s, seed=seed)
                if m != "random" and not EXPLAINERS.get(m).seeded and all(len(np.unique(x)) == len(x) for x in s):
                    cache[key] = c, su
            rows.setdefault(m, []).append({"seed": seed, "n": k, "comprehensiveness": float(c.mean()),
                                           "sufficiency": float(su.mean()), "seconds_per_item": per_item,
                                           "comprehensiveness_items": c.tolist(), "sufficiency_items": su.tolist()})
            log(f"bbc seed {seed} {m}: comprehensiveness {c.mean():.3f} sufficiency {su.mean():.3f} "
                f"({per_item:.2f} s/item, {k} items)")
        done(rows)
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
    table: list[dict] = []
    if "random" not in rows:  # a run of some methods only (--methods), to be merged with one that has random
        return table
    order = [*EXPLAINERS, LAST_CAM, "random"]
    for m, runs in sorted(rows.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        entry = {"method": m, "n_per_seed": runs[0]["n"], "seeds": len(runs),
                 "seconds_per_item": float(np.mean([r["seconds_per_item"] for r in runs]))}
        beats = []
        for metric, sign in better.items():
            vals = np.array([r[metric] for r in runs])
            entry[metric] = [float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0]
            if m != "random":  # random on the same items (a capped method ran on the first n of each draw)
                diff = vals - np.array([np.mean(ra[f"{metric}_items"][:r["n"]]) for r, ra in zip(runs, rows["random"])])
                spread = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
                entry[f"{metric}_vs_random"] = [float(diff.mean()), spread]
                if len(diff) > 1 and sign * diff.mean() > max(spread, 1e-9):  # one seed has no spread: no verdict
                    beats.append(metric)
        if m != "random":
            entry["beats_random_on"] = beats
            entry["beats_random"] = len(beats) == len(better)
        table.append(entry)
    return table


def markdown(results: dict) -> str:
    lines = []
    for part, better in (("mnist", {"deletion": -1, "insertion": 1}), ("mnist_small", {"deletion": -1, "insertion": 1}),
                         ("photos", {"deletion": -1, "insertion": 1}),
                         *((k, {"comprehensiveness": 1, "sufficiency": -1}) for k in sorted(results)
                           if k == "bbc" or k.startswith("bbc_"))):
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
        title = results.get(f"{part}_title", title)
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
    ap.add_argument("--photos", type=int, default=len(PHOTOS) + len(SK_PHOTOS))
    ap.add_argument("--articles", type=int, default=200)
    ap.add_argument("--sanity-items", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--image-size", type=int, default=224, help="MNIST px (224: what a default fit uses)")
    ap.add_argument("--small-size", type=int, default=64, help="MNIST px of the mnist-small part")
    ap.add_argument("--photo-size", type=int, default=224)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16, help="Integrated Gradients steps")
    ap.add_argument("--samples", type=int, default=64, help="KernelSHAP samples per item")
    ap.add_argument("--grid", type=int, default=6, help="KernelSHAP cells per image side")
    ap.add_argument("--occlusion-grid", type=int, default=14, help="occlusion patches per image side")
    ap.add_argument("--curve-steps", type=int, default=8, help="points on the deletion / insertion curves")
    ap.add_argument("--curve-grid", type=int, default=CURVE_GRID,
                    help="deletion / insertion remove cells of this grid (0: single pixels)")
    ap.add_argument("--cap", nargs="*", default=[], metavar="METHOD=N",
                    help="run METHOD on the first N items of each seed's draw only (a slow method)")
    ap.add_argument("--parts", default="mnist,mnist-small,photos,bbc,sanity",
                    help="mnist, mnist-small, photos, bbc, sanity-mnist, sanity-bbc (sanity = both)")
    ap.add_argument("--skip-sanity", nargs="*", default=[], help="methods left out of the sanity checks")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--merge", nargs="*", default=[],
                    help="results.json files whose parts (or, for a part already here, methods) are added, then exit")
    ap.add_argument("--methods", nargs="*", default=[], help="image parts: run only these (and merge the runs)")
    ap.add_argument("--same-items", action="store_true",
                    help="every seed draws the seed-0 items (fewer items than the split, attributions computed once)")
    ap.add_argument("--table-only", action="store_true", help="print the table of results.json again, run nothing")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if "sanity" in parts:
        parts |= {"sanity-mnist", "sanity-bbc"}
    caps = {k: int(v) for k, v in (c.split("=") for c in args.cap)}
    grid = args.curve_grid or None
    settings = Settings(steps=args.steps, samples=args.samples, grid=args.grid, occlusion_grid=args.occlusion_grid,
                        batch_size=32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results: dict = json.loads(path.read_text()) if path.exists() else {}  # parts run separately add up

    def save() -> None:
        path.write_text(json.dumps(results, indent=1))
        (out / "table.md").write_text(markdown(results))

    if args.merge:
        for other in args.merge:
            found = json.loads(Path(other).read_text())
            for k, v in found.items():
                if k in ("configs", "seconds"):
                    continue
                if isinstance(v, dict) and "rows" in v and k in results:  # the same part: other methods or seeds
                    for method, runs in v["rows"].items():
                        have = results[k]["rows"].setdefault(method, [])
                        seen = {r["seed"] for r in have}
                        have += [r for r in runs if r["seed"] not in seen]
                        have.sort(key=lambda r: r["seed"])
                    results[k]["title"] = v["title"]
                    better = ({"comprehensiveness": 1, "sufficiency": -1} if k.startswith("bbc")
                              else {"deletion": -1, "insertion": 1})
                    results[k]["table"] = summarise(results[k]["rows"], better)
                elif k.startswith("sanity_") and isinstance(v, dict) and isinstance(results.get(k), dict):
                    results[k].update(v)  # the sanity check of other methods, on the same items
                else:
                    results[k] = v
            results.setdefault("configs", []).extend(found.get("configs", []))
        save()
        print(markdown(results))
        return
    if args.table_only:
        (out / "table.md").write_text(markdown(results))
        print(markdown(results))
        return
    results.setdefault("configs", []).append(vars(args))
    results.pop("config", None)
    t0 = time.perf_counter()
    skip = set(args.skip_sanity)

    for key, size, run_part, run_sanity in (("mnist", args.image_size, "mnist" in parts, "sanity-mnist" in parts),
                                            ("mnist_small", args.small_size, "mnist-small" in parts, False)):
        if not (run_part or run_sanity):
            continue
        log(f"fitting the MNIST probe at {size} px")
        model = headstart.fit("builtin:mnist:100", image_size=size, baseline=False, progress=False, seed=0)
        test = split(load_data("builtin:mnist:100"), val=0.15, test=0.2, seed=0).test
        digits = [test.load(i) for i in range(len(test))]
        mnist = Subject(model.backbone, model.head)
        if run_part:
            cells = f"{args.curve_grid} x {args.curve_grid} cells" if grid else "single pixels"
            title = (f"MNIST test digits (efficientnet-lite0 at {size} px, linear probe, test accuracy "
                     f"{model.info['metrics']['test']['accuracy']:.3f}; curves over {cells})")

            def keep(rows: dict, key: str = key, title: str = title) -> None:
                results[key] = {"title": title, "table": summarise(rows, {"deletion": -1, "insertion": 1}), "rows": rows}
                save()

            keep(run_images(key, mnist, digits, args.digits, args.seeds, settings, args.curve_steps, grid, caps, keep,
                            args.methods, args.same_items))
        if run_sanity:
            results["sanity_mnist"] = sanity("mnist", mnist, digits, args.sanity_items, settings,
                                             [m for m in methods_for("image") if m not in skip])
            results["sanity_mnist_title"] = f"Sanity, MNIST at {size} px"
            save()
    if "photos" in parts:
        bb = create_backbone("efficientnet-lite0", image_size=args.photo_size)
        subject = Subject(bb, bb.source_head())
        cells = f"{args.curve_grid} x {args.curve_grid} cells" if grid else "single pixels"

        def keep_photos(rows: dict) -> None:
            results["photos"] = {"title": f"Real photos (skimage.data, scikit-learn samples; efficientnet-lite0's "
                                          f"ImageNet head at {args.photo_size} px; curves over {cells})",
                                 "table": summarise(rows, {"deletion": -1, "insertion": 1}), "rows": rows}
            save()

        keep_photos(run_images("photos", subject, photos(), args.photos, args.seeds, settings, args.curve_steps, grid,
                               caps, keep_photos, args.methods, args.same_items))
    if parts & {"bbc", "sanity-bbc"}:
        log("fitting the BBC News probe")
        model = headstart.fit("builtin:bbc-news:200", max_length=args.max_length, baseline=False, progress=False, seed=0)
        test = split(load_data("builtin:bbc-news:200"), val=0.15, test=0.2, seed=0).test
        articles = [test.load(i) for i in range(len(test))]
        bbc = Subject(model.backbone, model.head)
        if "bbc" in parts:
            bbc_key = "bbc" if args.max_length == 64 else f"bbc_{args.max_length}"  # another window: another case

            def keep_bbc(rows: dict) -> None:
                results[bbc_key] = {"title": f"BBC News test articles (minilm-l6 at {args.max_length} tokens, linear "
                                           f"probe, test accuracy {model.info['metrics']['test']['accuracy']:.3f})",
                                  "table": summarise(rows, {"comprehensiveness": 1, "sufficiency": -1}), "rows": rows}
                save()

            keep_bbc(run_text(bbc, articles, args.articles, args.seeds, settings, caps, keep_bbc, args.same_items))
        if "sanity-bbc" in parts:
            results["sanity_bbc"] = sanity("bbc", bbc, articles, args.sanity_items, settings,
                                           [m for m in methods_for("text") if m not in skip])
            save()
    results["seconds"] = time.perf_counter() - t0
    save()
    print(markdown(results))


if __name__ == "__main__":
    main()
