"""The one training loop, top to bottom. Every fine-tuning strategy calls ``train``.

Accelerate wraps devices and processes (DDP under ``torchrun`` / ``accelerate launch``, bf16
autocast on GPU, gradient accumulation); the loop stays here and readable. Reproducibility and
resume come from seeding every epoch from ``(seed, epoch)``: the batch order, the augmentations and
dropout of epoch ``e`` do not depend on how the run got there, so a run killed after epoch 3 and
resumed from its checkpoint ends with the same weights as an uninterrupted run.

Checkpoints are safetensors (weights) + JSON (progress) + the optimizer state loaded with
``torch.load(weights_only=True)``; Accelerate's own ``load_state`` unpickles, so it is not used.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._io import FolderKind, atomic_dir
from .._malloc import tune_malloc
from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ..errors import CheckpointError, ConfigError
from ..progress import progress_bar
from .augment import augment_image, length_bucketed_batches, mix_batch
from .config import FineTuneConfig
from .losses import StepOutput, batch_spectral_shrinkage, loss_terms, total_loss

__all__ = ["Classifier", "TrainResult", "batch_spectral_shrinkage", "evaluate_logits", "run_fingerprint", "train"]


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float = float("nan")
    trainable_params: int = 0
    total_params: int = 0
    resumed_from_epoch: int | None = None
    stopped_early: bool = False
    stopped_reason: str = ""  # "diverged" (the loss stopped being a number), "collapsed", "no progress", "out of time"
    processes: int = 1


class Classifier(nn.Module):
    """Backbone features -> dropout -> head; with an aligner, also the domain-alignment loss.

    The target batch goes through the same ``forward`` call as the source batch, so that under DDP
    one forward/backward covers the backbone, the head and the aligner's own parameters (a domain
    discriminator). Heads with ``embed`` / ``classify`` (a bottleneck) are aligned at the
    bottleneck; plain heads at the backbone's pooled features.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, dropout: float, aligner: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone, self.head, self.drop = backbone, head, nn.Dropout(dropout)
        self.aligner = aligner

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        f = self.drop(self.backbone(**inputs))
        return self.head.embed(f) if hasattr(self.head, "embed") else f

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return self.head.classify(f) if hasattr(self.head, "classify") else self.head(f)

    def forward(self, target: dict[str, torch.Tensor] | None = None, with_features: bool = False,
                **inputs: torch.Tensor) -> Any:
        if target is None or self.aligner is None:
            f = self.backbone(**inputs)
            logits = self.head(self.drop(f))
            return (logits, f) if with_features else logits
        f_s, f_t = self.embed(inputs), self.embed(target)
        logits_s, logits_t = self.classify(f_s), self.classify(f_t)
        return logits_s, self.aligner(f_s, f_t, logits_s, logits_t)


def _schedule(kind: str, warmup_steps: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if kind == "constant":
            return min(1.0, (step + 1) / max(1, warmup_steps)) if warmup_steps else 1.0
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
        if kind == "onecycle":  # linear decay to 0 after the warm-up peak
            return 1.0 - progress
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _freeze_batchnorm(model: nn.Module) -> None:
    # Small data, small batches: keep the pre-trained BatchNorm statistics (as timm and the TF
    # EfficientNet fine-tuning recipes do); the affine weights still train.
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _seed(seed: int, epoch: int) -> int:
    s = (seed * 1_000_003 + epoch * 7919) % (2**31)
    torch.manual_seed(s)
    return s


CHECKPOINT_MARKER = "headstart-checkpoint.json"  # proves a folder is a checkpoint headstart wrote
CHECKPOINT_FOLDER = FolderKind("a headstart checkpoint", CHECKPOINT_MARKER, "fingerprint", frozenset(
    {CHECKPOINT_MARKER, "model.safetensors", "best.safetensors", "optimizer.pt", "trainer.json"}))


def run_fingerprint(backbone: Backbone, train_data: Dataset, val_data: Dataset, y_train: np.ndarray,
                    y_val: np.ndarray, config: FineTuneConfig, seed: int, target_data: Dataset | None = None,
                    trade_off: float = 1.0) -> dict[str, Any]:
    """What a checkpoint was made from: a resumed run must continue the same run, not another one."""
    def digest(*parts: Any) -> str:
        h = hashlib.sha256()
        for part in parts:
            h.update(json.dumps(part, default=str).encode())
        return h.hexdigest()[:32]

    return {"backbone": backbone.card.name, "seed": seed, "config": config.to_dict(),
            "data": digest(train_data.content_hashes(), y_train.tolist(), val_data.content_hashes(), y_val.tolist()),
            "target": digest(target_data.content_hashes(), trade_off) if target_data is not None else None}


def _fingerprint_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    what = {"data": "the training or validation data (items or labels) differ",
            "target": "the target-domain data differ", "backbone": "the backbone differs", "seed": "the seed differs"}
    out = []
    for key in ("backbone", "data", "target", "seed"):
        if saved.get(key) != current.get(key):
            out.append(what[key] + (f" ({saved.get(key)} -> {current.get(key)})" if key in ("backbone", "seed") else ""))
    old, new = saved.get("config", {}), current.get("config", {})
    out += [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return out


def _save_checkpoint(folder: Path, model: nn.Module, optimizer: Any, scheduler: Any, progress: dict[str, Any],
                     best_state: dict[str, torch.Tensor] | None, fingerprint: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    with atomic_dir(folder, CHECKPOINT_FOLDER) as tmp:
        # Images train in channels_last; safetensors stores only contiguous (NCHW) tensors.
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        if best_state is not None:
            save_file(best_state, str(tmp / "best.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "trainer.json").write_text(json.dumps({**progress, "scheduler": scheduler.state_dict()}, default=float))
        (tmp / CHECKPOINT_MARKER).write_text(json.dumps({"format": 1, "fingerprint": fingerprint}, default=str))


def _read_checkpoint(folder: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's trainer state, or None when there is nothing to resume; a checkpoint of
    another run, or a damaged one, is an error (never silently a fresh start)."""
    if not (folder / CHECKPOINT_MARKER).is_file():
        return None
    try:
        marker = json.loads((folder / CHECKPOINT_MARKER).read_text())
        state = json.loads((folder / "trainer.json").read_text())
        int(state["epoch"]), state["scheduler"], state["history"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"The checkpoint in '{folder}' is damaged ({type(exc).__name__}: {exc}).",
                              fix=f"delete '{folder}' and train again without --resume.") from None
    diff = _fingerprint_mismatch(marker.get("fingerprint", {}), fingerprint)
    if diff:
        raise CheckpointError(f"The checkpoint in '{folder}' was made by another run: " + "; ".join(diff[:6]) + ".",
                              fix="resume with the same data and options, or drop --resume to start again "
                                  f"(that replaces '{folder}').")
    return state


def train(backbone: Backbone, head: nn.Module, train_data: Dataset, val_data: Dataset, y_train: np.ndarray,
          y_val: np.ndarray, config: FineTuneConfig, *, checkpoint_dir: str | Path | None = None, resume: bool = False,
          seed: int = 0, device: str | None = None, progress: bool = True,
          log: Callable[[str], None] = lambda m: None, trainable: Callable[[nn.Module], None] | None = None,
          target_data: Dataset | None = None, aligner: nn.Module | None = None, trade_off: float = 1.0,
          val_score: Callable[[nn.Module], float] | None = None, deadline: float | None = None) -> TrainResult:
    """Fine-tune ``backbone`` + ``head`` in place; the best epoch's weights are loaded at the end.

    ``trainable``: optional hook that sets ``requires_grad`` itself (LoRA); otherwise the config's
    ``freeze`` / ``gradual`` decide over ``backbone.param_groups()``.
    Domain adaptation: with ``target_data`` (unlabelled) and an ``aligner`` (see
    :mod:`headstart.domain.losses`), every step also draws a target batch and adds
    ``trade_off * aligner(...)`` to the loss. ``val_score(model)``, when given, ranks epochs
    instead of validation accuracy (a label-free validator on the target domain).
    ``deadline`` (a ``time.monotonic()`` value): past it, the epoch ends at the next step, is scored on
    validation like any other, and training stops (``stopped_reason`` "out of time").
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from safetensors.torch import load_file

    tune_malloc()  # on CPU, 2.2x faster steps for conv nets, 1.3x for text (headstart._malloc)
    cuda = torch.cuda.is_available() and device != "cpu"
    # Some parameters never get a gradient (BERT's pooler under mean pooling; groups still frozen
    # by gradual unfreezing), which DDP must be told about.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    acc = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no",
                      gradient_accumulation_steps=config.grad_accum, kwargs_handlers=[ddp])
    image = backbone.card.modality == "image"
    text = backbone.card.modality == "text"
    if aligner is not None and config.bss > 0:
        raise ConfigError("`bss` (batch spectral shrinkage) does not combine with domain adaptation here.",
                          fix="set bss=0, or fine-tune without --target.")
    model = Classifier(backbone, head, config.head_dropout, aligner)
    if image:
        model = model.to(memory_format=torch.channels_last)

    # -- which parameters train, and at which learning rate ---------------------------------------
    groups = backbone.param_groups()
    n = len(groups)
    in_groups = {id(p) for g in groups for p in g}
    for p in backbone.parameters():  # e.g. the ImageNet head: not part of the features
        if id(p) not in in_groups:
            p.requires_grad_(False)

    def set_trainable(epoch: int) -> None:
        if trainable is not None:
            trainable(model)
            return
        top = n - 1 - epoch if config.gradual else 0  # gradual: groups >= top are unfrozen
        for i, g in enumerate(groups):
            for p in g:
                p.requires_grad_(i >= config.freeze and i >= top)

    set_trainable(0)
    head_params = list(head.parameters())
    opt_groups: list[dict[str, Any]] = [{"params": head_params, "lr": config.head_lr, "weight_decay": config.weight_decay}]
    for i, g in enumerate(groups):
        if i < config.freeze or not g:
            continue
        opt_groups.append({"params": g, "lr": config.lr * config.layer_decay ** (n - 1 - i),
                           # with L2-SP the backbone is pulled towards its pre-trained weights, not towards 0
                           "weight_decay": 0.0 if config.l2sp > 0 else config.weight_decay})
    if trainable is not None:  # LoRA & co: whatever the hook left trainable, at the backbone rate
        trainable(model)
        extra = [p for p in backbone.parameters() if p.requires_grad]
        opt_groups = opt_groups[:1] + ([{"params": extra, "lr": config.lr, "weight_decay": config.weight_decay}] if extra else [])
    if aligner is not None and any(True for _ in aligner.parameters()):  # a domain discriminator
        opt_groups.append({"params": list(aligner.parameters()), "lr": config.head_lr, "weight_decay": config.weight_decay})
    # Fused AdamW: one kernel per step for all parameters, on CPU (torch >= 2.4) as on GPU.
    optimizer = torch.optim.AdamW(opt_groups, fused=True)
    # The loss: cross-entropy plus the terms the config switches on (headstart.train.losses).
    terms = loss_terms(config, backbone, aligned=aligner is not None, trade_off=trade_off)
    mixing = image and (config.mixup > 0 or config.cutmix > 0)

    batches_per_epoch = math.ceil(len(train_data) / config.batch_size) // max(1, acc.num_processes)
    if config.max_steps_per_epoch:
        batches_per_epoch = min(batches_per_epoch, config.max_steps_per_epoch * config.grad_accum)
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / config.grad_accum))
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(config.schedule, int(config.warmup * total_steps), total_steps))

    result = TrainResult(total_params=sum(p.numel() for p in model.parameters()), processes=acc.num_processes)
    best_key: tuple[float, float] = (-1.0, -math.inf)
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs, start_epoch = 0, 0
    folder = Path(checkpoint_dir) if checkpoint_dir else None
    fingerprint = (run_fingerprint(backbone, train_data, val_data, y_train, y_val, config, seed, target_data, trade_off)
                   if folder is not None else {})
    state = _read_checkpoint(folder, fingerprint) if resume and folder is not None else None
    if resume and state is None:
        log(f"Nothing to resume in {folder}: no checkpoint there; training from the start"
            if folder is not None else "Nothing to resume: no checkpoint folder; training from the start")
    elif folder is not None and not resume and (folder / CHECKPOINT_MARKER).is_file():
        log(f"A checkpoint from an earlier run is in {folder}; starting again (pass --resume to continue it)")
    if state is not None:
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu"))
        scheduler.load_state_dict(state["scheduler"])
        if (folder / "best.safetensors").is_file():
            best_state = load_file(str(folder / "best.safetensors"))
        start_epoch, bad_epochs = state["epoch"] + 1, state["bad_epochs"]
        best_key, result.history = tuple(state["best_key"]), state["history"]  # type: ignore[assignment]
        result.best_epoch, result.resumed_from_epoch = state["best_epoch"], state["epoch"]
        log(f"Resumed after epoch {state['epoch'] + 1} of {config.epochs} from {folder}")
    model, optimizer = acc.prepare(model, optimizer)

    lengths = [len(str(x)) for x in train_data.items] if text else None
    # Always answering the commonest validation class scores this; a run that does no better collapsed.
    chance = float(np.bincount(np.asarray(y_val, dtype=np.int64)).max() / len(y_val)) if len(y_val) else 0.0
    labels_t = torch.as_tensor(y_train, dtype=torch.long)

    def make_inputs(data: Dataset, idx: list[int], rng: random.Random) -> dict[str, torch.Tensor]:
        if image and config.augment != "none":
            flip = config.augment == "crop-flip"
            items = [augment_image(data.load(i), rng, flip) for i in idx]
        else:
            items = [data.load(i) for i in idx]
        inputs = {k: v.to(acc.device) for k, v in backbone.preprocess(items).items()}
        if image:
            inputs["pixel_values"] = inputs["pixel_values"].contiguous(memory_format=torch.channels_last)
        return inputs

    def target_batches(rng: random.Random) -> Any:
        """Endless shuffled target batches (the target set is usually smaller or larger than the source)."""
        while True:
            order = list(range(len(target_data)))  # type: ignore[arg-type]
            rng.shuffle(order)
            for i in range(0, len(order) - config.batch_size + 1 if len(order) >= config.batch_size else 1,
                           config.batch_size):
                yield order[i:i + config.batch_size]

    for epoch in range(start_epoch, config.epochs):
        epoch_seed = _seed(seed, epoch)
        rng = random.Random(epoch_seed)
        gen = torch.Generator().manual_seed(epoch_seed)
        set_trainable(epoch)
        model.train()
        _freeze_batchnorm(model)
        if text:  # similar lengths together: dynamic padding wastes little
            all_batches = list(length_bucketed_batches(lengths, config.batch_size, rng))  # type: ignore[arg-type]
        else:
            order = list(range(len(train_data)))
            rng.shuffle(order)
            all_batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        targets = target_batches(random.Random(epoch_seed + 1)) if aligner is not None else None
        # Each process takes every num_processes-th batch (the same count on every rank).
        mine = all_batches[acc.process_index::acc.num_processes][:batches_per_epoch]
        loss_sum, seen, diverged, out_of_time = 0.0, 0, None, False
        with progress_bar(f"Epoch {epoch + 1}/{config.epochs}", total=len(mine),
                          enabled=progress and acc.is_main_process) as advance:
            for step, idx in enumerate(mine):
                inputs, y = make_inputs(train_data, idx, rng), labels_t[idx].to(acc.device)
                with acc.accumulate(model):
                    with acc.autocast():
                        if targets is not None:  # domain adaptation: a target batch through the same call
                            aligner.set_progress((epoch * len(mine) + step) / max(1, config.epochs * len(mine)))  # type: ignore[union-attr]
                            logits, align = model(target=make_inputs(target_data, next(targets), rng), **inputs)  # type: ignore[arg-type]
                            out = StepOutput(logits, y, alignment=align)
                        elif mixing:
                            px, ya, yb, lam = mix_batch(inputs["pixel_values"], y, config.mixup, config.cutmix, gen)
                            logits, feats = model(pixel_values=px, with_features=True)
                            out = StepOutput(logits, ya, feats, mixed_labels=yb, mix_weight=lam)
                        else:
                            logits, feats = model(**inputs, with_features=True)
                            out = StepOutput(logits, y, feats)
                        loss = total_loss(terms, out)
                    if not torch.isfinite(loss.detach()):
                        diverged = float(loss.detach())
                        break  # a NaN or infinite loss poisons every later step
                    acc.backward(loss)
                    if acc.sync_gradients and config.clip_grad > 0:
                        acc.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.clip_grad)
                    optimizer.step()
                    if acc.sync_gradients:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                loss_sum += float(loss.detach()) * len(idx)
                seen += len(idx)
                advance(1)
                if deadline is not None and time.monotonic() > deadline:
                    out_of_time = True
                    break

        if diverged is not None:
            result.stopped_early, result.stopped_reason = True, "diverged"
            log(f"Stopped in epoch {epoch + 1}: the training loss became {diverged:.3g} (diverged); "
                "a lower learning rate usually fixes this")
            break
        val_acc, val_loss = evaluate_logits(acc.unwrap_model(model), backbone, val_data, y_val, acc.device, image)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "val_accuracy": val_acc,
               "val_loss": val_loss, "lr": scheduler.get_last_lr()[-1]}
        if val_score is not None:
            row["target_score"] = float(val_score(acc.unwrap_model(model)))
        result.history.append(row)
        log(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, val accuracy {val_acc:.4f}, val loss {val_loss:.4f}"
            + (f", target score {row['target_score']:.4f}" if val_score is not None else ""))
        key = (row["target_score"], val_acc) if val_score is not None else (val_acc, -val_loss)
        if key > best_key:
            best_key, bad_epochs, result.best_epoch = key, 0, epoch + 1
            best_state = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
                          for k, v in acc.unwrap_model(model).state_dict().items()}
        else:
            bad_epochs += 1
        if folder is not None and acc.is_main_process:
            _save_checkpoint(folder, acc.unwrap_model(model), optimizer, scheduler,
                             {"epoch": epoch, "bad_epochs": bad_epochs, "best_key": list(best_key),
                              "best_epoch": result.best_epoch, "history": result.history, "config": config.to_dict()},
                             best_state, fingerprint)
        acc.wait_for_everyone()
        if config.stop_at_chance and epoch + 1 >= config.stop_at_chance and val_acc <= chance + 1e-9:
            result.stopped_early, result.stopped_reason = True, "collapsed"
            log(f"Stopped after epoch {epoch + 1}: validation accuracy {val_acc:.3f} is no better than always "
                f"answering the commonest class ({chance:.3f}): the run collapsed")
            break
        if out_of_time:
            result.stopped_early, result.stopped_reason = True, "out of time"
            log(f"Stopped in epoch {epoch + 1}: the time limit was reached")
            break
        if bad_epochs >= config.patience:
            result.stopped_early, result.stopped_reason = True, "no progress"
            log(f"Early stop: no better validation score for {bad_epochs} epochs")
            break

    final = acc.unwrap_model(model)
    if result.stopped_reason == "diverged" and best_state is None:
        raise ConfigError(f"Training diverged in its first epoch (the loss became {diverged:.3g}) at lr={config.lr:g}, "
                          f"head_lr={config.head_lr:g}; no epoch finished to fall back on.",
                          fix="lower the learning rate (--lr, --option head_lr=...), or keep clip_grad > 0.")
    if best_state is not None and (config.restore_best or result.stopped_reason == "diverged"):
        final.load_state_dict(best_state)
    final.eval()
    if image:
        final.to(memory_format=torch.contiguous_format)
    result.best_val_accuracy = (result.history[result.best_epoch - 1]["val_accuracy"]
                                if 0 < result.best_epoch <= len(result.history) else best_key[0])
    result.trainable_params = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    for p in final.parameters():
        p.requires_grad_(True)
    return result


@torch.no_grad()
def evaluate_logits(model: nn.Module, backbone: Backbone, data: Dataset, y: np.ndarray, device: torch.device,
                    image: bool, batch_size: int = 64) -> tuple[float, float]:
    """Validation accuracy and (unsmoothed) cross-entropy, without augmentation."""
    was_training = model.training
    model.eval()
    correct, loss, n = 0, 0.0, len(data)
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        inputs = {k: v.to(device) for k, v in backbone.preprocess([data.load(i) for i in idx]).items()}
        if image:
            inputs["pixel_values"] = inputs["pixel_values"].contiguous(memory_format=torch.channels_last)
        logits = model(**inputs).float()
        target = torch.as_tensor(y[idx], device=logits.device)
        correct += int((logits.argmax(1) == target).sum())
        loss += float(F.cross_entropy(logits, target, reduction="sum"))
    if was_training:
        model.train()
    return correct / max(n, 1), loss / max(n, 1)
