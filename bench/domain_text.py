"""The text path end to end on a real text pair built from offline data.

BBC News split in two by *which part of the article* the model sees: the source is the first 400
characters of each article (headline and lead), the target the last 400 characters (the end of
the body, a different register: quotes, background, no headline). Same five topics; disjoint
articles (even vs odd positions), so no article appears on both sides. Target labels are used only
to score the result.

    python bench/domain_text.py [--method self-train --tag selftrain]

Besides what the strategy kept (its guard reads the target labels given here), the choice a user
without target labels would get (``label_free_choice``) is reported.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import headstart
from headstart.data import Dataset, load_data
from headstart.methods.domain_adapt import AdaptConfig, choose


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="auto")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    bbc = load_data("builtin:bbc-news")
    src_idx, tgt_idx = range(0, len(bbc), 2), range(1, len(bbc), 2)
    source = Dataset("text", [bbc.items[i][:400] for i in src_idx], [bbc.labels[i] for i in src_idx],
                     [bbc.ids[i] + " (start)" for i in src_idx], source="bbc-news heads")
    target = Dataset("text", [bbc.items[i][-400:] for i in tgt_idx], [bbc.labels[i] for i in tgt_idx],
                     [bbc.ids[i] + " (end)" for i in tgt_idx], source="bbc-news tails")
    model = headstart.fit(source, target=target, backbone="minilm-l6", max_length=128, strategy="domain-adapt",
                          options={"method": args.method, "seeds": args.seeds}, progress=False, baseline=False, log=print)
    d = model.info["strategy"]["details"]
    out = {"summary": d["summary"], "chosen": d["chosen"], "reasons": d["reasons"], "gap_before": d["gap_before"],
           "gap_after": d["gap_after"], "target_accuracy_of_kept_model": model.info["metrics"]["target"]["accuracy"],
           "proportion_check": d.get("proportion_check"), "runs": d.get("runs")}
    unlabelled = {m: {k: v for k, v in s.items() if k != "target_accuracy"} for m, s in d["summary"].items()
                  if not m.endswith("+prior")}
    out["label_free_choice"], out["label_free_reasons"] = choose(unlabelled, AdaptConfig(), labelled=False)
    stem = "domain_text" + (f"_{args.tag}" if args.tag else "")
    Path(__file__).with_name("results").joinpath(f"{stem}.json").write_text(json.dumps(out, indent=2, default=float))
    for m, s in d["summary"].items():
        print(f"{m:>12}: target accuracy {100 * s['target_accuracy'][0]:.1f} +- {100 * s['target_accuracy'][1]:.1f}, "
              f"im {s['im'][0]:.3f}, rv {s['rv'][0]:.3f}")
    print("kept:", d["chosen"], "|", " / ".join(d["reasons"]))
    print("label-free choice:", out["label_free_choice"], "|", " / ".join(out["label_free_reasons"]))


if __name__ == "__main__":
    main()
