"""Supervised training of a classifier on tensors: the digits demo's teacher, and resumable CIFAR teachers.

SGD with momentum, cosine decay, random crop (+ optional flip) on device tensors; the defaults of the
CIFAR teacher recipe (lr 0.1, momentum 0.9, weight decay 5e-4). ``train_classifier`` is the short in-memory
loop of the demos; ``train_teacher`` is the documented paper-scale recipe (``TeacherRecipe``), which writes
an atomic checkpoint after every epoch and resumes from it, because 200 CIFAR epochs outlive many jobs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_write
from ..augment import Augment
from ..checkpoint import CheckpointError, read_payload, rng_state, set_rng_state
from ..evaluate import accuracy
from ..utils import versions
from .data import ImageSplit


def train_classifier(
    model: nn.Module,
    train: ImageSplit,
    mean,
    std,
    *,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    padding: int | None = None,
    flip: bool = False,
    device="cpu",
    seed: int = 0,
    test: ImageSplit | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` in place; returns one record per epoch (loss, train/test accuracy)."""
    torch.manual_seed(seed)
    device = torch.device(device)
    model.to(device).train()
    h = train.images.shape[-2]
    augment = Augment(mean, std, padding=padding if padding is not None else h // 8, flip=flip).to(device)
    images, labels = train.images.to(device), train.labels.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15, anneal_strategy="cos")
    history = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="teacher", unit="epoch", dynamic_ncols=True)
    for epoch in range(epochs):
        record = {"epoch": epoch + 1, "loss": _train_epoch(model, images, labels, augment, opt, sched, batch_size)}
        if test is not None and (epoch + 1 == epochs or (epoch + 1) % 5 == 0):
            record["test_accuracy"] = accuracy(model, test.images, test.labels, mean, std, device=device)
        history.append(record)
        if bar is not None:
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "epoch"})
            bar.update(1)
    if bar is not None:
        bar.close()
    model.eval()
    return history


def _train_epoch(model, images, labels, augment, opt, sched, batch_size: int) -> float:
    """One pass over the data in a random order, a scheduler step per batch; the mean loss (one host sync)."""
    model.train()
    n = labels.shape[0]
    steps = math.ceil(n / batch_size)
    perm = torch.randperm(n, device=images.device)
    total = torch.zeros((), device=images.device)
    for i in range(steps):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        loss = F.cross_entropy(model(augment(images[idx])), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.detach()
    return total.item() / steps


# ------------------------------------------------------------------------------- resumable teacher recipe

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "fastcae-teacher-checkpoint"


@dataclass
class TeacherRecipe:
    """The teacher training recipe: SGD (momentum, weight decay), cosine decay to 0 per step, random crop
    with padding and horizontal flip. The defaults are the common CIFAR recipe for DFKD teachers."""

    dataset: str
    model: str
    num_classes: int
    epochs: int = 200
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    padding: int = 4
    flip: bool = True
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class TeacherCheckpointError(CheckpointError):
    """A teacher checkpoint that cannot be resumed: unreadable, not ours, or from another recipe."""


def _load_checkpoint(path: Path, recipe: TeacherRecipe) -> dict:
    """Read with ``weights_only=True``; refuse a damaged file or another recipe, naming the file and fields."""
    payload = read_payload(path, CHECKPOINT_FORMAT, "cpu", what="teacher checkpoint", error=TeacherCheckpointError,
                           corrupt_hint="; delete it to start over", foreign_hint="; use another --out directory")
    saved, wanted = payload["recipe"], recipe.to_dict()
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, this run {v!r}" for k, v in wanted.items() if saved.get(k) != v]
    if diffs:
        raise TeacherCheckpointError(
            f"teacher checkpoint {path} was written by another recipe ({'; '.join(diffs)}); resume with the same "
            f"settings (the cosine schedule depends on --epochs) or use another --out directory")
    return payload


def train_teacher(
    model: nn.Module,
    train: ImageSplit,
    test: ImageSplit,
    recipe: TeacherRecipe,
    mean,
    std,
    out_dir,
    *,
    device=None,
    eval_every: int = 10,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict:
    """Train ``model`` by ``recipe``, resumably; returns the summary written to ``out_dir/teacher.json``.

    After every epoch ``out_dir/checkpoint.pt`` is replaced atomically (model, optimiser, scheduler, epoch,
    RNG state, history), so an interrupted run continues where it stopped and ends bit-identical to one that
    never stopped (same device and library versions). ``stop_after`` ends this call after that many epochs
    (to fit a job's time limit); when all ``recipe.epochs`` are done, ``teacher.pt`` (the state dict) and
    ``teacher.json`` (recipe, accuracy, history, versions) are written. Test accuracy is measured every
    ``eval_every`` epochs and after the last.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    augment = Augment(mean, std, padding=recipe.padding, flip=recipe.flip).to(device)
    images, labels = train.images.to(device), train.labels.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs * steps_per_epoch)
    ckpt_path = out / CHECKPOINT
    epoch, history = _resume(ckpt_path, recipe, model, opt, sched, device)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=recipe.epochs, initial=epoch, desc=f"{recipe.model} on {recipe.dataset}", unit="epoch",
                   dynamic_ncols=True)
    ran = 0
    try:
        while epoch < recipe.epochs and (stop_after is None or ran < stop_after):
            loss = _train_epoch(model, images, labels, augment, opt, sched, recipe.batch_size)
            epoch, ran = epoch + 1, ran + 1
            if not math.isfinite(loss):
                raise FloatingPointError(f"the training loss became {loss} at epoch {epoch}; the last good "
                                         f"checkpoint {ckpt_path} is kept (lower --lr and resume)")
            record = {"epoch": epoch, "loss": loss, "lr": sched.get_last_lr()[0]}
            if epoch == recipe.epochs or epoch % eval_every == 0:
                record["test_accuracy"] = accuracy(model, test.images, test.labels, mean, std, device=device)
            history.append(record)
            _save_checkpoint(ckpt_path, recipe, epoch, model, opt, sched, history)
            if bar is not None:
                bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k in ("loss", "test_accuracy")})
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    model.eval()

    finished = epoch >= recipe.epochs
    accs = [h["test_accuracy"] for h in history if "test_accuracy" in h]
    summary = {"recipe": recipe.to_dict(), "epochs_done": epoch, "finished": finished,
               "test_accuracy": accs[-1] if accs else None, "mean": list(mean), "std": list(std),
               "train_images": len(train), "test_images": len(test), "device": str(device),
               "versions": versions("torchvision"), "history": history}
    if finished:
        atomic_write(out / "teacher.pt", lambda tmp: torch.save(model.state_dict(), tmp))
        (out / "teacher.json").write_text(json.dumps(summary, indent=1))
    return summary


def _resume(path: Path, recipe: TeacherRecipe, model: nn.Module, opt, sched, device) -> tuple[int, list[dict]]:
    """The epochs done and their history: from the checkpoint at ``path`` (model, optimiser, scheduler and RNG
    state restored), else none, with the recipe's seed set."""
    if not path.exists():
        torch.manual_seed(recipe.seed)
        return 0, []
    payload = _load_checkpoint(path, recipe)
    model.load_state_dict(payload["model"])
    opt.load_state_dict(payload["optimizer"])
    sched.load_state_dict(payload["scheduler"])
    set_rng_state(payload["rng"], device)
    return payload["epoch"], list(payload["history"])


def _save_checkpoint(path: Path, recipe: TeacherRecipe, epoch: int, model: nn.Module, opt, sched,
                     history: list[dict]) -> None:
    """Everything ``_resume`` needs, written atomically (a crash mid-write keeps the previous checkpoint)."""
    payload = {"format": CHECKPOINT_FORMAT, "recipe": recipe.to_dict(), "epoch": epoch,
               "model": model.state_dict(), "optimizer": opt.state_dict(),
               "scheduler": sched.state_dict(), "rng": rng_state(), "history": history}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
