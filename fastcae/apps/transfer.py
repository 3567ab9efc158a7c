"""Transferability of a distilled student on a downstream classification set: how well its features transfer
(``extract_features``, ``linear_probe``, ``fine_tune``), and the ``fastcae transfer`` logic around them.

Kept out of the CLI so the same steps (load a named downstream set, probe, fine-tune, tabulate) can be
scripted. The datasets here are the ones that need no download; anything else goes through
``linear_probe`` / ``fine_tune`` directly with your own ``ImageSplit``s. This module sits above
``fastcae.apps.teacher`` (fine-tuning is its ``train_classifier``) and ``fastcae.evaluate`` (``accuracy``).
"""

from __future__ import annotations

import copy
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..evaluate import accuracy
from ..models.features import _last_linear, features_and_logits
from ..utils import channel_tensor, eval_mode, normalize
from .data import ImageSplit, load_digits
from .teacher import train_classifier

# ------------------------------------------------------------------------------------ transferability
# How good are a distilled student's features for a task it was never distilled on? A linear probe reads
# the frozen penultimate features; fine-tuning retrains the whole network with a new head. Both take real
# labelled images in [0, 1] and normalise them with the given mean/std, like ``evaluate.accuracy``.


def _check_split(split, name: str) -> None:
    if len(split) == 0:
        raise ValueError(f"the {name} split is empty")
    if split.images.dim() != 4:
        raise ValueError(f"{name} images must be [N, C, H, W], got shape {tuple(split.images.shape)}")
    if split.labels.dim() != 1 or split.labels.shape[0] != split.images.shape[0]:
        raise ValueError(f"{name} split has {split.images.shape[0]} images but labels of shape "
                         f"{tuple(split.labels.shape)}")


def _check_transfer_inputs(train, test, mean, std) -> Tensor:
    """Validate a train/test pair for probing or fine-tuning; returns the sorted train classes."""
    _check_split(train, "train")
    _check_split(test, "test")
    if train.images.shape[1:] != test.images.shape[1:]:
        raise ValueError(f"train images are {tuple(train.images.shape[1:])} but test images are "
                         f"{tuple(test.images.shape[1:])}; give both splits the same C, H, W")
    channels = train.images.shape[1]
    if len(tuple(mean)) != channels or len(tuple(std)) != channels:
        raise ValueError(f"mean/std need one value per channel ({channels}), got {len(tuple(mean))} and "
                         f"{len(tuple(std))}")
    classes = torch.unique(train.labels)
    if classes.numel() < 2:
        raise ValueError(f"the train split has {classes.numel()} class(es); a classifier needs at least 2")
    unseen = test.labels[~torch.isin(test.labels, classes)].unique()
    if unseen.numel():
        raise ValueError(f"test labels {unseen.tolist()} never occur in the train split")
    return classes


def _remap(labels: Tensor, classes: Tensor) -> Tensor:
    """Map arbitrary integer labels (e.g. digits 5-9) onto 0..K-1 in the order of ``classes`` (sorted)."""
    return torch.searchsorted(classes.to(labels.device), labels)


def _model_device(model: nn.Module, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def extract_features(model: nn.Module, images: Tensor, mean, std, batch_size: int = 500, device=None) -> Tensor:
    """Frozen penultimate features ``[N, F]`` (float32, on the CPU) of ``images [N, C, H, W]`` in [0, 1].

    The model runs in eval mode so BatchNorm uses its running statistics and the result does not depend on
    the batch; every submodule's training flag is restored afterwards.
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"need a non-empty [N, C, H, W] image batch, got shape {tuple(images.shape)}")
    device = _model_device(model, device)
    m, s = channel_tensor(mean, device), channel_tensor(std, device)
    if m.shape[1] != images.shape[1]:
        raise ValueError(f"mean/std have {m.shape[1]} values but the images have {images.shape[1]} channels")
    chunks = []
    with eval_mode(model):
        for i in range(0, images.shape[0], batch_size):
            x = normalize(images[i : i + batch_size].to(device).float(), m, s)
            feats, _ = features_and_logits(model, x)
            chunks.append(feats.float().flatten(1).cpu())
    return torch.cat(chunks)


def linear_probe(model: nn.Module, train, test, mean, std, *, epochs: int = 100, lr: float = 1.0,
                 weight_decay: float = 1e-3, device=None, seed: int = 0) -> dict:
    """Multinomial logistic regression on the frozen penultimate features of ``model``.

    Features are standardised with the train split's statistics (so one ``weight_decay`` suits any
    backbone), then a linear classifier is fitted full-batch with L-BFGS for ``epochs`` iterations on the
    train split and scored on the test split. The problem is convex and starts from zero weights, so the
    result is deterministic; ``seed`` only fixes the global RNG for symmetry with ``fine_tune``.
    Labels may be any integers; they are mapped to 0..K-1 internally.
    """
    classes = _check_transfer_inputs(train, test, mean, std)
    torch.manual_seed(seed)
    device = _model_device(model, device)
    f_train = extract_features(model, train.images, mean, std, device=device).to(device)
    f_test = extract_features(model, test.images, mean, std, device=device).to(device)
    mu, sigma = f_train.mean(0), f_train.std(0).clamp_min(1e-6)
    f_train, f_test = (f_train - mu) / sigma, (f_test - mu) / sigma
    y_train, y_test = _remap(train.labels, classes).to(device), _remap(test.labels, classes).to(device)

    head = nn.Linear(f_train.shape[1], classes.numel()).to(device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=lr, max_iter=epochs, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(f_train), y_train) + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        loss = F.cross_entropy(head(f_train), y_train).item()
        train_acc = (head(f_train).argmax(1) == y_train).float().mean().item()
        test_acc = (head(f_test).argmax(1) == y_test).float().mean().item()
    return {"train_accuracy": train_acc, "test_accuracy": test_acc, "num_features": int(f_train.shape[1]),
            "num_classes": int(classes.numel()), "classes": classes.tolist(), "train_loss": loss}


def replace_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """Swap the last ``nn.Linear`` of ``model`` (in ``modules()`` order) for a fresh one with ``num_classes``
    outputs, in place; returns the new layer. Works for zoo models (``fc``) and any classifier ending in one."""
    old = _last_linear(model)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device)
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
    return new


def fine_tune(model: nn.Module, train, test, mean, std, *, epochs: int = 10, lr: float = 0.01,
              batch_size: int = 64, weight_decay: float = 5e-4, flip: bool = False, device=None,
              seed: int = 0, progress: bool = False) -> dict:
    """Fine-tune a copy of ``model`` end to end on ``train`` with a new head; score it on ``test``.

    The user's model is left untouched (a deep copy is trained). The last ``nn.Linear`` is replaced by one
    with as many outputs as the train split has classes, then every weight is trained with SGD (momentum,
    nesterov) under a one-cycle cosine schedule and random-crop augmentation (``teacher.train_classifier``).
    Returns train/test accuracy, the per-epoch history and the fine-tuned model (labels remapped to
    ``0..K-1`` in the order of ``classes``).
    """
    classes = _check_transfer_inputs(train, test, mean, std)
    device = _model_device(model, device)
    torch.manual_seed(seed)
    tuned = copy.deepcopy(model)
    replace_head(tuned, int(classes.numel()))
    tuned.to(device)
    train_k = ImageSplit(train.images, _remap(train.labels, classes))
    test_k = ImageSplit(test.images, _remap(test.labels, classes))
    history = train_classifier(tuned, train_k, mean, std, epochs=epochs, batch_size=batch_size, lr=lr,
                               weight_decay=weight_decay, flip=flip, device=device, seed=seed, progress=progress)
    return {
        "train_accuracy": accuracy(tuned, train_k.images, train_k.labels, mean, std, device=device),
        "test_accuracy": accuracy(tuned, test_k.images, test_k.labels, mean, std, device=device),
        "num_classes": int(classes.numel()),
        "classes": classes.tolist(),
        "epochs": epochs,
        "history": history,
        "model": tuned,
    }


# ------------------------------------------------------------------------------------ `fastcae transfer`


def load_transfer_dataset(name: str, image_size: int = 16, in_chans: int = 1) -> tuple[ImageSplit, ImageSplit]:
    """A named downstream split pair: ``"digits"`` (all ten) or ``"digits-A-B"`` (classes A..B only).

    Restricting the bundled digits to classes the student may not have been distilled on (e.g. 5-9 for a
    student of 0-4) gives a download-free transfer check. Grey images are repeated to ``in_chans`` channels.
    """
    match = re.fullmatch(r"digits(?:-(\d)-(\d))?", name)
    if match is None:
        raise ValueError(f"unknown transfer dataset {name!r}; known: 'digits', 'digits-A-B' (e.g. digits-5-9)")
    train, test = load_digits(image_size=image_size)
    if match.group(1) is not None:
        lo, hi = int(match.group(1)), int(match.group(2))
        if lo >= hi:
            raise ValueError(f"{name}: need at least two classes, A < B")
        train, test = train.subset(range(lo, hi + 1)), test.subset(range(lo, hi + 1))
    if in_chans != 1:
        train = ImageSplit(train.images.repeat(1, in_chans, 1, 1), train.labels)
        test = ImageSplit(test.images.repeat(1, in_chans, 1, 1), test.labels)
    return train, test


def run_transfer(student: nn.Module, train: ImageSplit, test: ImageSplit, mean, std, *, probe: bool = True,
                 finetune: bool = True, probe_epochs: int = 100, epochs: int = 10, lr: float = 0.01,
                 batch_size: int = 64, device=None, seed: int = 0) -> dict:
    """Linear probe and/or fine-tuning of ``student``; a JSON-ready dict with one entry per method."""
    results: dict = {"train_images": len(train), "test_images": len(test)}
    if probe:
        results["linear_probe"] = linear_probe(student, train, test, mean, std, epochs=probe_epochs,
                                               device=device, seed=seed)
    if finetune:
        tuned = fine_tune(student, train, test, mean, std, epochs=epochs, lr=lr, batch_size=batch_size,
                          device=device, seed=seed)
        tuned.pop("model")
        results["fine_tune"] = tuned
    return results


def format_results(results: dict) -> str:
    """A small fixed-width table: method, train accuracy, test accuracy."""
    rows = [("method", "train acc", "test acc")]
    for key, label in (("linear_probe", "linear probe"), ("fine_tune", "fine-tune")):
        if key in results:
            r = results[key]
            rows.append((label, f"{100 * r['train_accuracy']:.1f}%", f"{100 * r['test_accuracy']:.1f}%"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
