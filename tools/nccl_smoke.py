"""fastcae's data-parallel code on NCCL with the one GPU a machine has: the demo, run as a world of one
process whose collectives are not skipped.

    python tools/nccl_smoke.py OUT_DIR [--budget 90]

A world of one normally skips every collective (``World.distributed`` is False), and NCCL refuses two ranks
on one GPU, so a one-GPU machine cannot run ``torchrun --nproc_per_node 2`` on NCCL. This script starts an
NCCL group of size 1 itself and makes ``World.distributed`` true, so that every all-reduce, broadcast,
object collective and checkpoint gather the demo makes runs through NCCL on CUDA tensors: what breaks on NCCL
alone (a CPU tensor handed to NCCL, a collective without a current device) shows here. It says nothing about
speed across GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--budget", type=float, default=90.0,
                   help="the demo's budget; on a GPU its first epoch compiles for about 40 s, so keep it well above")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: the same on gloo (tests this)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("nccl_smoke: no CUDA device", file=sys.stderr)
        return 2
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    if args.device == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo", rank=0, world_size=1)

    from fastcae import distributed
    from fastcae.apps.cli import main as cli

    calls: dict[str, int] = {}
    for name in ("all_reduce", "broadcast", "broadcast_object_list", "scatter_object_list", "gather_object",
                 "all_gather_object", "barrier"):
        real = getattr(dist, name)

        def counted(*a, _real=real, _name=name, **k):
            calls[_name] = calls.get(_name, 0) + 1
            return _real(*a, **k)

        setattr(dist, name, counted)
    distributed.World.distributed = property(lambda self: True)  # collectives run in a world of one
    rc = cli(["demo", "--out", args.out, "--budget", str(args.budget), "--no-progress", "--device", args.device])
    steps = json.loads((Path(args.out) / "summary.json").read_text())["student_steps"] if rc == 0 else 0
    print(f"nccl_smoke: backend={dist.get_backend()} rc={rc} student_steps={steps} collectives={calls}")
    dist.destroy_process_group()
    if rc == 0 and steps == 0:  # the student's gradient all-reduce never ran: the budget went to compiling
        print("nccl_smoke: no student step ran, so the student's all-reduce is untested: give a larger --budget",
              file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
