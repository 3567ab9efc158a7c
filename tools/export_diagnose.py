"""Where a CUDA AOTInductor export stops: each case in a child process of its own (a segfault or a hang ends
the child, not this script), with Python stacks dumped before its time limit and a line per stage reached.

    python tools/export_diagnose.py OUT.jsonl [--device cuda] [--timeout 150] [--cases tiny student ...]

Cases, from least to most of what ``fastcae.apps.export`` does:
  tiny             a conv + linear model, static batch, compiled and loaded by AOTInductor directly
  student          the digits student (random weights), static batch, the same direct calls
  student-dynamic  the digits student through ``fastcae.apps.export.export_student`` (dynamic batch, metadata, check)
  student-serial   as student-dynamic with inductor's compile workers off (TORCHINDUCTOR_COMPILE_THREADS=1)
  package          the digits student as ``fastcae.apps.export`` packages it (dynamic batch, the runner's metadata),
                   compiled and written to --package, not loaded: for the native runner or the "load" case
  load             --package loaded by ``aoti_load_package`` in a fresh process (not the one that compiled it)
The cases run at the same time (one process each). One JSON line per case: the stages it passed, its exit
code (negative: the signal that killed it), seconds, and the last lines of its output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("tiny", "student", "student-dynamic", "student-serial", "package", "load")


def child(case: str, device: str, timeout: float, package: str | None) -> None:
    import faulthandler

    faulthandler.enable()
    faulthandler.dump_traceback_later(max(timeout - 15, 5), exit=False)  # stacks of a hang, before the kill
    start = time.perf_counter()

    def stage(name: str) -> None:
        print(f"STAGE {name} {time.perf_counter() - start:.1f}", flush=True)

    import torch
    from torch import nn

    from fastcae.models import create_model

    stage("imported")
    out = Path(package) if package and case in ("package", "load") else \
        Path(tempfile.mkdtemp(prefix=f"export-{case}-")) / "model.pt2"
    if case == "load":
        from torch._inductor import aoti_load_package

        runner = aoti_load_package(str(out))
        stage("loaded")
        with torch.no_grad():
            y = runner(torch.rand(3, 1, 16, 16, device=device))
        stage(f"ran shape={tuple(y.shape)}")
        faulthandler.cancel_dump_traceback_later()
        return
    if case == "tiny":
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    else:
        model = create_model("digits_student", num_classes=10, in_chans=1)
    model = model.to(device).eval()
    x = torch.rand(4, 1, 16, 16, device=device)
    if case in ("tiny", "student"):
        from torch._inductor import aoti_compile_and_package, aoti_load_package

        with torch.no_grad():
            program = torch.export.export(model, (x,))
        stage("exported")
        aoti_compile_and_package(program, package_path=str(out))
        stage("compiled")
        runner = aoti_load_package(str(out))
        stage("loaded")
        with torch.no_grad():
            diff = float((runner(x) - model(x)).abs().max())
        stage(f"ran max_abs_diff={diff:.2e}")
    elif case == "package":
        from fastcae.apps.export import MAX_BATCH, NormalizedStudent, StudentCard, compile_pt2

        card = StudentCard(model="digits_student", num_classes=10, image_shape=(1, 16, 16), mean=(0.5,), std=(0.5,))
        wrapped = NormalizedStudent(model, card.mean, card.std).to(device).eval()
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        with torch.no_grad():
            program = torch.export.export(wrapped, (x,), dynamic_shapes=({0: batch},))
        stage("exported")
        out.parent.mkdir(parents=True, exist_ok=True)
        compile_pt2(program, card, str(out))
        stage(f"compiled {out}")
    else:
        from fastcae.apps.export import StudentCard, export_student

        card = StudentCard(model="digits_student", num_classes=10, image_shape=(1, 16, 16), mean=(0.5,), std=(0.5,))
        report = export_student(model.cpu(), card, out, device=device)
        stage(f"ran max_abs_diff={report.max_abs_diff:.2e} seconds={report.seconds:.1f}")
    faulthandler.cancel_dump_traceback_later()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--device", default="cuda")
    p.add_argument("--timeout", type=float, default=150.0)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--package", default=None, help="package and load: the .pt2 file")
    p.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.device, args.timeout, args.package)
        return 0
    procs = {}
    for case in args.cases:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if case == "student-serial":
            env["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
        log = tempfile.TemporaryFile(mode="w+")
        procs[case] = (subprocess.Popen([sys.executable, __file__, str(args.out), "--device", args.device,
                                         "--timeout", str(args.timeout), "--child", case]
                                        + (["--package", args.package] if args.package else []),
                                        stdout=log, stderr=subprocess.STDOUT, env=env), log, time.perf_counter())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for case, (proc, log, start) in procs.items():
        try:
            rc = proc.wait(timeout=max(args.timeout - (time.perf_counter() - start), 1))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "timeout"
            proc.wait()
        log.seek(0)
        text = log.read()
        stages = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("STAGE ")]
        record = {"part": "export", "case": case, "device": args.device, "rc": rc, "stages": stages,
                  "seconds": round(time.perf_counter() - start, 1), "tail": text.strip().splitlines()[-40:]}
        with args.out.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{case}: rc={rc} stages={stages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
