"""The embedded transfer task: does a data-free student's representation carry over to unseen classes?

A teacher learns digits 0-4 only. Students are distilled from it without data (CNCL on and off, and the
``nayer`` and ``fast`` paradigms), at the same schedule. Each student's frozen features are then probed with
a linear classifier on digits 5-9, classes neither model ever saw. Context rows: a randomly initialised
student (what the architecture gives for free) and the teacher's own features.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from ..api import distill
from ..datasets import DIGIT_NAMES
from ..evaluate import accuracy
from ..models import create_model
from ..utils import versions
from .data import ImageSplit, load_digits
from .teacher import train_classifier
from .transfer import linear_probe

SOURCE, TARGET = range(5), range(5, 10)
VARIANTS = {
    "cae + CNCL": dict(paradigm="cae"),
    "cae, KD only": dict(paradigm="cae", cncl_weight=0.0),
    "nayer + CNCL": dict(paradigm="nayer"),
    "fast + CNCL": dict(paradigm="fast"),
}


def few_shot(split: ImageSplit, shots: int, seed: int = 0) -> ImageSplit:
    """``shots`` labelled images per class (a fixed random choice): a probe that separates representations
    better than the full split, on which even random features do well."""
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in split.labels.unique().tolist():
        idx = (split.labels == c).nonzero().flatten()
        keep.append(idx[torch.randperm(idx.numel(), generator=g)[:shots]])
    keep = torch.cat(keep)
    return ImageSplit(split.images[keep], split.labels[keep])


def run_transfer_demo(seeds=(0, 1, 2), epochs: int = 12, image_size: int = 16, out_dir=None, device="cpu",
                      progress: bool = False, variants=None, teacher_epochs: int = 30,
                      probe_shots: int | None = None) -> dict:
    """Run every variant for every seed at the same schedule; returns (and writes) per-row accuracy lists.

    ``probe_shots``: fit the probe on that many labelled images per class of digits 5-9 (None: all).
    """
    train, test = load_digits(image_size=image_size)
    mean, std = train.channel_stats()
    src_train, src_test = train.subset(SOURCE), test.subset(SOURCE)
    tgt_train, tgt_test = train.subset(TARGET), test.subset(TARGET)
    if probe_shots is not None:
        tgt_train = few_shot(tgt_train, probe_shots)
    shape = tuple(train.images.shape[1:])

    torch.manual_seed(0)  # the teacher's initial weights (torch seeds itself at random at start-up)
    teacher = create_model("digits_teacher", num_classes=5, in_chans=1)
    train_classifier(teacher, src_train, mean, std, epochs=teacher_epochs, lr=0.05, batch_size=64, device=device,
                     seed=0, progress=progress)
    rows = {"teacher (trained on 0-4)": {
        "source_accuracy": [accuracy(teacher, src_test.images, src_test.labels, mean, std)],
        "probe_accuracy": [linear_probe(teacher, tgt_train, tgt_test, mean, std)["test_accuracy"]],
        "seconds": [0.0]}}
    probe_random = []
    for seed in seeds:
        torch.manual_seed(seed)
        probe_random.append(linear_probe(create_model("digits_student", num_classes=5, in_chans=1), tgt_train,
                                         tgt_test, mean, std)["test_accuracy"])
    rows["random-init student"] = {"source_accuracy": [0.2], "probe_accuracy": probe_random, "seconds": [0.0]}

    for name, options in (variants or VARIANTS).items():
        row = {"source_accuracy": [], "probe_accuracy": [], "seconds": []}
        for seed in seeds:
            torch.manual_seed(seed)
            student = create_model("digits_student", num_classes=5, in_chans=1)
            t0 = time.perf_counter()
            result = distill(copy.deepcopy(teacher), student, DIGIT_NAMES[:5], image_shape=shape, mean=mean, std=std,
                             preset="digits", epochs=epochs, seed=seed, device=device, progress=progress, **options)
            row["seconds"].append(time.perf_counter() - t0)
            row["source_accuracy"].append(accuracy(result.student, src_test.images, src_test.labels, mean, std))
            row["probe_accuracy"].append(linear_probe(result.student, tgt_train, tgt_test, mean, std)["test_accuracy"])
        rows[name] = row

    summary = {"rows": rows, "seeds": list(seeds), "epochs": epochs, "image_size": image_size,
               "probe_shots": probe_shots,
               "versions": versions(),
               "threads": torch.get_num_threads()}
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "transfer_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _mean_std(values) -> str:
    t = torch.tensor(values, dtype=torch.float64) * 100
    return f"{t.mean():.1f} ± {t.std():.1f}" if len(values) > 1 else f"{t.mean():.1f}"


def format_transfer_table(summary: dict) -> str:
    lines = [f"{'':<26} {'digits 0-4 (source)':>20} {'probe on 5-9':>14} {'distill s':>10}", "-" * 74]
    for name, row in summary["rows"].items():
        lines.append(f"{name:<26} {_mean_std(row['source_accuracy']):>20} {_mean_std(row['probe_accuracy']):>14} "
                     f"{sum(row['seconds']) / len(row['seconds']):>10.0f}")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m fastcae.apps.demo_transfer [shots]  (about 6 minutes on 2 CPU cores)
    import sys

    shots = int(sys.argv[1]) if len(sys.argv) > 1 else None
    summary = run_transfer_demo(out_dir="fastcae-transfer", probe_shots=shots)
    print(format_transfer_table(summary))
