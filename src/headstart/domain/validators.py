"""Label-free validators: judge a model on the target domain without target labels.

Each is a pure function of the model's target-domain outputs, higher = better:

- ``information_maximisation`` (IM; Shi & Sha 2012, used by SHOT): entropy of the mean prediction
  minus the mean entropy of each prediction, divided by log K. High when predictions are confident
  *and* spread over the classes; a model that collapses every target example onto one class, the
  typical failure of adversarial adaptation, scores near 0.
- ``reverse_validation`` (RV; Zhong et al. 2010, the model selection of Ganin et al.'s DANN
  paper): label the target with the model's predictions, fit a logistic regression on the target
  embeddings with those pseudo-labels, and score it on the labelled *source* validation split.
  Collapsed or scrambled target predictions do not transfer back, so they score low.
- ``soft_neighbourhood_density`` (SND; Saito et al., ICCV 2021): the entropy of each target
  example's soft neighbourhood in prediction space. Reported, but not used to choose: on
  MNIST -> UCI digits it ranked collapsed models highest (everything in one class is one dense
  neighbourhood); see bench/results/domain_adaptation.md.

None sees a target label, so they can pick the epoch and the method on the target domain. They are
heuristics: the benchmark in ``bench/domain_adaptation.py`` reports how well the choice they make
agrees with the one target labels would make.

Contract: ``validator(proba_t, z_t=None, z_s=None, y_s=None) -> float`` with target probabilities,
target and source-validation embeddings, and the source-validation labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import Registry


def information_maximisation(proba: np.ndarray, **_: Any) -> float:
    p = torch.as_tensor(proba, dtype=torch.float64).clamp_min(1e-12)
    k = p.shape[1]
    mean = p.mean(0)
    marginal = -(mean * mean.log()).sum()
    conditional = -(p * p.log()).sum(1).mean()
    return float((marginal - conditional) / math.log(k))


def soft_neighbourhood_density(proba: np.ndarray, temperature: float = 0.05, max_n: int = 2000, seed: int = 0,
                               **_: Any) -> float:
    """Mean entropy of the softmax (at ``temperature``) over cosine similarities to the other
    examples, divided by log(N - 1) so that it is comparable across sample sizes. At most
    ``max_n`` examples (a fixed random subset) keep it O(max_n^2)."""
    p = torch.as_tensor(proba, dtype=torch.float64)
    if len(p) > max_n:
        idx = torch.randperm(len(p), generator=torch.Generator().manual_seed(seed))[:max_n]
        p = p[idx]
    n = len(p)
    if n < 3:
        return float("nan")
    z = F.normalize(p, dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(-math.inf)
    q = F.softmax(sim, dim=1)
    ent = -(q * torch.log(q.clamp_min(1e-300))).sum(1).mean()
    return float(ent / math.log(n - 1))


def reverse_validation(proba: np.ndarray, z_t: np.ndarray | None = None, z_s: np.ndarray | None = None,
                       y_s: np.ndarray | None = None, **_: Any) -> float:
    if z_t is None or z_s is None or y_s is None:
        raise ValueError("reverse_validation needs target and source embeddings and the source labels")
    from ..train.logistic import fit_logistic

    pseudo = proba.argmax(1)
    if len(np.unique(pseudo)) < 2:  # one class for everything: the reverse model is a constant
        return float((y_s == pseudo[0]).mean())
    mean, std = z_t.mean(0), z_t.std(0) + 1e-6
    # torch L-BFGS (float64), C = 1: a relative score needs no C search, and it is ~10x faster
    # than scikit-learn here, which matters because this runs after every epoch.
    w, b = fit_logistic((z_t - mean) / std, pseudo, proba.shape[1], C=1.0, max_iter=100)
    logits = torch.as_tensor((z_s - mean) / std, dtype=torch.float64) @ w.T + b
    return float((logits.argmax(1).numpy() == y_s).mean())


VALIDATORS: Registry[Callable[..., float]] = Registry("label-free validator", ConfigError)
VALIDATORS.register("im", information_maximisation)
VALIDATORS.register("rv", reverse_validation)
VALIDATORS.register("snd", soft_neighbourhood_density)
CHOOSING = ("im", "rv")  # the validators that choose the method and run the guard


def validator_readings(proba: np.ndarray, **context: Any) -> dict[str, float]:
    return {name: VALIDATORS.get(name)(proba, **context) for name in VALIDATORS.names()}


# -- the class-proportion check of the guard -------------------------------------------------------
#
# IM and RV can both prefer a model that got the target's class proportions wrong: per-domain
# standardisation under a change of class proportions spreads the predictions over the classes,
# which IM rewards, and RV reads the pseudo-labels in a space with the same error (measured on BBC
# News article ends with one class at 50%: self-training lost 3 points and both preferred it).
# The check compares what each model predicts with the target proportions source-only's outputs
# estimate (label-shift EM / BBSE), but only where that estimate can be trusted.

PROPORTION_EXCESS = 0.05  # L1 beyond source-only's own predictions at which a model distorts the proportions
TRUST_CONFIDENCE_DROP = 0.10  # source-only's mean confidence may fall by at most this from source to target
TRUST_MIXTURE_L1 = 0.5  # the estimate and the feature-mean class mixture must agree within this (L1)


def predicted_shares(proba: np.ndarray) -> np.ndarray:
    """The share of items each class is predicted for (argmax)."""
    p = np.asarray(proba)
    return np.bincount(p.argmax(1), minlength=p.shape[1]) / max(len(p), 1)


def proportion_excess(proba: np.ndarray, reference: np.ndarray, estimate: np.ndarray) -> float:
    """How much further (L1) ``proba``'s predicted class shares are from ``estimate`` than the
    reference model's (source-only's) own predicted shares are. Positive: the model moved its
    predictions away from the target's estimated class proportions."""
    q = np.asarray(estimate, dtype=float)
    return float(np.abs(predicted_shares(proba) - q).sum() - np.abs(predicted_shares(reference) - q).sum())


def proportions_trusted(reference_source: np.ndarray, reference_target: np.ndarray, estimate: np.ndarray,
                        mixture: np.ndarray | None = None) -> tuple[bool, dict[str, Any]]:
    """Whether source-only's estimate of the target's class proportions can judge other models.

    The estimators assume each class looks the same in both domains; two label-free signs that it
    does not: source-only is much less confident on the target than on the source validation split
    (difference of confidences, Guillory et al. 2021; MNIST -> UCI digits: 0.2-0.4, text pairs:
    under 0.05), and the estimate disagrees with the class mixture that best explains the target's
    mean feature vector (MNIST -> UCI digits: L1 0.8-1.0, text pairs: under 0.2). Either one and the
    estimate is not used. Returns the verdict and the readings.
    """
    drop = float(np.asarray(reference_source).max(1).mean() - np.asarray(reference_target).max(1).mean())
    info: dict[str, Any] = {"confidence_drop": drop, "max_confidence_drop": TRUST_CONFIDENCE_DROP}
    trusted = drop <= TRUST_CONFIDENCE_DROP
    if mixture is not None:
        gap = float(np.abs(np.asarray(mixture, dtype=float) - np.asarray(estimate, dtype=float)).sum())
        info.update({"mixture_l1": gap, "max_mixture_l1": TRUST_MIXTURE_L1})
        trusted = trusted and gap <= TRUST_MIXTURE_L1
    info["trusted"] = trusted
    return trusted, info
