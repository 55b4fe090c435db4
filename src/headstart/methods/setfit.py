"""SetFit-style few-shot: contrastive fine-tuning of the encoder on pairs, then a head.

Tunstall et al. (2022): pull same-class pairs together and push different-class pairs apart
(cosine-similarity regression), then fit a logistic-regression head on the tuned embeddings. The
setfit library draws pairs from all combinations (its default ``sampling_strategy="oversampling"``)
so its cost grows with the square of the examples; here every epoch draws, for each example, a
fixed number of positives and negatives, so the pairs per epoch are ``2 * pairs_per_example * N``:
linear in the data and independent of the number of classes.

The pair objective is not a classification loss, so this has its own short loop; everything else
(preprocessing, the head, the artifact) is the shared machinery. Works for text and image backbones
alike (the "siamese recipe for image backbones").
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..train.linear_probe import LinearProbeConfig, linear_probe
from ..data.dataset import Dataset
from ..errors import ConfigError
from ..features import extract_features_many
from ..progress import progress_bar
from ..options import Config, Constraint, Interval, OneOf
from .base import StrategyInputs, register_strategy


@dataclass(frozen=True)
class ContrastiveConfig(Config):
    epochs: int = 1
    pairs_per_example: int = 10  # positives and negatives each, per example and epoch
    batch_size: int = 16
    lr: float = 2e-5
    warmup: float = 0.1
    head: str = "linear"
    type: str = field(default="setfit", init=False)

    constraints: ClassVar[dict[str, Constraint]] = {
        "epochs": Interval(1), "pairs_per_example": Interval(1), "batch_size": Interval(1),
        "lr": Interval(0, low_open=True), "warmup": Interval(0, 1, high_open=True),
        "head": OneOf(("linear", "mlp"))}
    notes: ClassVar[dict[str, str]] = {
        "pairs_per_example": "positives and negatives each, per example and epoch",
        "head": "the probe fitted on the tuned embeddings"}


def sample_pairs(y: np.ndarray, per_example: int, rng: random.Random) -> list[tuple[int, int, float]]:
    """For each example, ``per_example`` same-class and ``per_example`` other-class partners:
    O(N * per_example) pairs, however many classes there are."""
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(y.tolist()):
        by_class.setdefault(c, []).append(i)
    n = len(y)
    pairs = []
    for i, c in enumerate(y.tolist()):
        same = by_class[c]
        for _ in range(per_example):
            if len(same) > 1:
                j = i
                while j == i:
                    j = same[rng.randrange(len(same))]
                pairs.append((i, j, 1.0))
            j = rng.randrange(n)
            while y[j] == c:
                j = rng.randrange(n)
            pairs.append((i, j, 0.0))
    rng.shuffle(pairs)
    return pairs


def contrastive_finetune(backbone: Any, data: Dataset, y: np.ndarray, config: ContrastiveConfig, *, seed: int = 0,
                         device: Any = None, progress: bool = True, log: Callable[[str], None] = lambda m: None,
                         deadline: float | None = None) -> dict[str, Any]:
    """Tune ``backbone`` in place with the cosine pair loss; returns the loss history.

    ``deadline`` (a ``time.monotonic()`` value): past it, tuning stops after the current step."""
    if len(set(y.tolist())) < 2:
        raise ConfigError("Contrastive few-shot needs at least two classes.")
    dev = torch.device(device or "cpu")
    backbone.to(dev).train()
    params = [p for p in backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, fused=dev.type in ("cuda", "cpu"))
    rng = random.Random(seed)
    torch.manual_seed(seed)
    epochs = [sample_pairs(y, config.pairs_per_example, rng) for _ in range(config.epochs)]
    total = sum((len(p) + config.batch_size - 1) // config.batch_size for p in epochs)
    warm = max(1, int(config.warmup * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (total - s) / max(1, total - warm)))
    history: list[dict[str, Any]] = []
    stopped = ""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    with progress_bar("Contrastive pairs", total=total, enabled=progress) as advance:
        for e, pairs in enumerate(epochs):
            running, count = 0.0, 0
            for s in range(0, len(pairs), config.batch_size):
                chunk = pairs[s:s + config.batch_size]
                idx = sorted({i for a, b, _ in chunk for i in (a, b)})
                where = {i: k for k, i in enumerate(idx)}
                inputs = {k: v.to(dev) for k, v in backbone.preprocess([data.load(i) for i in idx]).items()}
                with autocast:
                    emb = F.normalize(backbone(**inputs).float(), dim=1)
                a = emb[[where[p[0]] for p in chunk]]
                b = emb[[where[p[1]] for p in chunk]]
                target = torch.tensor([p[2] for p in chunk], device=dev)
                loss = F.mse_loss((a * b).sum(1), target)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                running += float(loss.detach()) * len(chunk)
                count += len(chunk)
                advance(1)
                if deadline is not None and time.monotonic() > deadline:
                    break
            history.append({"epoch": e + 1, "pair_loss": running / max(count, 1), "pairs": len(pairs)})
            log(f"contrastive epoch {e + 1}: {len(pairs)} pairs, loss {history[-1]['pair_loss']:.4f}")
            if deadline is not None and time.monotonic() > deadline:
                stopped = "out of time"
                log("Stopped: the time limit was reached")
                break
    backbone.eval()
    return {"history": history, "pairs_per_epoch": len(epochs[0]) if epochs else 0, "stopped_reason": stopped}


def run_setfit(backbone: Any, inputs: StrategyInputs, config: ContrastiveConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    if not backbone.trainable:
        raise ConfigError(f"The backbone '{backbone.card.name}' cannot be fine-tuned.", fix="use --strategy prototypes.")
    info = contrastive_finetune(backbone, inputs.splits.train, inputs.labels["train"], config, seed=inputs.seed,
                                device=inputs.device, progress=inputs.progress, log=inputs.log,
                                deadline=inputs.runtime.deadline)
    train, val = extract_features_many(backbone, [inputs.splits.train, inputs.splits.val], use_cache=False,
                                       device=inputs.device, progress=inputs.progress)
    head, probe = linear_probe(train, inputs.labels["train"], val, inputs.labels["val"], inputs.num_classes,
                               LinearProbeConfig(head=config.head), device=inputs.device, seed=inputs.seed)
    # the head is refit on train + val: its own score on val would have seen the answers, so the
    # score kept is the probe's before that refit (auto compares candidates by it)
    score = probe.get("val_accuracy")
    return head, {**info, "C": probe.get("C"), **({"val_accuracy": score} if score is not None else {})}, True


register_strategy("setfit", ContrastiveConfig, run_setfit,
                  "SetFit-style contrastive pairs (linear sampling), then a logistic head", trains="yes")
