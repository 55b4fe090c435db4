"""``rank_backbones``: score every candidate backbone on the user's data, through the feature cache."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from ..backbones import create_backbone, list_backbones
from ..data import load_data, validate
from ..errors import BackboneError, ConfigError
from ..features import extract_features, source_probabilities
from ..rank import RANKERS, score
from ..runtime import Runtime

DEFAULT_SCORES = ("logme", "hscore-shrink", "knn", "leep", "nce")


MAX_EXAMPLES = 1000


def rank_backbones(data: Any, backbones: Sequence[str] | None = None, scores: Sequence[str] = DEFAULT_SCORES, *,
                   cache_dir: str | None = None, device: str | None = None, progress: bool = True,
                   max_examples: int | None = MAX_EXAMPLES, engine: str = "auto",
                   log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Rank backbones by transferability on ``data`` (labelled). The first score is the primary one.

    ``max_examples``: above this many examples the scores are computed on a seeded subset with at
    most ``max_examples // classes`` per class (every example of a smaller class). Ranking costs one
    forward pass per candidate over the examples scored, so the cap keeps it to seconds or minutes
    on large data while fine-tuning still grows with all of it; the scores settle within a few
    hundred examples (``bench/rank_validation.py`` measures the agreement). ``None``: no cap.
    ``engine``: what runs the backbones (``auto``: ONNX Runtime for image backbones on CPU where it
    pays; see :mod:`headstart.engine`).

    Returns ``{"rows": [...], "order": [...], "agreement": {...}, "recommendation": str}``; rows carry
    each score (None where a score does not apply, e.g. LEEP without a pre-training head), the
    seconds spent per backbone (features + scores) and the backbone's size.
    """
    dataset = load_data(data)
    report = validate(dataset)
    report.raise_for_errors()
    names = list(backbones) if backbones else [e.name for e in list_backbones() if e.available
                                               and e.modality == dataset.modality]
    if not names:
        raise BackboneError(f"No {dataset.modality} backbone is available here.", fix="pip install 'headstart[zoo]'.")
    for s in scores:
        RANKERS.get(s)  # unknown names fail before any work
    if max_examples is not None and max_examples < 1:
        raise ConfigError(f"max_examples must be at least 1, got {max_examples}.", fix="pass None to score every example.")
    full_size = len(dataset)
    if max_examples is not None and len(dataset) > max_examples:
        from ..data.builtin import take_per_class

        dataset = take_per_class(dataset, max(2, max_examples // len(dataset.label_names)))
        log(f"Scoring on {len(dataset)} of {full_size} examples (at most {max_examples}, stratified)")
    labels = np.asarray(dataset.labels)
    rows = []
    for name in names:
        bb = create_backbone(name)
        if bb.card.modality != dataset.modality:
            raise BackboneError(f"The backbone '{name}' takes {bb.card.modality}s but {dataset.source} holds "
                                f"{dataset.modality}s.", fix=f"rank {dataset.modality} backbones only.")
        log(f"Scoring {name}")
        start = time.perf_counter()
        feats = extract_features(bb, dataset, cache_dir=cache_dir, device=device, progress=progress, engine=engine)
        probs = None
        if bb.card.source_classes:  # the head on the features in hand, else a pass of its own
            probs = (source_probabilities(bb, feats) if bb.source_head() is not None else
                     extract_features(bb, dataset, cache_dir=cache_dir, device=device, progress=progress, source=True,
                                      engine=engine))
        values: dict[str, float | None] = {}
        for s in scores:
            values[s] = None if RANKERS.get(s).needs_source_probs and probs is None else score(s, feats, labels, probs)
        rows.append({"backbone": name, "params": bb.card.num_params, "feature_dim": bb.card.feature_dim,
                     "seconds": time.perf_counter() - start, "scores": values})
    primary = scores[0]
    order = sorted(rows, key=lambda r: -(r["scores"][primary] if r["scores"][primary] is not None else -np.inf))
    agreement = score_agreement(rows, scores)
    best = order[0]
    runner_up = order[1]["backbone"] if len(order) > 1 else None
    text = (f"Use {best['backbone']}: it has the highest {primary} on your data"
            + (f", ahead of {runner_up}" if runner_up else "") + ". ")
    if best["backbone"] == "raw-pixels":
        text += "No pre-trained backbone beats raw pixels here: transfer is unlikely to help."
    return {"primary": primary, "rows": rows, "order": [r["backbone"] for r in order], "agreement": agreement,
            "recommendation": text, "n": len(dataset), "n_total": full_size, "classes": len(dataset.label_names)}


def score_agreement(rows: list[dict[str, Any]], scores: Sequence[str]) -> dict[str, float]:
    """Kendall tau between each pair of scores over the backbones both could score (three or more).
    A score that ties every backbone orders nothing, so its pairs are left out rather than nan."""
    from scipy.stats import kendalltau

    agreement = {}
    for a, b in combinations(scores, 2):
        both = [r for r in rows if r["scores"][a] is not None and r["scores"][b] is not None]
        if len(both) >= 3:
            tau = float(kendalltau([r["scores"][a] for r in both], [r["scores"][b] for r in both]).statistic)
            if np.isfinite(tau):
                agreement[f"{a} ~ {b}"] = tau
    return agreement


def confirm_ranking(data: Any, order: Sequence[str], k: int, *, seed: int = 0, cache_dir: str | None = None,
                    device: str | None = None, progress: bool = True,
                    log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Successive halving over the top ``k`` of ``order``: short LP-FT runs (linear probe for
    backbones that cannot train), epochs doubling each round, the better half going on.

    Accuracies are measured on a held-out part of ``data`` that the runs do not train on.
    Returns the rounds, the confirmed order, and whether the score's top choice held.
    """
    import math

    from ..data import split
    from ..evaluation.metrics import classification_metrics
    from ..methods import make_config
    from .pipeline import train_model

    dataset = load_data(data)
    parts = split(dataset, val=0.2, test=0.25, seed=seed)
    names = dataset.label_names
    alive = list(order[:max(1, k)])
    rounds: list[dict[str, Any]] = []
    eliminated: list[list[str]] = []
    epochs = 1
    while True:
        accs: dict[str, float] = {}
        for name in alive:
            bb = create_backbone(name)
            strategy = "lp-ft" if bb.trainable else "linear-probe"
            config = make_config(strategy, epochs=epochs) if strategy == "lp-ft" else make_config(strategy)
            log(f"Confirming {name}: {strategy}" + (f", {epochs} epoch(s)" if strategy == "lp-ft" else ""))
            _, proba, ys, _ = train_model(bb, parts, names, strategy, config, seed=seed, ood=False,  # only accuracy is kept
                                          runtime=Runtime(device=device, cache_dir=cache_dir, progress=progress))
            accs[name] = classification_metrics(ys["test"], proba, names)["accuracy"]
        rounds.append({"epochs": epochs, "accuracy": accs})
        ranked = sorted(alive, key=lambda n: -accs[n])
        if len(alive) == 1:
            break
        keep = math.ceil(len(alive) / 2)
        # Candidates tied with the last one kept go on too: an order among equal scores is no evidence.
        while keep < len(ranked) and accs[ranked[keep]] == accs[ranked[keep - 1]]:
            keep += 1
        if keep == len(ranked):
            break  # all tied: another round at more epochs would not tell them apart either way
        eliminated.insert(0, ranked[keep:])
        alive = ranked[:keep]
        epochs *= 2
    confirmed = sorted(alive, key=lambda n: -rounds[-1]["accuracy"][n]) + [n for group in eliminated for n in group]
    # A tie at the top of the last round cannot confirm or refute the order: say so instead.
    last = rounds[-1]["accuracy"]
    tied = sorted(n for n in last if last[n] == max(last.values()))
    verdict = "tie" if len(tied) > 1 else ("held" if confirmed[0] == order[0] else "changed")
    return {"rounds": rounds, "confirmed_order": confirmed, "predicted_order": list(order[:k]),
            "top_choice_held": verdict == "held", "verdict": verdict, "tied": tied if verdict == "tie" else []}
