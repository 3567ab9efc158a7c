"""The prior design's synthetic image store, re-implemented as the baseline of ``test_bench_pool.py``.

NAYER and Fast-DFKD write every kept synthetic image as a PNG file into a directory and, each epoch, build a
dataset over the whole directory and a ``DataLoader`` that decodes every file with PIL and augments it one
image at a time with torchvision transforms on the host. fastcae replaced this with an in-memory tensor pool
(``fastcae.pool.SyntheticPool``) augmented in batches on the device (``fastcae.augment.Augment``); this module
exists only so the benchmarks can measure "in-memory pool vs PNG directory". It is not part of the library.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class _PNGDataset(Dataset):
    """Every ``root/<label>/<index>.png``; each item is opened and decoded on access (no caching)."""

    def __init__(self, files, mode, transform):
        self.files, self.mode, self.transform = files, mode, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        path = self.files[i]
        with Image.open(path) as img:
            x = self.transform(img.convert(self.mode))
        return x, int(path.parent.name)


class PNGPool:
    """Synthetic images as PNG files in a directory, re-decoded every epoch (NAYER / Fast-DFKD's design)."""

    def __init__(self, root, image_shape):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.image_shape = tuple(image_shape)
        if self.image_shape[0] not in (1, 3):
            raise ValueError(f"PNG images have 1 or 3 channels, got image shape {self.image_shape}")
        self._mode = "L" if self.image_shape[0] == 1 else "RGB"
        self._next = len(self._files())  # running index, continued over files already in root

    def _files(self):
        return sorted(self.root.glob("*/*.png"), key=lambda p: int(p.stem))

    def __len__(self) -> int:
        return len(self._files())

    @torch.no_grad()
    def push(self, images, labels) -> None:
        """Write one PNG per image (uint8, ``round(x * 255)``) as ``root/<label>/<running index>.png``."""
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"pool holds images of shape {self.image_shape}, got {tuple(images.shape[1:])}")
        arrays = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for array, label in zip(arrays, labels.tolist(), strict=True):
            folder = self.root / str(label)
            folder.mkdir(exist_ok=True)
            pixels = array[:, :, 0] if self._mode == "L" else array
            img = Image.fromarray(np.ascontiguousarray(pixels))  # uint8 HxW -> "L", HxWx3 -> "RGB"
            img.save(folder / f"{self._next}.png")
            self._next += 1

    def loader(self, batch_size, mean, std, padding, flip=True, num_workers=0, shuffle=True, drop_last=True):
        """A ``DataLoader`` over every PNG now in root, decoded and transformed per image on the host.

        Yields ``(x float [B, C, H, W] normalised, on the CPU; labels int64 [B])``. Like the prior code, the
        directory is listed when the loader is built (once per epoch there).
        """
        _, h, w = self.image_shape
        steps = [transforms.RandomCrop((h, w), padding=padding)] if padding > 0 else []
        if flip:
            steps.append(transforms.RandomHorizontalFlip())
        steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
        dataset = _PNGDataset(self._files(), self._mode, transforms.Compose(steps))
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                          num_workers=num_workers, pin_memory=torch.cuda.is_available())


def prior_epoch(run, png: PNGPool, synth_batches: int, student_steps: int, num_workers: int = 0) -> int:
    """One post-warm-up epoch the prior way, on a ``fastcae.loop.DistillRun``'s models: eager reference ops
    (call it inside ``fastcae.ops.backend("reference")`` with an uncompiled run), kept images written to
    ``png``, a DataLoader rebuilt over the directory, and the loss read back every student step (a host
    sync: the prior loops log ``loss.item()`` per step). Same paradigm, losses and optimisers as fastcae's
    loop, so the difference measured is the engineering. Returns the student images consumed."""
    from fastcae.losses import logit_loss

    cfg = run.cfg
    run._set_student_trainable(False)
    for _ in range(synth_batches):
        batch = run.synth.synthesize(cfg.adv_weight)
        png.push(batch.images, batch.labels)
    run._set_student_trainable(True)
    device = run.device
    loader = png.loader(cfg.student_batch_size, run.mean, run.std, run.augment.padding, flip=cfg.flip,
                        num_workers=num_workers)
    done = 0
    while done < student_steps:
        for x, _ in loader:
            x = x.to(device, non_blocking=True)
            with torch.no_grad():
                t_logits = run.teacher(x)
            s_logits = run.student(x)
            loss = logit_loss(t_logits, s_logits, t_logits.argmax(1), temperature=cfg.temperature, kd_weight=1.0,
                              adv_weight=0.0, ce_weight=0.0)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            loss.item()  # the per-step host sync
            done += 1
            if done == student_steps:
                break
    return done * cfg.student_batch_size
