"""One process of a torchrun job that tests/test_distributed.py launches: a tiny distillation (tests.helpers'
TINY problem, every paradigm), after which every rank writes what the test compares to ``--out``.

    torchrun --nproc_per_node 2 tests/distributed/worker.py --paradigm cae --out DIR [--checkpoint DIR]
        [--kill-rank R --kill-after-epoch E]   # SIGKILL rank R once epoch E's checkpoint is written (first try)
        [--join-only [--kill-rank R]]          # join the group, all-reduce once (rank R dies first try), exit
"""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.helpers

import fastcae.distributed
import fastcae.loop
from fastcae import distill
from tests.helpers import TINY, tiny_classifier, trained_like_teacher


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--paradigm", default="cae")
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--kill-rank", type=int, default=None)
    p.add_argument("--kill-after-epoch", type=int, default=None)
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE distill options (ints, or strings)")
    p.add_argument("--join-only", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    first_try = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if args.join_only:
        world = fastcae.distributed.join("cpu")
        total = torch.ones(1)
        torch.distributed.all_reduce(total)
        if args.kill_rank == rank and first_try:
            os.kill(os.getpid(), signal.SIGKILL)
        torch.distributed.barrier()
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"joined{rank}").write_text(f"{world.size} {int(total.item())}")
        return
    if args.kill_rank == rank and first_try:
        save = fastcae.loop._save

        def save_then_die(run, directory):
            save(run, directory)
            if run.epoch == args.kill_after_epoch:
                Path(args.out).mkdir(parents=True, exist_ok=True)
                (Path(args.out) / "killed_at").write_text(repr(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)  # as a crashed or pre-empted worker would go

        fastcae.loop._save = save_then_die
    torch.manual_seed(0)
    teacher, student = trained_like_teacher(), tiny_classifier()
    options = dict(TINY, epochs=args.epochs, synth_batch_size=20, student_batch_size=16, paradigm=args.paradigm)
    options.update({k: int(v) if v.lstrip("-").isdigit() else v
                    for k, _, v in (item.partition("=") for item in args.set)})
    result = distill(teacher, student, image_shape=(1, 8, 8), mean=(0.5,), std=(0.5,), checkpoint_dir=args.checkpoint,
                     **options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels, _ = result.pool.tensors()
    torch.save({"student": result.student.state_dict(), "images": images.cpu(), "labels": labels.cpu(),
                "history": result.history, "world_size": int(os.environ.get("WORLD_SIZE", "1")),
                "compile_mode": result.compile_mode},
               out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
