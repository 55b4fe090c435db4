"""BBC News, 8 labelled articles per topic, 250 unlabelled and 250 held-out articles (minilm-l6):
the linear probe, pseudo-label, and auto over the feature-based candidates with the pool.

    HEADSTART_CACHE=/tmp/benchcache python bench/pseudo_label_check.py [SEED]

Prints one JSON line per strategy: test accuracy, n, what auto chose, and its fold scores.
"""
import json
import sys

import numpy as np

import headstart
from headstart.data.builtin import load_builtin

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
data = load_builtin("bbc-news")
_, first = np.unique(data.content_hashes(), return_index=True)
data = data.subset(np.sort(first))
rng = np.random.default_rng(seed)
labels = np.asarray(data.labels)
lab, pool, test = [], [], []
for c in data.label_names:
    idx = rng.permutation(np.flatnonzero(labels == c))
    lab += idx[:8].tolist(); pool += idx[8:58].tolist(); test += idx[58:108].tolist()
labelled = data.subset(lab + test)
labelled.splits = ["train"] * len(lab) + ["test"] * len(test)
unl = data.subset(pool); unl.labels = None
out = {}
for strategy, opts in (("linear-probe", {}), ("pseudo-label", {}),
                       ("auto", {"candidates": "linear-probe,prototypes,pseudo-label", "budget_s": 120})):
    m = headstart.fit(labelled, backbone="minilm-l6", strategy=strategy, max_length=128, seed=seed, baseline=False,
                      progress=False, options=opts, unlabelled=None if strategy == "linear-probe" else unl)
    d = m.info["strategy"]["details"]
    out[strategy] = {"test": m.info["metrics"]["test"]["accuracy"], "n": m.info["metrics"]["test"]["n"],
                     "chosen": d.get("chosen_strategy"),
                     "cv": {r["strategy"]: r.get("cv_accuracy") for r in d.get("search", [])}}
    print(strategy, json.dumps(out[strategy]), flush=True)
