"""The embedded demo in fp32 and in bf16, same seed: the bf16 student must land within 1 point of the fp32 one.

    python -m benchmarks.precision_demo --out benchmarks/results/precision-demo-<device>-<date>.json

Not a timed benchmark and not in CI (two demo runs: about 2 minutes in fp32 and longer in bf16 on two CPU
cores, where bf16 is emulated). The runs have no time budget, so both train the same schedule to the end
and only the precision differs. Exit status 1 if the gap is 1 point or more.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile

import torch

from fastcae.apps.demo import run_demo
from fastcae.utils import versions


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="JSON file for both runs' results")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    runs = {}
    for precision in ("fp32", "bf16"):
        with tempfile.TemporaryDirectory() as tmp:
            s = run_demo(tmp, budget_seconds=None, seed=args.seed, device=args.device, progress=False,
                         precision=precision)
        runs[precision] = {"student_accuracy": s["student_accuracy"], "teacher_accuracy": s["teacher_accuracy"],
                           "distill_seconds": s["distill_seconds"], "epochs_run": s["epochs_run"],
                           "student_steps": s["student_steps"], "precision": s["config"]["precision"]}
        print(f"{precision}: student {100 * s['student_accuracy']:.1f}% in {s['distill_seconds']:.0f} s "
              f"({s['epochs_run']} epochs)", flush=True)
    gap = 100 * abs(runs["bf16"]["student_accuracy"] - runs["fp32"]["student_accuracy"])
    record = {"machine": {"date": datetime.date.today().isoformat(), **versions(), "threads": torch.get_num_threads(),
                          "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu")},
              "seed": args.seed, "runs": runs, "gap_points": gap}
    print(f"bf16 vs fp32: {gap:.2f} points apart ({'within' if gap < 1 else 'NOT within'} 1 point)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)
    return 0 if gap < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
