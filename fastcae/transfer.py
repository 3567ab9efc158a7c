"""Transferability of a distilled student on a downstream classification set: the ``fastcae transfer`` logic.

Kept out of the CLI so the same steps (load a named downstream set, probe, fine-tune, tabulate) can be
scripted. The datasets here are the ones that need no download; anything else goes through
``fastcae.evaluate`` directly with your own ``ImageSplit``s.
"""

from __future__ import annotations

import re

from torch import nn

from .data import ImageSplit, load_digits
from .evaluate import fine_tune, linear_probe


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
