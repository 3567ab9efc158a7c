"""One process against several with the same global batches: the student's accuracy on the digits.

    python benchmarks/distributed_accuracy.py --processes 1 2 --seeds 0 1 2 \
        --out benchmarks/results/distributed-accuracy-cpu-DATE.json
    python benchmarks/distributed_accuracy.py --processes 2 --variants chosen shared-generator bn-ema-allreduce \
        sync-bn    # the data-parallel design against its alternatives

Per (processes, seed): ``torchrun --nproc_per_node N`` of this file in worker mode distils the demo's digits
teacher (16 px, cached by the demo) into the demo's student with the ``digits`` preset shortened to a fixed
schedule (``--epochs``, ``--student-steps``; no time budget, so every run does the same work whatever N is),
and rank 0 scores the student on the digits test split. One thread per process. The JSON keeps every run;
the table printed at the end gives mean and spread per N and variant.

Variants: fastcae's design is ``chosen``. Each rank has its own generator (its own weights, gradients and
noise), its own BN-statistics EMA and plain BatchNorm in the student; the student's gradients are averaged.
The alternatives, set up here by patching the library, are measured against it:
  shared-generator   one generator for all ranks: rank 0's weights at every generator's start (and after each
                     g_life renewal), and its gradients averaged over the ranks each step (each rank keeps
                     its own noise and class share)
  bn-ema-allreduce   the teacher-BN statistics' EMA (NAYER's momentum blend) averaged over the ranks after
                     each update, so every rank matches the statistics of all ranks' images
  sync-bn            the student's BatchNorm normalises with the global batch's statistics (SyncBatchNorm's
                     arithmetic, written here with an autograd all-reduce because torch's SyncBatchNorm runs
                     on GPUs only)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

VARIANTS = ("chosen", "shared-generator", "bn-ema-allreduce", "sync-bn")


class AllReducedBatchNorm2d(nn.BatchNorm2d):
    """SyncBatchNorm's arithmetic on any device: in training, the mean and variance of the global batch (an
    autograd all-reduce of per-rank sums), so the gradient flows through the other ranks' statistics too."""

    def forward(self, x):
        from torch.distributed.nn.functional import all_reduce

        if not self.training:
            return super().forward(x)
        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        n = sums[-1]
        mean = sums[:c] / n
        var = sums[c:2 * c] / n - mean * mean
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
            self.num_batches_tracked += 1
        shape = (1, c, 1, 1)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return out * self.weight.view(shape) + self.bias.view(shape)


def _sync_bn(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            new = AllReducedBatchNorm2d(child.num_features, child.eps, child.momentum)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            _sync_bn(child)
    return module


def _patch(variant: str) -> None:
    """Set up ``variant`` by patching the library in this worker (the default, ``chosen``, patches nothing)."""
    import weakref

    import torch.distributed as dist

    from fastcae import distributed
    from fastcae.bn_stats import BNStatsLoss
    from fastcae.steps import Steps

    if variant == "shared-generator":
        step, started = Steps.generator_step, weakref.WeakSet()

        def shared(self, generator, optimizer, targets, sources, adv_weight, after_backward=None):
            params = list(generator.parameters())
            if generator not in started:  # a new generator (the first, or a g_life renewal): rank 0's weights
                started.add(generator)
                self.world.share_tensors(params)

            def after():
                if after_backward is not None:
                    after_backward()
                self.world.average_gradients(params)

            return step(self, generator, optimizer, targets, sources, adv_weight, after)

        Steps.generator_step = shared
    elif variant == "bn-ema-allreduce":
        update = BNStatsLoss.update_ema

        def allreduced(self):
            update(self)
            world = distributed.current()
            if world.distributed:
                for t in self.ema_mean + self.ema_var:
                    dist.all_reduce(t)
                    t /= world.size

        BNStatsLoss.update_ema = allreduced


def worker(args) -> None:
    import warnings

    warnings.filterwarnings("ignore", message=".*all_reduce is deprecated")  # sync-bn: the autograd one
    from fastcae import distill, distributed
    from fastcae.apps.data import load_digits
    from fastcae.apps.demo import digits_teacher
    from fastcae.datasets import DIGIT_NAMES
    from fastcae.evaluate import accuracy
    from fastcae.models import create_model

    torch.set_num_threads(1)
    world = distributed.join("cpu")
    train, test = load_digits(image_size=16, seed=0)
    mean, std = train.channel_stats()
    with world.main_first():
        teacher, _ = digits_teacher(train, test, mean, std, 16, seed=0, progress=False)
    torch.manual_seed(args.seed)
    student = create_model("digits_student", num_classes=10, in_chans=1)
    _patch(args.variant)
    if args.variant == "sync-bn":
        student = _sync_bn(student)
    options = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.set)}
    t0 = time.perf_counter()
    result = distill(teacher, student, DIGIT_NAMES, image_shape=(1, 16, 16), mean=mean, std=std, preset="digits",
                     seed=args.seed, epochs=args.epochs, student_steps=args.student_steps, progress=False,
                     device="cpu", **options)
    seconds = time.perf_counter() - t0
    if world.main:
        Path(args.out).write_text(json.dumps({
            "processes": world.size, "variant": args.variant, "seed": args.seed, "options": options,
            "seconds": seconds,
            "accuracy": accuracy(result.student, test.images, test.labels, mean, std),
            "teacher": accuracy(teacher, test.images, test.labels, mean, std),
            "images_synthesized": result.history[-1]["images_synthesized"] * world.size}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--processes", nargs="*", type=int, default=[1, 2])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--student-steps", type=int, default=50)
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="a distill option for every run")
    p.add_argument("--variants", nargs="*", default=["chosen"], choices=VARIANTS,
                   help="the data-parallel design (chosen) and the alternatives to measure against it")
    p.add_argument("--out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--variant", default="chosen", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    from fastcae.utils import versions

    runs = []
    for n in args.processes:
        for variant in args.variants:
            if n == 1 and variant != "chosen":
                continue  # in one process every variant is the chosen design
            for seed in args.seeds:
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp) / "run.json"
                    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(n), __file__, "--worker", "--seed", str(seed), "--epochs", str(args.epochs),
                           "--student-steps", str(args.student_steps), "--variant", variant, "--out", str(out)]
                    cmd += [x for item in args.set for x in ("--set", item)]
                    done = subprocess.run(cmd, capture_output=True, text=True,
                                          env=dict(os.environ, OMP_NUM_THREADS="1"))
                    if done.returncode != 0:
                        sys.exit(done.stderr[-3000:])
                    runs.append(json.loads(out.read_text()))
                r = runs[-1]
                print(f"{n} process(es), {variant}, seed {seed}: student {100 * r['accuracy']:.1f}% (teacher "
                      f"{100 * r['teacher']:.1f}%) in {r['seconds']:.0f} s", flush=True)
    print("\n| processes | variant | student accuracy (mean ± sd over seeds) | seconds |\n|---|---|---|---|")
    for n in args.processes:
        for variant in args.variants:
            acc = [100 * r["accuracy"] for r in runs if r["processes"] == n and r["variant"] == variant]
            sec = [r["seconds"] for r in runs if r["processes"] == n and r["variant"] == variant]
            if acc:
                sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
                print(f"| {n} | {variant} | {statistics.mean(acc):.1f} ± {sd:.1f} | {statistics.mean(sec):.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "threads_per_process": 1},
                                              "versions": versions(), "epochs": args.epochs,
                                              "student_steps": args.student_steps, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
