"""Is it the synthetic images or the student's training that limits a case? One run, then fresh students.

    python -m benchmarks.fidelity.pool_study --case mbv3-grey32 --budget 240 --seed 0 --cutmix --grey
    python -m benchmarks.fidelity.pool_study --case vgg-grey32 --budget 60 --step-factors 1 3 --cutmix

Distils the case as the suite does (only the budget), then trains fresh students of the same architecture
and initial weights, offline, with plain KD from the teacher (the run's temperature, student batch and
learning rate, a cosine over the run's number of student steps or a multiple (``--step-factors``), random
crops; no CNCL) on:
- ``pool``: the run's synthetic images;
- ``real``: the case's real training split, which the library never sees. A student that reaches the
  teacher from the real images but not from the pool says the images are the limit, not the student's steps;
- ``pool-grey`` (``--grey``, 3-channel images only): the pool with every image turned grey (mean of its channels), for
  teachers that only ever saw grey images copied to three channels.
``--cutmix`` adds the pool with CutMix (``fastcae.augment.cutmix``: a box from another image pasted into each
image; the teacher labels the result). The studies of 2026-12-04 used one box per batch instead. ``--mix``
adds other mixes (MixUp: each image blended with another at a uniform weight; ``both``: CutMix or MixUp per
batch), and ``--no-real`` skips the student on the real images. Each offline row names its ``mix`` (None for
none; the files written before these options name CutMix as ``cutmix``: true/false or the mix's name).
``--after-warmup`` adds ``pool-after-warmup`` (the pool without the warm-up's images) and ``--variant k=v,..``
the whole pool learnt with those student-side fields changed (e.g. ``lr_s=0.1``, ``temperature=4``); both
with the ``--mix`` mixes only. A variant is compared on one and the same pool, free of the run-to-run spread.
It reports per-class test accuracy, the teacher's agreement with the requested class and its confidence on
the pool, and draws the pool (one row per class, columns spread from the first synthesis batch to the last)
beside the JSON, because the picture shows drift (colours the teacher never saw, shapes that are not digits)
that the numbers only hint at. Not part of CI; a study takes the budget, then about the run's student time
for each offline student.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fastcae.augment import Augment, cutmix
from fastcae.evaluate import accuracy
from fastcae.steps import make_augment

from .cases import CASES
from .run import CaseRun, distil_case, machine, parse_options


def per_class(model, images, labels, normalize, classes: int) -> list[float]:
    with torch.no_grad():
        pred = model(normalize(images)).argmax(1)
    return [round(float((pred[labels == c] == c).float().mean()), 3) for c in range(classes)]


def mixup(x: torch.Tensor) -> torch.Tensor:
    """Each image blended with its neighbour in the batch, at its own weight drawn uniformly (the teacher labels
    the blend, so no mixed label is needed)."""
    lam = torch.rand(x.shape[0], 1, 1, 1, device=x.device)
    return lam * x + (1 - lam) * x.roll(1, 0)


def offline_student(run: CaseRun, images: torch.Tensor, steps: int, seed: int, mix: str | None = None,
                    variant: dict | None = None) -> tuple[torch.nn.Module, float]:
    """A fresh student (same initial weights as the run's) trained by KD on ``images`` for ``steps`` steps
    (``mix``: "cutmix" for CutMix on every batch, "mixup" for MixUp, "both" for one of the two per batch, at
    random; ``variant``: config fields that differ from the run's, e.g. temperature or lr_s); returns it and
    its last KD loss."""
    cfg = run.result.config.replace(**(variant or {}))
    flip = next((h["flip"] for h in run.result.history if "flip" in h), cfg.flip)  # as the run decided it
    augment = make_augment(cfg.replace(flip=flip), run.mean, run.std, tuple(images.shape[1:]), images.device)
    torch.manual_seed(seed)
    student = run.case.make_student().train()
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr_s, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(seed)
    t, loss = cfg.temperature, torch.zeros(())
    for i in range(steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr_min + (cfg.lr_s - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * i / steps))
        x = images[torch.randint(0, len(images), (cfg.student_batch_size,), generator=g)]
        kind = mix
        if kind == "both":
            kind = "cutmix" if torch.rand((), generator=g) < 0.5 else "mixup"
        if kind == "cutmix":  # the library's CutMix on every image (the labels, for CNCL, are not used here)
            x, _ = cutmix(x, torch.zeros(len(x), dtype=torch.long), 1.0)
        elif kind == "mixup":
            x = mixup(x)
        x = augment(x)
        with torch.no_grad():
            target = F.softmax(run.teacher(x) / t, dim=1)
        loss = F.kl_div(F.log_softmax(student(x) / t, dim=1), target, reduction="batchmean") * t * t
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return student.eval(), float(loss.detach())


def save_pool_picture(images: torch.Tensor, labels: torch.Tensor, class_names, path: Path, columns: int = 12):
    """One row per class, ``columns`` images spread evenly from the oldest kept image to the newest."""
    from torchvision.utils import save_image

    rows = []
    for c in range(len(class_names)):
        idx = (labels == c).nonzero().flatten()
        if len(idx) == 0:
            rows.append(torch.zeros(columns, *images.shape[1:]))
            continue
        rows.append(images[idx[torch.linspace(0, len(idx) - 1, columns).round().long()]])
    grid = torch.cat(rows)
    grid = grid.expand(-1, 3, -1, -1) if grid.shape[1] == 1 else grid
    scale = max(1, 64 // images.shape[-1])
    save_image(F.interpolate(grid, scale_factor=scale, mode="nearest"), str(path), nrow=columns, pad_value=0.5)


def study(case_name: str, budget: float, seed: int, options: dict, out: Path, factors=(1.0,),
          mixes: tuple = (), grey: bool = False, real: bool = True, after_warmup: bool = False,
          variants: tuple = ()) -> dict:
    """``mixes``: the pool is also learnt from with each of these ("cutmix", "mixup", "both").
    ``variants``: dicts of student-side config fields; the whole pool is also learnt from with each (with each
    mix, if any), so a knob is compared on one and the same pool, free of the run-to-run spread.
    ``after_warmup``: also from the pool without the warm-up's images (a pool that never evicts holds its
    images in the order they were made)."""
    case = CASES[case_name]
    run = distil_case(case, budget, seed, options=options)
    result, test, classes = run.result, run.test, case.num_classes
    normalize = Augment(run.mean, run.std, padding=0, flip=False).normalize
    images, labels, _ = result.pool.tensors()
    steps = sum(h.get("student_steps", 0) for h in result.history)
    with torch.no_grad():
        t_pool, t_test = run.teacher(normalize(images)), run.teacher(normalize(test.images))
    doc = {
        "machine": machine(), "case": case.name, "budget": budget, "seed": seed, "options": options,
        "distill_seconds": run.seconds, "student_steps": steps, "pool_images": len(images), "plan": result.plan,
        "teacher": accuracy(run.teacher, test.images, test.labels, run.mean, run.std),
        "teacher_per_class": per_class(run.teacher, test.images, test.labels, normalize, classes),
        "teacher_confidence_test": float(t_test.softmax(1).max(1).values.mean()),
        "teacher_confidence_pool": float(t_pool.softmax(1).max(1).values.mean()),
        "pool_agreement_per_class": [round(float((t_pool.argmax(1)[labels == c] == c).float().mean()), 3)
                                     for c in range(classes)],
        "run": {"student": accuracy(result.student, test.images, test.labels, run.mean, run.std),
                "per_class": per_class(result.student, test.images, test.labels, normalize, classes)},
    }
    sources = {"pool": images, **({"real": run.train.images} if real else {})}
    if after_warmup:
        # the count at the last warm-up epoch (exact even where the budget cut a synthesis phase short)
        warm = max((h["images_synthesized"] for h in result.history if h.get("phase") == "warmup"), default=0)
        if result.pool.pushed > result.pool.capacity:
            raise SystemExit("--after-warmup needs a pool that kept every image (this run's evicted some)")
        sources["pool-after-warmup"] = images[warm:]
    if grey:
        sources["pool-grey"] = images.mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    # the whole pool without and with each mix; a part of the pool, or a variant, with the mixes only (or none)
    def mixes_for(name: str) -> tuple:
        return (None, *mixes) if name == "pool" else (mixes or (None,)) if name.startswith("pool") else (None,)

    trials = [(name, x, mix, {}) for name, x in sources.items() for mix in mixes_for(name)]
    trials += [("pool", images, mix, v) for v in variants for mix in (mixes or (None,))]
    doc["offline"] = []
    for factor in factors:
        n = max(round(steps * factor), 1)
        for name, x, mix, variant in trials:
            start = time.perf_counter()
            student, loss = offline_student(run, x, n, seed, mix, variant)
            row = {"images_from": name, "mix": mix, "variant": variant, "steps": n, "images": len(x),
                   "student": accuracy(student, test.images, test.labels, run.mean, run.std), "kd_loss": loss,
                   "per_class": per_class(student, test.images, test.labels, normalize, classes),
                   "seconds": time.perf_counter() - start}
            doc["offline"].append(row)
            print(f"{case.name} seed {seed}: offline student on {name}{f' + {mix}' if mix else ''}"
                  f"{''.join(f' {k}={v}' for k, v in variant.items())} "
                  f"({len(x)} images, {n} steps): {100 * row['student']:.1f}%", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str))
    save_pool_picture(images, labels, case.data.class_names, out.with_suffix(".png"))
    return doc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", required=True, choices=list(CASES))
    p.add_argument("--budget", type=float, default=240.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a distill option (probes)")
    p.add_argument("--step-factors", nargs="*", type=float, default=[1.0],
                   help="offline students train for these multiples of the run's student steps")
    p.add_argument("--cutmix", action="store_true", help="also train on the pool with CutMix (= --mix cutmix)")
    p.add_argument("--mix", nargs="*", default=[], choices=["cutmix", "mixup", "both"],
                   help="also train on the pool with these image mixes (both: CutMix or MixUp, per batch)")
    p.add_argument("--no-real", action="store_true", help="skip the offline student on the real images")
    p.add_argument("--grey", action="store_true", help="also train on the pool turned grey (3-channel images)")
    p.add_argument("--after-warmup", action="store_true",
                   help="also train on the pool without the images the warm-up made")
    p.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="also train on the pool with these student-side fields changed (repeatable)")
    p.add_argument("--out", default=None, help="JSON path (the picture goes beside it, .png)")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    options = parse_options(args.set)
    out = Path(args.out or f"benchmarks/results/pool-study-{args.case}-{args.budget:.0f}s-seed{args.seed}-"
                           f"{datetime.date.today().isoformat()}.json")
    if args.grey and CASES[args.case].channels != 3:
        p.error("--grey needs a case with 3-channel images")
    mixes = tuple(dict.fromkeys((["cutmix"] if args.cutmix else []) + args.mix))  # in order, once each
    doc = study(args.case, args.budget, args.seed, options, out, args.step_factors, mixes, args.grey,
                not args.no_real, args.after_warmup, tuple(parse_options(v.split(",")) for v in args.variant))
    print(f"run's student {100 * doc['run']['student']:.1f}%, teacher {100 * doc['teacher']:.1f}%; written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
