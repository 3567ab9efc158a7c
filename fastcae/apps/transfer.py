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
from collections.abc import Sequence
from pathlib import Path

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


PROBE_WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # the L2 grid ``weight_decay="auto"`` searches


def _stratified_indices(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices of a seeded split, ``fraction`` of every class in the first part (CPU generator, classes in
    sorted order: the same split on every machine)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    labels = labels.cpu()
    gen = torch.Generator().manual_seed(seed)
    first, second = [], []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        if idx.numel() < 2:
            raise ValueError(f"class {c} has {idx.numel()} image; splitting needs at least 2 per class")
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        cut = min(max(1, round(fraction * idx.numel())), idx.numel() - 1)
        first.append(idx[:cut])
        second.append(idx[cut:])
    return torch.cat(first).sort().values, torch.cat(second).sort().values


def split_stratified(split: ImageSplit, fraction: float = 0.5, seed: int = 0) -> tuple[ImageSplit, ImageSplit]:
    """A fixed, seeded split of one labelled set into two, ``fraction`` of every class in the first: the
    transfer protocol's 50/50 split of a downstream set that comes as one pool of labelled images."""
    a, b = _stratified_indices(split.labels, fraction, seed)
    return ImageSplit(split.images[a], split.labels[a]), ImageSplit(split.images[b], split.labels[b])


def _fit_probe(f_train: Tensor, y_train: Tensor, num_classes: int, weight_decay: float, iters: int,
               lr: float) -> nn.Linear:
    """Multinomial logistic regression, full batch, L-BFGS from zero weights (convex: deterministic)."""
    head = nn.Linear(f_train.shape[1], num_classes).to(f_train.device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=lr, max_iter=iters, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(f_train), y_train) + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return head


def _choose_weight_decay(f: Tensor, y: Tensor, num_classes: int, grid, iters: int, lr: float,
                         seed: int) -> tuple[float, dict]:
    """The grid value with the best accuracy on a held-out fifth of the train features (seeded, stratified):
    the regulariser is chosen on the train split only, never on the test split."""
    fit, val = (i.to(f.device) for i in _stratified_indices(y, 0.8, seed))
    f_fit, y_fit, f_val, y_val = f[fit], y[fit], f[val], y[val]
    scores = {}
    for wd in grid:
        head = _fit_probe(f_fit, y_fit, num_classes, float(wd), iters, lr)
        with torch.no_grad():
            scores[float(wd)] = (head(f_val).argmax(1) == y_val).float().mean().item()
    best = max(scores, key=lambda wd: (scores[wd], wd))  # ties: the stronger regulariser
    return best, scores


def linear_probe(model: nn.Module, train, test, mean, std, *, epochs: int = 100, lr: float = 1.0,
                 weight_decay: float | str | Sequence[float] = 1e-3, device=None, seed: int = 0) -> dict:
    """Multinomial logistic regression on the frozen penultimate features of ``model``.

    Features are standardised with the train split's statistics (so one ``weight_decay`` suits any
    backbone), then a linear classifier is fitted full-batch with L-BFGS for ``epochs`` iterations on the
    train split and scored on the test split. The problem is convex and starts from zero weights, so the
    result is deterministic. ``weight_decay`` is one L2 strength, a sequence to choose from, or ``"auto"``
    (``PROBE_WEIGHT_DECAYS``): a choice is made on a seeded fifth of the train split held out, then the probe
    is refitted on the whole train split. Labels may be any integers; they are mapped to 0..K-1 internally.
    """
    classes = _check_transfer_inputs(train, test, mean, std)
    torch.manual_seed(seed)
    device = _model_device(model, device)
    f_train = extract_features(model, train.images, mean, std, device=device).to(device)
    f_test = extract_features(model, test.images, mean, std, device=device).to(device)
    mu, sigma = f_train.mean(0), f_train.std(0).clamp_min(1e-6)
    f_train, f_test = (f_train - mu) / sigma, (f_test - mu) / sigma
    y_train, y_test = _remap(train.labels, classes).to(device), _remap(test.labels, classes).to(device)
    k = int(classes.numel())

    chosen = {}
    if isinstance(weight_decay, str):
        if weight_decay != "auto":
            raise ValueError(f"weight_decay must be a number, a sequence of numbers or 'auto', got {weight_decay!r}")
        weight_decay = PROBE_WEIGHT_DECAYS
    if not isinstance(weight_decay, (int, float)):
        grid = [float(w) for w in weight_decay]
        if not grid:
            raise ValueError("weight_decay: an empty sequence to choose from")
        weight_decay, scores = _choose_weight_decay(f_train, y_train, k, grid, epochs, lr, seed)
        chosen = {"weight_decay_grid": grid, "validation_accuracy": scores}
    head = _fit_probe(f_train, y_train, k, float(weight_decay), epochs, lr)
    with torch.no_grad():
        loss = F.cross_entropy(head(f_train), y_train).item()
        train_acc = (head(f_train).argmax(1) == y_train).float().mean().item()
        test_acc = (head(f_test).argmax(1) == y_test).float().mean().item()
    return {"train_accuracy": train_acc, "test_accuracy": test_acc, "num_features": int(f_train.shape[1]),
            "num_classes": k, "classes": classes.tolist(), "train_loss": loss,
            "weight_decay": float(weight_decay), **chosen}


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


BUILTIN_SETS = "'digits', 'digits-A-B' (e.g. digits-5-9)"
BUNDLED = r"digits(?:-(\d)-(\d))?"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def load_transfer_dataset(name: str, image_size: int | None = 16, in_chans: int = 1, *, resize: bool = False,
                          split_seed: int = 0) -> tuple[ImageSplit, ImageSplit]:
    """A downstream train/test pair, from a bundled name, an ``.npz`` file or an ImageFolder directory.

    - ``"digits"`` (all ten) or ``"digits-A-B"`` (classes A..B only): the bundled digits, no download;
      restricting them to classes the student was not distilled on (5-9 for a student of 0-4) gives a
      download-free transfer check. Grey images are repeated to ``in_chans`` channels.
    - an ``.npz`` with ``images`` (uint8 0..255 or float 0..1; ``[N, H, W, C]``, ``[N, C, H, W]`` or grey
      ``[N, H, W]``) and ``labels`` ``[N]`` integers, or with ``train_images``/``train_labels`` and
      ``test_images``/``test_labels``;
    - a directory in torchvision's ImageFolder layout (one sub-folder of images per class), or one holding
      ``train/`` and ``test/`` (or ``val/``) folders of that layout.

    A set given as one pool is split 50/50 per class with ``split_seed`` (``split_stratified``), the protocol
    of the transfer benchmark. Images must have the shape the student takes, ``(in_chans, image_size,
    image_size)`` (``image_size=None``: any square size); ``resize=True`` resizes them bilinearly instead of
    refusing. Every problem (a missing path, unknown keys, fewer than two classes, another shape) is an error
    that names it, raised before any model runs.
    """
    path = Path(name).expanduser()
    if is_bundled(name):
        return _bundled_digits(name, re.fullmatch(BUNDLED, name), image_size or 16, in_chans)
    if not path.exists():
        raise FileNotFoundError(f"transfer dataset {name!r}: no such file or directory. Give {BUILTIN_SETS}, an "
                                f".npz of images and labels, or an ImageFolder directory")
    if path.is_dir():
        splits = _image_folder_splits(path, in_chans, image_size if resize else None)
    elif path.suffix == ".npz":
        splits = _npz_splits(path)
    else:
        raise ValueError(f"transfer dataset {str(path)!r}: not an .npz file or a directory")
    if splits[1] is None:
        splits = split_stratified(splits[0], 0.5, split_seed)
    return tuple(_fit_shape(s, image_size, in_chans, resize, f"{path} ({part})")
                 for s, part in zip(splits, ("train", "test")))


def is_bundled(name: str) -> bool:
    """Whether ``name`` is a bundled set (``digits``, ``digits-A-B``) rather than a file or directory of that name."""
    return re.fullmatch(BUNDLED, name) is not None and not Path(name).expanduser().exists()


def _bundled_digits(name: str, match, image_size: int, in_chans: int) -> tuple[ImageSplit, ImageSplit]:
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


def _as_images(array, where: str) -> Tensor:
    """``[N, C, H, W]`` float in [0, 1] from an array in any of the layouts ``load_transfer_dataset`` takes."""
    x = torch.as_tensor(array)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"{where}: images must be [N, H, W, C], [N, C, H, W] or [N, H, W], got {tuple(x.shape)}")
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.permute(0, 3, 1, 2)
    if x.dtype == torch.uint8:
        return x.float().div_(255).contiguous()
    if not x.is_floating_point():
        raise ValueError(f"{where}: images must be uint8 (0..255) or float (0..1), got {x.dtype}")
    x = x.float()
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{where}: float images must lie in [0, 1], found [{x.min():.3g}, {x.max():.3g}]")
    return x.contiguous()


def _labelled(images, labels, where: str) -> ImageSplit:
    x = _as_images(images, where)
    y = torch.as_tensor(labels)
    if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
        raise ValueError(f"{where}: need one integer label per image; {x.shape[0]} images, labels of shape "
                         f"{tuple(y.shape)} ({y.dtype})")
    split = ImageSplit(x, y.long())
    classes = torch.unique(split.labels).numel()
    if classes < 2:
        raise ValueError(f"{where}: {classes} class; a transfer task needs at least 2")
    return split


def _npz_splits(path: Path) -> tuple[ImageSplit, ImageSplit | None]:
    import numpy as np

    with np.load(path, allow_pickle=False) as d:
        keys = set(d.files)
        if {"train_images", "train_labels", "test_images", "test_labels"} <= keys:
            return (_labelled(d["train_images"], d["train_labels"], f"{path} (train)"),
                    _labelled(d["test_images"], d["test_labels"], f"{path} (test)"))
        if {"images", "labels"} <= keys:
            return _labelled(d["images"], d["labels"], str(path)), None
    raise ValueError(f"{path}: needs arrays 'images' and 'labels' (or train_/test_ images and labels); it holds "
                     f"{sorted(keys)}")


def _image_folder_splits(root: Path, in_chans: int, size: int | None) -> tuple[ImageSplit, ImageSplit | None]:
    test = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test is not None:
        return _image_folder(root / "train", in_chans, size), _image_folder(test, in_chans, size)
    return _image_folder(root, in_chans, size), None


def _image_folder(root: Path, in_chans: int, size: int | None) -> ImageSplit:
    """One ImageFolder (a sub-folder per class, classes in sorted order) as tensors. Images keep their size
    (which must be one size) unless ``size`` is given, when each is resized to ``size`` x ``size``."""
    from PIL import Image

    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise ValueError(f"{root}: {len(classes)} class folder(s); an ImageFolder needs one sub-folder per class "
                         f"and a transfer task at least 2 classes")
    images, labels, first = [], [], None
    for label, cls in enumerate(classes):
        files = sorted(f for f in (root / cls).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{root / cls}: no images ({', '.join(IMAGE_SUFFIXES)})")
        for f in files:
            with Image.open(f) as im:
                im = im.convert("L" if in_chans == 1 else "RGB")
                if size is not None:
                    im = im.resize((size, size), Image.BILINEAR)
                if first is not None and im.size != first:
                    raise ValueError(f"{f}: {im.size[0]}x{im.size[1]} pixels, but earlier images are "
                                     f"{first[0]}x{first[1]}; give images of one size, or resize them (--resize)")
                first = im.size
                images.append(torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
                              .view(im.size[1], im.size[0], -1))
                labels.append(label)
    return ImageSplit(torch.stack(images).permute(0, 3, 1, 2).float().div_(255).contiguous(),
                      torch.tensor(labels, dtype=torch.int64))


def _fit_shape(split: ImageSplit, image_size: int | None, in_chans: int, resize: bool, where: str) -> ImageSplit:
    """The images in the shape the student takes: channels repeated from grey, resized when asked, else an error."""
    x = split.images
    if x.shape[1] == 1 and in_chans != 1:
        x = x.repeat(1, in_chans, 1, 1)
    if x.shape[1] != in_chans:
        raise ValueError(f"{where}: images have {x.shape[1]} channels but the student takes {in_chans}")
    want = (image_size, image_size) if image_size is not None else None
    if want is not None and tuple(x.shape[-2:]) != want:
        if not resize:
            raise ValueError(f"{where}: images are {x.shape[-2]}x{x.shape[-1]} but the student takes "
                             f"{image_size}x{image_size}; resize them (--resize) or give --image-size")
        x = F.interpolate(x, size=want, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
    return ImageSplit(x, split.labels)


def run_transfer(student: nn.Module, train: ImageSplit, test: ImageSplit, mean, std, *, probe: bool = True,
                 finetune: bool = True, probe_epochs: int = 100, probe_weight_decay="auto", epochs: int = 10,
                 lr: float = 0.01, batch_size: int = 64, flip: bool = False, device=None, seed: int = 0) -> dict:
    """Linear probe and/or fine-tuning of ``student``; a JSON-ready dict with one entry per method. The probe's
    L2 strength is chosen on the train split by default (``linear_probe(weight_decay="auto")``)."""
    results: dict = {"train_images": len(train), "test_images": len(test)}
    if probe:
        results["linear_probe"] = linear_probe(student, train, test, mean, std, epochs=probe_epochs,
                                               weight_decay=probe_weight_decay, device=device, seed=seed)
    if finetune:
        tuned = fine_tune(student, train, test, mean, std, epochs=epochs, lr=lr, batch_size=batch_size,
                          flip=flip, device=device, seed=seed)
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
