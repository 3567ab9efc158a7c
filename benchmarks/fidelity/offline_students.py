"""What limits a natural-images student: its steps, its batch, or how the teacher labels its images? Fresh
students on one kept pool, each variant on the same images, free of the run-to-run spread.

    python -m benchmarks.fidelity.offline_students --budget 600 --seed 0 --save-pool pool.pt \
        --variant bs=128,lr=0.1 --variant bs=64,lr=0.05,steps=2400 --variant bs=128,lr=0.1,targets=cached,steps=2100
    python -m benchmarks.fidelity.offline_students --pool pool.pt --variant ...

Distils ``cifar10-resnet56-resnet20`` with only the budget (or reads a pool saved by an earlier call), then trains
fresh ResNet-20s (one initialisation, one sampling stream) by KD from the public ResNet-56 on the pool's images,
each with a cosine from its ``lr`` over its ``steps``, random crops and mirror flips, CutMix on every image
(``mix=0`` turns it off), in bf16 with NHWC weights as a planned CPU run trains, and scores each on CIFAR-10's
10,000 test images. ``targets=step`` (the library's student step) has the teacher label every augmented batch;
``targets=cached`` labels each pool image once and reuses those logits under every crop, flip and CutMix (mixed
by the pasted area): no teacher forward per step, about 1.75 times the steps in the same time on 2 CPU cores.
Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fastcae.augment import cutmix, random_crop, random_flip
from fastcae.evaluate import accuracy
from fastcae.utils import channel_tensor, normalize

from .natural import NATURAL_CASES
from .run import distil_case, machine

CASE = NATURAL_CASES["cifar10-resnet56-resnet20"]
DEFAULTS = dict(bs=128, lr=0.1, steps=1200, temperature=20.0, mix=1.0, targets="step")


def parse_variant(text: str) -> dict:
    v = dict(DEFAULTS)
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key not in DEFAULTS:
            raise SystemExit(f"unknown variant field {key!r}; known: {', '.join(DEFAULTS)}")
        v[key] = value if key == "targets" else type(DEFAULTS[key])(float(value))
    if v["targets"] not in ("step", "cached"):
        raise SystemExit(f"targets is 'step' or 'cached', got {v['targets']!r}")
    return v


def area_mixed(logits: torch.Tensor, box: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cached teacher logits for CutMixed images: the two images' tempered probabilities mixed by the pasted
    area, returned as logits at ``temperature``."""
    covered = box.flatten(1).float().mean(1, keepdim=True)
    p = (1 - covered) * F.softmax(logits / temperature, 1) + covered * F.softmax(logits.roll(1, 0) / temperature, 1)
    return temperature * p.clamp_min(1e-8).log()


def train(teacher, images, cached, v: dict, mean, std, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    student = CASE.make_student().train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(student.parameters(), lr=v["lr"], momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    t, n = v["temperature"], len(images)

    def net(model, x):
        with torch.autocast("cpu", torch.bfloat16):
            return model(normalize(x, mean, std).contiguous(memory_format=torch.channels_last)).float()

    for i in range(v["steps"]):
        for group in opt.param_groups:
            group["lr"] = 2e-4 + (v["lr"] - 2e-4) * 0.5 * (1 + math.cos(math.pi * i / v["steps"]))
        idx = torch.randint(0, n, (v["bs"],), generator=g)
        x = images[idx]
        if v["mix"] > 0:
            mixed, _ = cutmix(x, torch.zeros(len(x), dtype=torch.long), v["mix"])
            box = (mixed != x).any(1, keepdim=True)  # the pasted pixels (an identical pixel pasted is no matter)
            x = mixed
        x = random_flip(random_crop(x, 4))
        if v["targets"] == "step":
            with torch.no_grad():
                target = net(teacher, x)
        else:
            target = cached[idx] if v["mix"] <= 0 else area_mixed(cached[idx], box, t)
        loss = F.kl_div(F.log_softmax(net(student, x) / t, 1), F.softmax(target / t, 1), reduction="batchmean") * t * t
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return student.eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", help="a pool saved by --save-pool (skips the distillation)")
    p.add_argument("--budget", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-pool", help="where to save the run's pool (uint8 images and labels)")
    p.add_argument("--variant", action="append", default=[], metavar="K=V[,K=V]",
                   help=f"a fresh student's recipe; fields and defaults: {DEFAULTS}")
    p.add_argument("--out", required=True, help="JSON path")
    args = p.parse_args(argv)
    doc = {"machine": machine(), "case": CASE.name, "date": time.strftime("%Y-%m-%d")}
    if args.pool:
        saved = torch.load(args.pool)
        images = saved["images"].float() / 255
        doc["pool"] = {"file": args.pool, **saved.get("meta", {})}
    else:
        run = distil_case(CASE, args.budget, args.seed, options={})
        images, labels, _ = run.result.pool.tensors()
        doc["pool"] = {"budget": args.budget, "seed": args.seed, "run_student": run.result.history[-1]["accuracy"],
                       "student_steps": sum(h.get("student_steps", 0) for h in run.result.history)}
        if args.save_pool:
            torch.save({"images": (images * 255).round().to(torch.uint8), "labels": labels, "meta": doc["pool"]},
                       args.save_pool)
    teacher = CASE.make_teacher().to(memory_format=torch.channels_last)
    for param in teacher.parameters():
        param.requires_grad_(False)
    cfg = teacher.pretrained_cfg
    mean, std = channel_tensor(cfg["mean"]), channel_tensor(cfg["std"])
    test = CASE.test_split()
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        cached = torch.cat([teacher(normalize(images[i:i + 256], mean, std).contiguous(
            memory_format=torch.channels_last)).float() for i in range(0, len(images), 256)])
    doc["pool"]["images"] = len(images)
    doc["rows"] = []
    for text in args.variant or [""]:
        v = parse_variant(text)
        start = time.perf_counter()
        student = train(teacher, images, cached, v, mean, std, args.seed)
        row = {**v, "seconds": round(time.perf_counter() - start, 1),
               "student": accuracy(student, test.images, test.labels, cfg["mean"], cfg["std"])}
        doc["rows"].append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(doc, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
