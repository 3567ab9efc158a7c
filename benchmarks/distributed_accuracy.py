"""One process against several with the same global batches: the student's accuracy on the digits.

    python benchmarks/distributed_accuracy.py --processes 1 2 --seeds 0 1 2 \
        --out benchmarks/results/distributed-accuracy-cpu-DATE.json

Per (processes, seed): ``torchrun --nproc_per_node N`` of this file in worker mode distils the demo's digits
teacher (16 px, cached by the demo) into the demo's student with the ``digits`` preset shortened to a fixed
schedule (``--epochs``, ``--student-steps``; no time budget, so every run does the same work whatever N is),
and rank 0 scores the student on the digits test split. One thread per process. The JSON keeps every run;
the table printed at the end gives mean and spread per N.
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


def worker(args) -> None:
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
    options = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.set)}
    t0 = time.perf_counter()
    result = distill(teacher, student, DIGIT_NAMES, image_shape=(1, 16, 16), mean=mean, std=std, preset="digits",
                     seed=args.seed, epochs=args.epochs, student_steps=args.student_steps, progress=False,
                     device="cpu", **options)
    seconds = time.perf_counter() - t0
    if world.main:
        Path(args.out).write_text(json.dumps({
            "processes": world.size, "seed": args.seed, "options": options, "seconds": seconds,
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
    p.add_argument("--out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    from fastcae.utils import versions

    runs = []
    for n in args.processes:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "run.json"
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
                       __file__, "--worker", "--seed", str(seed), "--epochs", str(args.epochs),
                       "--student-steps", str(args.student_steps), "--out", str(out)]
                cmd += [x for item in args.set for x in ("--set", item)]
                done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
                if done.returncode != 0:
                    sys.exit(done.stderr[-3000:])
                runs.append(json.loads(out.read_text()))
            r = runs[-1]
            print(f"{n} process(es), seed {seed}: student {100 * r['accuracy']:.1f}% (teacher "
                  f"{100 * r['teacher']:.1f}%) in {r['seconds']:.0f} s", flush=True)
    print("\n| processes | student accuracy (mean ± sd over seeds) | seconds |\n|---|---|---|")
    for n in args.processes:
        acc = [100 * r["accuracy"] for r in runs if r["processes"] == n]
        sec = [r["seconds"] for r in runs if r["processes"] == n]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        print(f"| {n} | {statistics.mean(acc):.1f} ± {sd:.1f} | {statistics.mean(sec):.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "threads_per_process": 1},
                                              "versions": versions(), "epochs": args.epochs,
                                              "student_steps": args.student_steps, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
