"""The label-budget ladder: what each number of labels per class buys, on one fixed test set.

Every rung is a registered strategy run through :func:`headstart.workflows.pipeline.train_model`, so the ladder
measures exactly what ``headstart fit --strategy X`` would give. Budget 0 is zero-shot (class names
only); budget k draws k examples per class (seeded) from the training pool for each seed; ``all``
uses the whole pool. The test split is fixed (seed 0) and never drawn from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..methods import make_config
from ..backbones import create_backbone
from ..data import load_data, split
from ..data.builtin import take_per_class
from ..data.splits import Splits
from ..errors import ConfigError
from ..evaluation.metrics import classification_metrics
from .pipeline import backbone_name, train_model
from ..runtime import Runtime

CHEAP_RUNGS = ("prototypes", "linear-probe")
FINETUNE_RUNGS = {"text": ("setfit", "lp-ft"), "image": ("lp-ft",)}
COST_ORDER = ("zero-shot", "prototypes", "linear-probe", "setfit", "lp-ft", "full", "lora")


def parse_budgets(text: str) -> list[int | str]:
    out: list[int | str] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "all":
            out.append("all")
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ConfigError(f"--budgets: {part!r} is not a number of examples per class or 'all'.",
                              fix="write e.g. --budgets 0,8,32,all")
    return out


def run_ladder(data: Any, *, budgets: Sequence[int | str] = (0, 8, 32, "all"), seeds: int = 3,
               backbone: str | None = None, finetune: bool = False, margin: float = 0.02, test: float = 0.2,
               out: str | Path | None = None, options: dict[str, dict[str, Any]] | None = None,
               progress: bool = True, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    dataset = load_data(data)
    names = dataset.label_names
    fixed = split(dataset, val=0.15, test=test, seed=0)
    bb_name = backbone_name(backbone, dataset.modality)
    rungs_k = list(CHEAP_RUNGS) + (list(FINETUNE_RUNGS[dataset.modality]) if finetune else [])
    rows: list[dict[str, Any]] = []
    for budget in budgets:
        strategies = ["zero-shot"] if budget == 0 else rungs_k
        for seed in (range(1) if budget == 0 else range(seeds)):
            if budget in (0, "all"):  # zero-shot ignores the labels; "all" uses every one
                parts = fixed
            else:
                parts = Splits(take_per_class(fixed.train, int(budget), seed=seed),
                               take_per_class(fixed.val, max(2, int(budget) // 4), seed=seed), fixed.test)
            for strategy in strategies:
                if budget == "all" and seed > 0 and strategy in CHEAP_RUNGS:
                    continue  # deterministic on the same data: one run says it all
                bb = create_backbone(bb_name)  # fresh pre-trained weights for every run
                t = time.perf_counter()
                _, proba, ys, _ = train_model(bb, parts, names, strategy, make_config(strategy, **(options or {}).get(strategy, {})),
                                              seed=seed, runtime=Runtime(progress=progress),
                                              ood=False)  # only accuracy is kept
                acc = classification_metrics(ys["test"], proba, names)["accuracy"]
                row = {"budget": budget, "strategy": strategy, "seed": seed, "accuracy": acc,
                       "labels_used": 0 if budget == 0 else len(parts.train) + len(parts.val),
                       "seconds": time.perf_counter() - t}
                rows.append(row)
                log(f"{budget} per class, {strategy}, seed {seed}: accuracy {acc:.3f} ({row['seconds']:.1f} s)")
    result = summarise(rows, margin, n_test=len(fixed.test))
    result.update({"data": dataset.source, "backbone": bb_name, "n_test": len(fixed.test), "classes": len(names),
                   "chance": 1.0 / len(names), "rows": rows})
    if out is not None:
        save(result, Path(out))
    return result


def summarise(rows: list[dict[str, Any]], margin: float, n_test: int | None = None) -> dict[str, Any]:
    """Mean and spread per (budget, rung), and the cheapest rung that cannot be told apart from the best.

    "Cannot be told apart" is the larger of ``margin`` and the noise of the comparison: 1.96 standard
    errors of the difference of two means over seeds. With a small test split, the sampling error of
    the test items themselves (binomial, sqrt(p(1-p)/n)) is said in words as well.
    """
    table: dict[tuple[str, str], list[float]] = {}
    secs: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        key = (str(r["budget"]), r["strategy"])
        table.setdefault(key, []).append(r["accuracy"])
        secs.setdefault(key, []).append(r["seconds"])
    summary = [{"budget": b, "strategy": s, "mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                "runs": len(v), "seconds": float(np.mean(secs[(b, s)]))} for (b, s), v in table.items()]
    best = max(summary, key=lambda r: r["mean"])

    def cost(r: dict[str, Any]) -> tuple[float, int]:
        labels = 0.0 if r["budget"] == "0" else (float("inf") if r["budget"] == "all" else float(r["budget"]))
        return labels, COST_ORDER.index(r["strategy"]) if r["strategy"] in COST_ORDER else len(COST_ORDER)

    def tolerance(r: dict[str, Any]) -> float:
        noise = 1.96 * float(np.sqrt(best["std"] ** 2 / best["runs"] + r["std"] ** 2 / r["runs"]))
        return max(margin, noise)

    within = [r for r in summary if r["mean"] >= best["mean"] - tolerance(r)]
    pick = min(within, key=cost)
    tol = tolerance(pick)
    why = f"{100 * margin:.0f} points" if tol == margin else f"{100 * tol:.1f} points (the spread over seeds)"
    rec = (f"{pick['strategy']} at {pick['budget']} labels per class reaches {100 * pick['mean']:.1f}%, within "
           f"{why} of the best ({best['strategy']} at {best['budget']}: {100 * best['mean']:.1f}%)")
    if pick is best:
        rec = f"the best rung is {best['strategy']} at {best['budget']} labels per class ({100 * best['mean']:.1f}%)"
    warnings = []
    if n_test is not None and n_test < 50:
        p = best["mean"]
        half = 100 * 1.96 * float(np.sqrt(max(p * (1 - p), 0.01) / max(n_test, 1)))
        warnings.append(f"The test split has only {n_test} items: each accuracy is known to within about "
                        f"+-{half:.0f} points, so rungs closer than that may swap with other test items.")
    return {"summary": summary, "best": best, "recommended": pick, "recommendation": rec, "margin": margin,
            "tolerance": tol, "warnings": warnings}


def save(result: dict[str, Any], folder: Path) -> None:
    from .._io import atomic_file, write_json_atomic, write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "ladder.json", result)
    lines = [f"# Label-budget ladder: {result['data']} with {result['backbone']}", "",
             f"Fixed test set: {result['n_test']} examples, {result['classes']} classes (chance {100 * result['chance']:.1f}%).", "",
             "| labels per class | rung | accuracy (mean +- std) | runs | seconds per run |", "|---|---|---|---|---|"]
    for r in result["summary"]:
        lines.append(f"| {r['budget']} | {r['strategy']} | {100 * r['mean']:.1f} +- {100 * r['std']:.1f} | {r['runs']} "
                     f"| {r['seconds']:.1f} |")
    lines += ["", f"Recommendation: {result['recommendation']}."] + [f"Warning: {w}" for w in result.get("warnings", [])]
    lines += ["", "![ladder](ladder.png)", ""]
    write_text_atomic(folder / "ladder.md", "\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r["budget"] for r in result["summary"]}, key=lambda b: (b == "all", int(b) if b.isdigit() else 0))
    xpos = {b: i for i, b in enumerate(budgets)}
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for strategy in dict.fromkeys(r["strategy"] for r in result["summary"]):
        pts = sorted((xpos[r["budget"]], r["mean"], r["std"]) for r in result["summary"] if r["strategy"] == strategy)
        x, y, e = zip(*pts)
        ax.errorbar(x, [100 * v for v in y], yerr=[100 * v for v in e], marker="o", capsize=3, label=strategy)
    ax.axhline(100 * result["chance"], color="0.6", ls="--", lw=1, label="chance")
    ax.set_xticks(range(len(budgets)), budgets)
    ax.set_xlabel("labelled examples per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{result['data']} with {result['backbone']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(folder / "ladder.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
