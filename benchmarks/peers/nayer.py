"""NAYER's official code on fastcae's teacher, student, machine and wall budget: accuracy against seconds.

    python -m benchmarks.peers.nayer --budget 600 --seed 0 [--nayer-dir /tmp/fastcae-peers/nayer]

What it does, in order:

1. Checks NAYER out (github tmtuan1307/NAYER, pinned at ``PINNED_COMMIT``) into ``--nayer-dir``, outside this
   repository, from ``--nayer-source`` (the local mirror where there is one, else GitHub), and refuses to run
   unless the checkout's tracked files are exactly that commit's (modified ones are restored) and no untracked
   ``.py`` file could shadow its modules. None of NAYER's code is copied into this repository.
2. Installs what NAYER imports and fastcae's venv lacks (``DEPS``, pinned) into ``--deps-dir``, a side directory
   on the shim's ``sys.path`` (never into the venv), once.
3. Measures NAYER's costs on this machine by running it for a few steps through the shim (``--calibrate``:
   4 warm-up and 2 adversarial generator steps, 6 KD steps at the reference batches; no evaluation), unless
   ``--costs`` gives them.
4. Fits NAYER's CIFAR-10 recipe to the budget (``schedule.fit_schedule``; ``--set`` pins a value).
5. Runs NAYER's ``datafree_kd.py`` ``main()`` through ``nayer_shim`` with that schedule and seed, under a
   hard deadline, and writes the run's record to ``--results`` (default
   ``benchmarks/results/peers-nayer-<date>.json``) after every evaluation: budget, seed, machine, versions,
   costs, schedule and NAYER's arguments, the curve ``[[training seconds, top-1], ...]``, final accuracy.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time

from .records import default_results_path, load_runs, machine_info
from .schedule import RECIPE, SCALED, Costs, fit_schedule

PINNED_COMMIT = "c6bedcd49ad7362ff3dc5697202d97e303919a05"
NAYER_URL = "https://github.com/tmtuan1307/NAYER.git"
MIRROR = "/work/.mirror/tmtuan1307+NAYER/repo"
DEFAULT_ROOT = "/tmp/fastcae-peers"
# What NAYER imports that fastcae's environment lacks (kornia: its augmentations; termcolor: its logger;
# xlsxwriter and pandas: imported by modules its package imports, unused by NAYER's method).
DEPS = ("kornia==0.9.2", "kornia-rs==0.2.0", "termcolor==3.3.0", "xlsxwriter==3.3.1", "pandas==3.1.1")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the shared data (CIFAR-10 test set, the public teacher); FASTCAE_SHARED_DATA moves it (a GPU machine gets a copy)
SHARED = os.environ.get("FASTCAE_SHARED_DATA") or os.path.join(os.path.dirname(REPO), "shared", "data")


def _git(*args: str, cwd: str | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def ensure_checkout(nayer_dir: str, source: str | None = None, commit: str = PINNED_COMMIT) -> dict:
    """NAYER at ``commit`` in ``nayer_dir``, its tracked files unmodified; returns what was checked."""
    nayer_dir = os.path.abspath(nayer_dir)
    if os.path.abspath(nayer_dir).startswith(REPO + os.sep):
        raise SystemExit(f"--nayer-dir {nayer_dir} is inside this repository: NAYER's code must stay outside it")
    source = source or (MIRROR if os.path.isdir(MIRROR) else NAYER_URL)
    if not os.path.isdir(os.path.join(nayer_dir, ".git")):
        os.makedirs(os.path.dirname(nayer_dir), exist_ok=True)
        _git("clone", "-q", "--no-checkout", source, nayer_dir)
    try:
        _git("cat-file", "-e", f"{commit}^{{commit}}", cwd=nayer_dir)
    except subprocess.CalledProcessError:
        _git("fetch", "-q", "origin", cwd=nayer_dir)
    restored = False
    head = _git("rev-parse", "HEAD", cwd=nayer_dir) if _has_head(nayer_dir) else ""
    if head != commit:
        _git("-c", "advice.detachedHead=false", "checkout", "-q", "-f", commit, cwd=nayer_dir)
    if _git("status", "--porcelain", "--untracked-files=no", cwd=nayer_dir):
        _git("-c", "advice.detachedHead=false", "checkout", "-q", "-f", commit, cwd=nayer_dir)
        restored = True
    head = _git("rev-parse", "HEAD", cwd=nayer_dir)
    dirty = _git("status", "--porcelain", "--untracked-files=no", cwd=nayer_dir)
    stray = _git("ls-files", "--others", "--exclude-standard", "--", "*.py", cwd=nayer_dir)
    if head != commit or dirty or stray:
        raise SystemExit(f"NAYER checkout {nayer_dir} is not clean at {commit}: HEAD {head}, "
                         f"modified {dirty!r}, untracked .py {stray!r}")
    return {"repo": NAYER_URL, "commit": head, "dir": nayer_dir, "source": source, "clean": True,
            "restored": restored}


def _has_head(d: str) -> bool:
    try:
        _git("rev-parse", "--verify", "-q", "HEAD", cwd=d)
        return True
    except subprocess.CalledProcessError:
        return False


def ensure_deps(deps_dir: str) -> dict:
    """``DEPS`` installed (no dependencies pulled: torch and numpy are the venv's) into ``deps_dir``, once."""
    marker = os.path.join(deps_dir, ".fastcae-peers-deps")
    want = "\n".join(DEPS) + "\n"
    if not (os.path.exists(marker) and open(marker).read() == want):
        # FASTCAE_PEERS_WHEELS: a folder of wheels to install from, offline (a GPU machine has no network)
        wheels = os.environ.get("FASTCAE_PEERS_WHEELS")
        offline = ["--no-index", "--find-links", wheels] if wheels else []
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        "--upgrade", *offline, "--target", deps_dir, *DEPS], check=True)
        with open(marker, "w") as f:
            f.write(want)
    found = {}
    for d in glob.glob(os.path.join(deps_dir, "*.dist-info")):
        name, _, version = os.path.basename(d)[: -len(".dist-info")].partition("-")
        found[name.lower().replace("_", "-")] = version
    return found


def nayer_argv(args: dict, *, seed: int, save_dir: str, log_tag: str, gpu: int | None) -> list[str]:
    """NAYER's own command line (as its scripts write it) for the fitted schedule."""
    from .nayer_shim import CHECKPOINT_NAME, STUDENT_NAME

    argv = ["--method", "nayer", "--dataset", "cifar10", "--data_root", SHARED, "--teacher", CHECKPOINT_NAME,
            "--student", STUDENT_NAME, "--seed", str(seed), "--save_dir", save_dir.rstrip("/") + "/",
            "--log_tag", log_tag, "-j", "0"]
    if gpu is not None:
        argv += ["--gpu", str(gpu)]
    for k, v in args.items():
        argv += [f"--{k}", f"{v:g}" if isinstance(v, float) else str(v)]
    return argv


def _shim(own: list[str], nayer: list[str], timeout: float | None = None) -> int:
    cmd = [sys.executable, "-m", "benchmarks.peers.nayer_shim", *own, "--", *nayer]
    return subprocess.run(cmd, cwd=REPO, timeout=timeout).returncode


def calibrate(nayer_dir: str, deps_dir: str, work: str, *, seed: int, threads: int, synthesis_batch: int,
              batch: int, gpu: int | None, cap: float = 120.0) -> tuple[Costs, dict]:
    """Run NAYER for a few steps (2 epochs: warm-up of 2 synthesis batches of 2 steps, then 1 adversarial
    batch of 2 steps and 6 KD steps; no evaluation) and read its costs from the teacher-call time stamps."""
    tag = f"calib-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    record = os.path.join(work, tag + ".json")
    g_steps, gwp, kd = 2, 2, 6
    args = {"epochs": 2, "warmup": 1, "g_steps": g_steps, "gwp_loops": gwp, "g_loops": 1, "kd_steps": kd,
            "ep_steps": kd, "synthesis_batch_size": synthesis_batch, "batch_size": batch, "g_life": 10}
    argv = nayer_argv(args, seed=seed, save_dir=os.path.join(work, "pools"), log_tag=tag, gpu=gpu)
    t = time.perf_counter()
    try:
        rc = _shim(["--nayer-dir", nayer_dir, "--deps-dir", deps_dir, "--calibrate", "--budget", str(cap),
                    "--threads", str(threads), "--record", record, "--log", os.path.join(work, tag + ".log")],
                   argv, timeout=cap + 300)
    finally:
        shutil.rmtree(os.path.join(work, "pools", tag), ignore_errors=True)
    if rc != 0:
        raise SystemExit(f"calibration failed (exit {rc}); NAYER's output is in {os.path.join(work, tag + '.log')}")
    with open(record) as f:
        cal = json.load(f)["calibration"]
    warm, adv = cal["epochs"][0], cal["epochs"][1]
    if adv["kd_step"] is None or warm["gen_step"] is None or adv["gen_step"] is None:
        raise SystemExit(f"calibration ran out of its {cap:.0f} s before measuring every step: {cal}")
    per_batch = ((warm["synth_seconds"] - warm["g_steps"] * warm["gen_step"]) / gwp
                 + (adv["synth_seconds"] - adv["g_steps"] * adv["gen_step"])) / 2
    pool = (gwp + 1) * synthesis_batch
    passes = max(1, -(-kd * batch // pool))
    per_pass = max(0.0, adv["kd_seconds"] - adv["kd_steps"] * adv["kd_step"]) / passes
    costs = Costs(gen_warm=warm["gen_step"], gen_adv=adv["gen_step"], kd=adv["kd_step"],
                  ref_synthesis_batch=synthesis_batch, ref_batch=batch, per_synthesis_batch=max(0.0, per_batch),
                  per_pass=per_pass, setup=cal["setup"])
    cal["wall_seconds"] = round(time.perf_counter() - t, 2)
    return costs, cal


def load_costs(spec: str) -> Costs:
    """``--costs``: a JSON file or string holding a ``Costs`` dict, or a record / results file that has one."""
    data = json.load(open(spec)) if os.path.exists(spec) else json.loads(spec)
    if isinstance(data, dict) and "runs" in data:
        data = data["runs"][-1]
    if isinstance(data, dict) and "costs" in data:
        data = data["costs"]
    return Costs(**data)


def parse_pins(items: list[str]) -> dict:
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        if k not in (*SCALED, "warmup", "g_life"):
            raise SystemExit(f"--set {item}: pin one of {', '.join((*SCALED, 'warmup', 'g_life'))}")
        out[k] = int(v)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--budget", type=float, required=True, help="training seconds (evaluation excluded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nayer-dir", default=os.path.join(DEFAULT_ROOT, "nayer"))
    p.add_argument("--nayer-source", default=None, help=f"git source to clone (default: {MIRROR} if present, "
                                                         f"else {NAYER_URL})")
    p.add_argument("--deps-dir", default=os.path.join(DEFAULT_ROOT, "site"))
    p.add_argument("--work-dir", default=os.path.join(DEFAULT_ROOT, "work"), help="pools, logs, raw records")
    p.add_argument("--results", default=None, help="default: benchmarks/results/peers-nayer-<date>.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--costs", default=None, help="skip calibration: a Costs JSON (file or string), or a record / "
                                                 "results file holding one")
    p.add_argument("--calib-batches", type=int, nargs=2, default=None, metavar=("SYNTH", "KD"),
                   help="reference batch sizes of the calibration (default 40 64 on a CPU, 400 512 on a GPU)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=INT", help="pin a schedule value, e.g. "
                                                                           "synthesis_batch_size=400 batch_size=512")
    p.add_argument("--nayer-arg", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override one of NAYER's own options after the fit (e.g. lr=0.07); recorded in the run")
    p.add_argument("--lr-scaling", default="recipe", choices=("recipe", "sqrt"),
                   help="the KD lr: the recipe's 0.2 at whatever batch the fit chose, or 0.2 scaled with the square "
                        "root of batch / 512 (fastcae's own rule)")
    p.add_argument("--margin", type=float, default=0.97, help="plan to end at this fraction of the budget")
    p.add_argument("--eval-images", type=int, default=None, help="N test images only, N/10 per class (smoke tests)")
    p.add_argument("--no-check-teacher", action="store_true", help="skip the teacher's accuracy through NAYER")
    p.add_argument("--keep-pool", action="store_true", help="keep NAYER's pool of PNGs after the run")
    p.add_argument("--dry-run", action="store_true", help="calibrate and fit, print NAYER's arguments, stop")
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    gpu = 0 if torch.cuda.is_available() else None
    os.makedirs(a.work_dir, exist_ok=True)
    checkout = ensure_checkout(a.nayer_dir, a.nayer_source)
    deps = ensure_deps(a.deps_dir)
    print(f"[nayer] checkout {checkout['dir']} at {checkout['commit'][:12]} (clean"
          f"{', restored' if checkout['restored'] else ''}); deps {deps}", flush=True)

    if a.costs:
        costs, calibration = load_costs(a.costs), {"from": a.costs}
    else:
        bs, b = a.calib_batches or ((400, 512) if gpu is not None else (40, 64))
        costs, calibration = calibrate(checkout["dir"], a.deps_dir, a.work_dir, seed=a.seed, threads=a.threads,
                                       synthesis_batch=bs, batch=b, gpu=gpu)
    print(f"[nayer] costs: {json.dumps(costs.__dict__)}", flush=True)
    sched = fit_schedule(a.budget, costs, margin=a.margin, fixed=parse_pins(a.set))
    for r in sched.reasons:
        print(f"[nayer] schedule: {r}", flush=True)
    args = sched.nayer_args()
    if a.lr_scaling == "sqrt":  # the rule fastcae's planner applies to its own student batch
        args["lr"] = round(RECIPE["lr"] * math.sqrt(args["batch_size"] / RECIPE["batch_size"]), 5)
        sched.reasons.append(f"KD lr {args['lr']:g}: NAYER's 0.2 at batch 512 scaled with the square root of the "
                             f"batch ({args['batch_size']}), as fastcae's planner scales its own")
        print(f"[nayer] schedule: {sched.reasons[-1]}", flush=True)
    overrides = {}
    for item in a.nayer_arg:
        k, _, v = item.partition("=")
        overrides[k] = type(args[k])(v) if k in args else v
        print(f"[nayer] override: --{k} {v} (fitted: {args.get(k)})", flush=True)
    args.update(overrides)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_id = f"nayer-b{a.budget:g}-s{a.seed}-{stamp}"
    save_dir = os.path.join(a.work_dir, "pools")
    argv_nayer = nayer_argv(args, seed=a.seed, save_dir=save_dir, log_tag=run_id, gpu=gpu)
    print("[nayer] NAYER's arguments: " + " ".join(argv_nayer), flush=True)
    if a.dry_run:
        return 0

    from fastcae.utils import versions

    ver = versions("torchvision", "numpy")
    ver.update({k: deps.get(k) for k in ("kornia", "kornia-rs", "termcolor")})
    ver["nayer"] = checkout["commit"]
    results = os.path.abspath(a.results or default_results_path(REPO))
    base = {
        "run_id": run_id, "method": "NAYER (Tran et al., CVPR 2024), official code, unmodified",
        "date": datetime.date.today().isoformat(), "budget": a.budget, "seed": a.seed,
        "machine": machine_info(), "versions": ver, "nayer": checkout,
        "teacher": {"name": "cifar10_resnet56", "file": os.path.join(SHARED, "cifar10_resnet56.pth")},
        "student": {"name": "cifar10_resnet20", "init": "fresh (NAYER's seed)"},
        "data": {"test": os.path.join(SHARED, "cifar10_test.npz"), "train": "none (empty split; NAYER trains "
                 "on its synthetic pool only)"},
        "clock": "training seconds from NAYER's main() entry, evaluation (and the teacher check) excluded; "
                 "wall_seconds of each evaluation include the earlier evaluations",
        "costs": costs.__dict__, "calibration": calibration, "schedule": sched.to_dict(), "nayer_args": args,
        "overrides": overrides,
        "recipe": RECIPE,
    }
    base_path = os.path.join(a.work_dir, run_id + ".base.json")
    with open(base_path, "w") as f:
        json.dump(base, f, indent=1)
    own = ["--nayer-dir", checkout["dir"], "--deps-dir", a.deps_dir, "--budget", str(a.budget), "--threads",
           str(a.threads), "--record", os.path.join(a.work_dir, run_id + ".json"), "--record-base", base_path,
           "--results", results, "--log", os.path.join(a.work_dir, run_id + ".log")]
    if a.eval_images:
        own += ["--eval-images", str(a.eval_images)]
    if a.no_check_teacher:
        own.append("--no-check-teacher")
    try:
        rc = _shim(own, argv_nayer)
    finally:
        if not a.keep_pool:
            shutil.rmtree(os.path.join(save_dir, run_id), ignore_errors=True)
    run = next((r for r in load_runs(results) if r.get("run_id") == run_id), None)
    if run is not None:
        print(f"[nayer] {run['status']}: curve {[[round(s, 1), round(100 * acc, 2)] for s, acc in run['curve']]} "
              f"-> {results}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
