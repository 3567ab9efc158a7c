"""End to end, as a user ships a student: the demo's run -> `fastcae export --runner` (the runner checks the
package) -> the native runner, whose predictions on the digits test split must equal Python's (same top-1 on
every image, logits within 1e-4).

    python native/check_demo_student.py RUN_DIR RUNNER [--budget 30] [--device cpu|cuda]

RUN_DIR: a `fastcae demo` output (made here with a short budget if it holds no student); RUNNER: the built
`fastcae-run`. CI (`.ci/run`) calls it after `cmake --build`; it prints the export and build-free timings.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("runner")
    p.add_argument("--budget", type=float, default=30.0, help="demo budget in seconds, if the run is made here")
    p.add_argument("--device", default="cpu", help="export for and run on this device (cpu or cuda)")
    args = p.parse_args(argv)
    run = Path(args.run_dir)
    if not (run / "student.json").is_file():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fastcae", "demo", "--out", str(run), "--budget", str(args.budget),
                        "--no-progress"], check=True, stdout=subprocess.DEVNULL)
        print(f"demo run ({args.budget:g} s budget): {time.perf_counter() - t0:.0f} s")

    from fastcae.apps.data import load_digits
    from fastcae.apps.export import NormalizedStudent, export_student, read_student

    student, card = read_student(run)
    t0 = time.perf_counter()
    report = export_student(student, card, run / "student.pt2", device=args.device, runner=args.runner)
    print(f"export: {time.perf_counter() - t0:.1f} s, {report.bytes / 1e6:.1f} MB, "
          f"{report.max_abs_diff:.1e} from eager on its check batch")

    _, test = load_digits(image_size=card.image_shape[1], seed=0)
    images = test.images.float().contiguous()
    np.save(run / "digits_test.npy", images.numpy())
    out = subprocess.run([args.runner, str(run / "student.pt2"), str(run / "digits_test.npy"), "--logits",
                          str(run / "native_logits.npy")], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"the runner failed ({out.returncode}): {out.stderr.strip()}", file=sys.stderr)
        return 1
    native = torch.from_numpy(np.load(run / "native_logits.npy"))
    with torch.no_grad():  # what the package computes, in eager PyTorch: the student behind its normalisation
        python = NormalizedStudent(student, card.mean, card.std)(images)
    top1_native = [int(line.split()[1]) for line in out.stdout.split("\n") if line.strip()]
    same_top1 = top1_native == python.argmax(1).tolist() == native.argmax(1).tolist()
    diff = float((native - python).abs().max())
    accuracy = float((python.argmax(1) == test.labels).float().mean())
    print(f"native runner on {len(images)} digits test images: same top-1 as Python: {same_top1}, logits within "
          f"{diff:.1e}; student accuracy {100 * accuracy:.1f}%")
    return 0 if same_top1 and diff <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
