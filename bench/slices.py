"""Slices on real data: is a model fitted on a few labels worse for short, medium or long articles?

BBC News (``builtin:bbc-news``, 2225 articles, minilm-l6 reading the first 128 tokens). The group column is made from the data
itself: each article's length in words, cut at the terciles of the whole set into short / medium /
long. A model is fitted with ``headstart fit`` (linear probe) on 20 articles per topic and scored
with ``headstart eval --group-column length`` on every other article. A second, binary task
(business vs tech, 20 per class) adds the demographic-parity and equalized-odds differences.

    scripts/offline .venv/bin/python bench/slices.py       # -> bench/results/slices/
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from headstart.data import load_data

OUT = Path(__file__).parent / "results" / "slices"
PER_CLASS = 20


def write(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label", "length"])
        w.writerows(rows)


def run(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "headstart", *args], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(res.stderr)
    return res.stdout


def task(name: str, data, keep: set[str], work: Path) -> dict:
    words = np.array([len(t.split()) for t in data.items])
    lo, hi = np.percentile(words, [100 / 3, 200 / 3])
    bucket = np.where(words < lo, f"short (<{lo:.0f} words)", np.where(words < hi, "medium", f"long (>={hi:.0f} words)"))
    idx = [i for i, lab in enumerate(data.labels) if lab in keep]
    rng = np.random.default_rng(0)
    train = set()
    for lab in sorted(keep):
        train |= set(rng.choice([i for i in idx if data.labels[i] == lab], PER_CLASS, replace=False).tolist())
    rows = lambda ids: [(data.items[i], data.labels[i], str(bucket[i])) for i in ids]  # noqa: E731
    write(work / f"{name}-train.csv", rows(sorted(train)))
    write(work / f"{name}-test.csv", rows([i for i in idx if i not in train]))
    run("fit", str(work / f"{name}-train.csv"), "--out", str(work / f"run-{name}"), "--overwrite", "--max-length", "128")
    printed = run("eval", str(work / f"run-{name}"), str(work / f"{name}-test.csv"), "--group-column", "length",
                  "--json", str(OUT / f"{name}.json"))
    (OUT / f"{name}.txt").write_text(printed)
    print(printed)
    return json.loads((OUT / f"{name}.json").read_text())


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/headstart-slices")
    work.mkdir(parents=True, exist_ok=True)
    data = load_data("builtin:bbc-news")
    lines = []
    for name, keep in (("bbc-5-topics", set(data.label_names)), ("bbc-business-vs-tech", {"business", "tech"})):
        m = task(name, data, keep, work)
        s = m["slices"]
        lines += [f"**{name}** ({PER_CLASS} labels per class; scored on the other {m['n']} articles; overall accuracy "
                  f"{100 * m['accuracy']:.1f}%)", "",
                  "| length | n | accuracy (95% Wilson) | macro-F1 | ECE | behind the rest (95% bootstrap) |",
                  "|---|---|---|---|---|---|"]
        for r in s["groups"]:
            lo, hi = r["accuracy_ci95"]
            blo, bhi = r["behind_rest_ci95"]
            lines.append(f"| {r['group']} | {r['n']} | {100 * r['accuracy']:.1f}% ({100 * lo:.1f}-{100 * hi:.1f}) | "
                         f"{100 * r['macro_f1']:.1f}% | {r['ece']:.3f} | {100 * r['behind_rest']:+.1f} pts "
                         f"({100 * blo:+.1f} to {100 * bhi:+.1f}){' **falls behind**' if r['falls_behind'] else ''} |")
        g = s["gap"]
        lines += ["", f"Largest gap: {100 * g['value']:.1f} points ({g['best']} vs {g['worst']}; 95% bootstrap "
                      f"{100 * g['ci95'][0]:.1f} to {100 * g['ci95'][1]:.1f})."]
        if "binary" in s:
            b = s["binary"]
            lines.append(f"Positive class `{b['positive']}`: demographic-parity difference "
                         f"{b['demographic_parity_difference']:.3f}, equalized-odds difference "
                         f"{b['equalized_odds_difference']:.3f}.")
        lines += [f"Warnings: {'; '.join(s['warnings']) if s['warnings'] else 'none'}", ""]
    (OUT / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
