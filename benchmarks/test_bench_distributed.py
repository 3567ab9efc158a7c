"""Data-parallel scaling: images per second of synthesis and of student steps at 1..N processes under torchrun.

Each case launches ``torchrun --nproc_per_node N -m benchmarks.distributed_worker`` (one thread per process on
CPU; one GPU per process where a machine has several) on the benchmark scale (``scales.SCALE``: the demo's
digits shape on CPU, CIFAR-10's on a GPU) with the same *global* batches, so N processes each do 1/N of the
work. The timed value includes torchrun's start-up; ``extra_info`` holds what matters, measured inside the
processes: synthesis and student images per second, and the scaling efficiency against one process
(``images/s at N / (N x images/s at 1)``).

Run: ``pytest benchmarks/test_bench_distributed.py --benchmark-only`` (about a minute on 2 CPU cores).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.scales import DEVICE

ROOT = Path(__file__).resolve().parents[1]  # the worker runs as benchmarks.distributed_worker from here
MAX_PROCESSES = max(torch.cuda.device_count(), 1) if DEVICE == "cuda" else min(os.cpu_count() or 1, 2)
PROCESSES = [n for n in (1, 2, 4, 8) if n <= MAX_PROCESSES]
ONE: dict = {}  # the one-process result, for the efficiency of the others


@pytest.mark.parametrize("processes", PROCESSES, ids=[f"{n}proc" for n in PROCESSES])
def test_data_parallel_throughput(benchmark, processes, tmp_path):
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           "-m", "benchmarks.distributed_worker", "--out", str(out)]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)

    def launch():
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]

    benchmark.pedantic(launch, rounds=1, iterations=1)
    report = json.loads(out.read_text())
    if processes == 1:
        ONE.update(report)
    for phase in ("synthesis", "student"):
        key = f"{phase}_images_per_s"
        benchmark.extra_info[key] = round(report[key], 1)
        if ONE:
            benchmark.extra_info[f"{phase}_scaling_efficiency"] = round(report[key] / (processes * ONE[key]), 3)
    benchmark.extra_info.update(processes=processes, threads_per_process=report["threads"],
                                compile_mode=report["compile_mode"], scale=report["scale"])
