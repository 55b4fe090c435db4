"""Which unlabelled items to label next: uncertainty, diversity and their mix, in a registry.

A selector is a pure function ``fn(proba, features, labelled, n, rng) -> indices``: ``proba`` is the
current model's ``[N, K]`` probabilities on the pool, ``features`` the pool's ``[N, D]`` features,
``labelled`` the features of the items already labelled (``[L, D]``, possibly empty), ``n`` how
many to pick, ``rng`` a NumPy generator; it returns ``n`` distinct pool indices, the first to label
first. bench/active_learning.py measures them against random picks (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..registry import Registry

__all__ = ["SELECTORS", "DEFAULT_SELECTOR", "Selector", "select"]

SelectFn = Callable[[np.ndarray, np.ndarray, np.ndarray, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Selector:
    name: str
    fn: SelectFn
    description: str


SELECTORS: Registry[Selector] = Registry("selection strategy", ConfigError)
DEFAULT_SELECTOR = "mix"


def _register(name: str, description: str) -> Callable[[SelectFn], SelectFn]:
    def wrap(fn: SelectFn) -> SelectFn:
        SELECTORS.register(name, Selector(name, fn, description))
        return fn
    return wrap


def margin_scores(proba: np.ndarray) -> np.ndarray:
    """Top probability minus the runner-up: small means the model hesitates between two classes."""
    part = np.sort(proba, axis=1)
    return part[:, -1] - part[:, -2] if proba.shape[1] > 1 else np.ones(len(proba))


def entropy_scores(proba: np.ndarray) -> np.ndarray:
    p = np.clip(proba, 1e-12, 1.0)
    return -(p * np.log(p)).sum(1)


def _unit(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    z = np.asarray(x, dtype=np.float32) - mean
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def k_center(features: np.ndarray, labelled: np.ndarray, n: int, rng: np.random.Generator,
             candidates: np.ndarray | None = None) -> np.ndarray:
    """Greedy k-center (Sener & Savarese, 2018): repeatedly the item farthest from everything labelled
    or picked so far, in centred, unit-length feature space. ``candidates``: pick only among these."""
    mean = np.concatenate([features, labelled]).mean(0) if len(labelled) else features.mean(0)
    x = _unit(features, mean)
    pool = np.arange(len(x)) if candidates is None else np.asarray(candidates)
    xp = x[pool]
    picked: list[int] = []
    if len(labelled):
        lab = _unit(labelled, mean)
        dist = np.full(len(pool), np.inf, dtype=np.float32)
        for start in range(0, len(lab), 1024):
            dist = np.minimum(dist, (2.0 - 2.0 * (xp @ lab[start:start + 1024].T)).min(1))
    else:  # nothing labelled: start from a random item
        picked.append(int(rng.integers(len(pool))))
        dist = 2.0 - 2.0 * (xp @ xp[picked[0]])
        dist[picked] = -1.0
    while len(picked) < n:
        i = int(np.argmax(dist))
        picked.append(i)
        dist = np.minimum(dist, 2.0 - 2.0 * (xp @ xp[i]))
        dist[picked] = -1.0
    return pool[np.asarray(picked[:n], dtype=np.int64)]


@_register("random", "uniformly at random (the baseline every other strategy must beat)")
def random_select(proba: np.ndarray, features: np.ndarray, labelled: np.ndarray, n: int,
                  rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(len(proba))[:n]


@_register("margin", "smallest gap between the two most likely classes (uncertainty)")
def margin_select(proba: np.ndarray, features: np.ndarray, labelled: np.ndarray, n: int,
                  rng: np.random.Generator) -> np.ndarray:
    return np.argsort(margin_scores(proba), kind="stable")[:n]


@_register("entropy", "highest entropy of the predicted probabilities (uncertainty)")
def entropy_select(proba: np.ndarray, features: np.ndarray, labelled: np.ndarray, n: int,
                   rng: np.random.Generator) -> np.ndarray:
    return np.argsort(-entropy_scores(proba), kind="stable")[:n]


@_register("kcenter", "greedy k-center on the features: farthest from everything labelled (diversity)")
def kcenter_select(proba: np.ndarray, features: np.ndarray, labelled: np.ndarray, n: int,
                   rng: np.random.Generator) -> np.ndarray:
    return k_center(features, labelled, n, rng)


@_register("badge", "k-means++ on the gradient embeddings of the last layer (BADGE: uncertain and diverse)")
def badge_select(proba: np.ndarray, features: np.ndarray, labelled: np.ndarray, n: int,
                 rng: np.random.Generator) -> np.ndarray:
    # BADGE (Ash et al., 2020) embeds item i as g_i = (p_i - onehot(argmax p_i)) (x) x_i, the gradient of
    # the loss at the predicted label w.r.t. the last layer. <g_i, g_j> = <r_i, r_j> <x_i, x_j> with
    # r = p - onehot, so k-means++ distances are computed without forming the K x D embeddings.
    r = proba.astype(np.float64).copy()
    r[np.arange(len(r)), r.argmax(1)] -= 1.0
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(0)
    xn2 = (x * x).sum(1)
    rn2 = (r * r).sum(1)
    g2 = rn2 * xn2
    first = int(np.argmax(g2))
    picked = [first]

    def sq_dist(i: int) -> np.ndarray:
        return np.maximum(g2 + g2[i] - 2.0 * (r @ r[i]) * (x @ x[i]), 0.0)

    dist = sq_dist(first)
    while len(picked) < n:
        dist[picked] = 0.0
        total = dist.sum()
        i = int(rng.choice(len(dist), p=dist / total)) if total > 0 else int(rng.choice(
            np.setdiff1d(np.arange(len(dist)), picked)))
        picked.append(i)
        dist = np.minimum(dist, sq_dist(i))
    return np.asarray(picked[:n], dtype=np.int64)


@_register("mix", "k-center among the most uncertain items by margin (uncertain, then diverse)")
def mix_select(proba: np.ndarray, features: np.ndarray, labelled: np.ndarray, n: int,
               rng: np.random.Generator) -> np.ndarray:
    # Uncertainty alone picks near-copies from one confused region; diversity alone spends labels on
    # easy items. Take the 4n least certain, then spread the picks among them.
    shortlist = np.argsort(margin_scores(proba), kind="stable")[:min(len(proba), 4 * n)]
    return k_center(features, labelled, n, rng, candidates=shortlist)


def select(strategy: str, proba: np.ndarray, features: np.ndarray, labelled: np.ndarray | None, n: int, *,
           seed: int = 0) -> np.ndarray:
    """``n`` pool indices chosen by the registered ``strategy`` (checked: distinct, in range)."""
    entry = SELECTORS.get(strategy)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"`n` must be a positive whole number, got {n!r}.")
    if n > len(proba):
        raise ConfigError(f"`n` = {n} is larger than the pool ({len(proba)} items).",
                          fix=f"ask for at most {len(proba)}, or add items to the pool.")
    if len(features) != len(proba):
        raise ConfigError(f"{len(features)} feature rows for {len(proba)} probability rows.")
    lab = np.empty((0, features.shape[1]), dtype=np.float32) if labelled is None else np.asarray(labelled)
    out = np.asarray(entry.fn(np.asarray(proba), np.asarray(features), lab, int(n), np.random.default_rng(seed)),
                     dtype=np.int64)
    assert len(out) == n and len(set(out.tolist())) == n, f"selector {strategy} returned {out}"
    return out
