"""Run NAYER's own ``datafree_kd.py`` ``main()``, unmodified and in-process, on fastcae's teacher and student.

    python -m benchmarks.peers.nayer_shim --nayer-dir DIR --budget S --record R.json [options] \\
        -- <datafree_kd.py arguments, exactly as NAYER's scripts pass them>

NAYER (github tmtuan1307/NAYER, CVPR 2024) is imported from its checkout (``DIR``, pinned and checked clean by
``benchmarks.peers.nayer``); none of its code lives in this repository. Everything below is changed from
outside, in this process only, and only where this machine or this data require it. Each patch, and why:

Environment
  1. ``sys.path``: the checkout first (NAYER imports ``registry`` and ``datafree`` as top-level modules and reads
     ``label_embedding/`` and ``checkpoints/`` relative to the working directory, so the process also
     ``chdir``s there), and a side directory with the packages NAYER imports that fastcae's environment lacks
     (kornia, termcolor, xlsxwriter, pandas; installed there by the launcher, never into the venv) appended.
  2. ``wandb``: ``datafree_kd.py`` imports it and calls ``wandb.init``/``wandb.log`` every epoch. Where it is not
     installed a stub module with no-op ``init``/``log`` is put in ``sys.modules``; where it is, ``WANDB_MODE``
     is set to ``disabled`` (no network here, and a logging service is no part of the method).
  3. ``torch.set_num_threads(--threads)`` (2 by default: fastcae's runs on this machine use the same).
  4. ``--method`` choices: NAYER's parser allows only ``nldf`` while ``main()`` runs only ``nayer`` (anything
     else raises NotImplementedError) and every script of NAYER passes ``--method nayer``, so the published
     code refuses its own scripts. ``nayer`` is added to the choices; nothing else about parsing changes.

CPU (only when ``torch.cuda.is_available()`` is False; on a GPU none of these apply and ``--gpu 0`` is passed)
  5. ``--gpu`` defaults to None instead of 0: NAYER's own CPU path (``prepare_model`` returns the model on the
     CPU; ``train()`` skips ``images.cuda(args.gpu)``; ``label_emb.to(None)`` and ``generator.to(None)`` stay
     on the CPU).
  6. ``torch.Tensor.cuda`` and ``torch.nn.Module.cuda`` return their object unchanged: the remaining
     unconditional calls are ``NLGenerator.reinit()`` (``...).cuda()``, every ``g_life`` epochs) and the
     evaluator (``inputs.cuda(), targets.cuda()``).
  7. ``torch.load`` maps to the CPU when no ``map_location`` is given: ``label_embedding/cifar10_le.pickle`` is a
     plain pickle of a CUDA float16 tensor, which torch refuses to unpickle without CUDA.

Data and models
  8. ``registry.datasets`` (NAYER's handle on ``torchvision.datasets``) is replaced by a view whose ``CIFAR10``
     reads the test split from ``shared/data/cifar10_test.npz`` (the 10,000 official test images; the same
     normalisation as NAYER's ``NORMALIZE_DICT['cifar10']``) and whose training split is EMPTY. NAYER builds the
     training split only for its ``.transform`` (applied to its synthetic PNGs) and never trains on it, but
     its ``download=True`` would fetch it (and torchvision's md5 check would reject test pickles rewritten from
     the npz), so an empty split makes "no real training data" true by construction. Other datasets pass
     through to torchvision.
  9. ``registry.MODEL_DICT`` gains ``fastcae_resnet56`` (teacher) and ``fastcae_resnet20`` (student): fastcae's
     zoo networks ``cifar10_resnet56``/``cifar10_resnet20`` (chenyaofo's CIFAR ResNets; NAYER's own
     ``resnet56``/``resnet20`` are RepDistiller's), wrapped so that ``model(x)`` gives logits and
     ``model(x, return_features=True)`` gives ``(logits, penultimate features)`` as NAYER's ``train()`` calls
     the teacher. The teacher's weights (``shared/data/cifar10_resnet56.pth``, loaded strictly) are written in
     NAYER's checkpoint format (``{'state_dict': ...}``) to ``checkpoints/pretrained/cifar10_fastcae_resnet56.pth``
     in the checkout, where NAYER's ``main()`` loads them itself.

Measurement (no change to what NAYER computes)
  10. ``datafree.evaluators.classification_evaluator`` is wrapped: the evaluator NAYER builds still runs, and each
      call (once per KD epoch; warm-up epochs have none) records (training seconds, top-1) and its own
      duration. The clock starts when ``main()`` is entered (NAYER's set-up counts) and EXCLUDES evaluation;
      the wall seconds with evaluation are recorded beside it. Before the first synthesis the teacher is
      evaluated once through the same evaluator (the data, normalisation and checkpoint path checked end to
      end; excluded from the clock; ``--no-check-teacher`` skips it). With ``--calibrate`` the evaluator is
      skipped (returns zeros). ``--eval-images N`` (smoke tests only) evaluates on N/10 images per class.
  11. ``datafree.synthesis.NAYER.synthesize`` and ``datafree_kd.train`` are wrapped to time each epoch's
      synthesis and KD; the teacher wrapper counts (and, calibrating, time-stamps) its calls.
  12. Hard deadline: every teacher call (one per generator step and per KD step) checks the clock and raises
      ``BudgetExhausted`` past ``--budget``; ``main()`` is abandoned there. The last evaluated accuracy is the
      run's ``final_accuracy``; if KD steps ran after it, the student as it stands at the deadline is also
      evaluated once and recorded apart (``deadline_eval``), not in the curve.
  13. NAYER's stdout/stderr (it prints every generator step) go to a log file (``--log``); its pool directory
      (``--save_dir`` + ``--log_tag``) must be empty at the start, since its ``ImagePool`` never clears it and
      would train on whatever PNGs an earlier run left there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import types

import numpy as np
import torch
from torch import nn

from .records import upsert_run

CHECKPOINT_NAME = "fastcae_resnet56"
STUDENT_NAME = "fastcae_resnet20"


class BudgetExhausted(Exception):
    """Raised inside NAYER's loop (from the teacher's forward) once the training clock passes the budget."""


class RunState:
    """The clock, the curve and the per-epoch timings of one NAYER run, written out as they come."""

    def __init__(self, budget: float, calibrate: bool, record: dict, record_path: str | None,
                 results_path: str | None, check_teacher: bool):
        self.budget = budget
        self.calibrate = calibrate
        self.record = record
        self.record_path = record_path
        self.results_path = results_path
        self.check_teacher = check_teacher
        self.t0: float | None = None
        self.eval_seconds = 0.0
        self.epochs: list[dict] = []
        self.evals: list[dict] = []
        self.first_synthesis_clock: float | None = None
        self.teacher_calls: list[tuple[float, bool]] = []  # (perf_counter, grad enabled): calibration only
        self.monitor_on = True
        self.kd_calls_since_eval = 0
        self.evaluator = None
        self.teacher = None
        self.student = None

    # ---- clock
    def start(self) -> None:
        self.t0 = time.perf_counter()

    def clock(self) -> float:
        return 0.0 if self.t0 is None else time.perf_counter() - self.t0 - self.eval_seconds

    def wall(self) -> float:
        return 0.0 if self.t0 is None else time.perf_counter() - self.t0

    def check(self) -> None:
        if self.t0 is not None and self.clock() > self.budget:
            raise BudgetExhausted(f"training clock {self.clock():.1f} s past the budget {self.budget:.1f} s")

    def teacher_called(self) -> None:
        if not self.monitor_on:
            return
        self.check()
        grad = torch.is_grad_enabled()
        if self.epochs:
            self.epochs[-1]["g_steps_run" if grad else "kd_steps_run"] += 1
        if not grad:
            self.kd_calls_since_eval += 1
        if self.calibrate:
            self.teacher_calls.append((time.perf_counter(), grad))

    # ---- records
    def begin_epoch(self, phase: str) -> dict:
        e = {"epoch": len(self.epochs), "phase": phase, "start_seconds": round(self.clock(), 3),
             "synth_seconds": None, "kd_seconds": None, "end_seconds": None, "g_steps_run": 0,
             "kd_steps_run": 0, "accuracy": None}
        if self.calibrate:
            e["first_call"] = len(self.teacher_calls)
        self.epochs.append(e)
        return e

    def snapshot(self, status: str) -> dict:
        rec = dict(self.record)
        curve = [[e["seconds"], e["accuracy"]] for e in self.evals]
        rec.update({
            "status": status,
            "curve": curve,
            "final_accuracy": curve[-1][1] if curve else None,
            "evals": self.evals,
            "epochs": self.epochs,
            "epochs_completed": sum(1 for e in self.epochs if e["end_seconds"] is not None and not e.get("cut")),
            "train_seconds": round(self.clock(), 3),
            "wall_seconds": round(self.wall(), 3),
            "eval_seconds": round(self.eval_seconds, 3),
        })
        return rec

    def flush(self, status: str = "running") -> dict:
        rec = self.snapshot(status)
        if self.record_path:
            tmp = self.record_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(rec, f, indent=1)
            os.replace(tmp, self.record_path)
        if self.results_path and not self.calibrate:
            upsert_run(self.results_path, rec)
        return rec


# ------------------------------------------------------------------------------------------------ models


class NayerClassifier(nn.Module):
    """A fastcae zoo classifier under NAYER's calling convention: ``model(x)`` -> logits and
    ``model(x, return_features=True)`` -> ``(logits, features)``; the teacher's calls tick the run's clock."""

    def __init__(self, net: nn.Module, on_call=None):
        super().__init__()
        self.net = net
        self._on_call = on_call

    def forward(self, x, return_features: bool = False):
        if self._on_call is not None:
            self._on_call()
        f = self.net.forward_features(x)
        out = self.net.forward_head(f)
        return (out, f) if return_features else out


def _teacher_state_dict(weights: str) -> dict:
    from fastcae.models import create_model

    net = create_model("cifar10_resnet56")
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return NayerClassifier(net).state_dict()


# ------------------------------------------------------------------------------------------------- data


def make_npz_cifar10(npz_path: str, eval_images: int | None = None):
    """A ``torchvision.datasets.CIFAR10`` whose test split is the npz (with ``eval_images``, only the first
    ``eval_images / 10`` images of each class: smoke tests) and whose training split is empty."""
    import torchvision
    from torchvision.datasets.vision import VisionDataset

    class NpzCIFAR10(torchvision.datasets.CIFAR10):
        def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
            VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
            self.train = train
            with np.load(npz_path) as z:
                self.classes = [str(c) for c in z["classes"]]
                if train:  # no real training image exists in this process
                    self.data = np.zeros((0, 32, 32, 3), dtype=np.uint8)
                    self.targets = []
                else:
                    labels = z["labels"]
                    idx = np.arange(len(labels))
                    if eval_images is not None:  # the npz is sorted by class: take the first N/10 of each
                        per = -(-int(eval_images) // len(self.classes))
                        idx = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per]
                                                      for c in range(len(self.classes))]))
                    self.data = np.ascontiguousarray(z["images"][idx])
                    self.targets = [int(t) for t in labels[idx]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return NpzCIFAR10


class _DatasetsView:
    """``torchvision.datasets`` with ``CIFAR10`` replaced."""

    def __init__(self, cifar10):
        self.CIFAR10 = cifar10

    def __getattr__(self, name):
        import torchvision.datasets

        return getattr(torchvision.datasets, name)


# ---------------------------------------------------------------------------------------------- patches


def _stub_wandb() -> str:
    try:
        import wandb  # noqa: F401
    except ImportError:
        stub = types.ModuleType("wandb")
        stub.init = lambda *a, **k: None
        stub.log = lambda *a, **k: None
        stub.finish = lambda *a, **k: None
        sys.modules["wandb"] = stub
        return "stub"
    os.environ["WANDB_MODE"] = "disabled"
    return "installed, WANDB_MODE=disabled"


def _patch_cpu() -> list[str]:
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, device=None: self
    _load = torch.load

    def load(*a, **k):
        if "map_location" not in k and len(a) < 2:
            k["map_location"] = "cpu"
        return _load(*a, **k)

    torch.load = load
    return ["--gpu default None", "Tensor.cuda/Module.cuda identity", "torch.load map_location=cpu"]


def install(nayer_dir: str, deps_dir: str | None, state: RunState, npz: str, teacher_weights: str,
            threads: int, eval_images: int | None = None):
    """Import NAYER from ``nayer_dir`` and apply the patches of the module docstring; returns ``datafree_kd``."""
    torch.set_num_threads(threads)
    nayer_dir = os.path.abspath(nayer_dir)
    sys.path.insert(0, nayer_dir)
    if deps_dir:
        sys.path.append(os.path.abspath(deps_dir))
    patches = {"wandb": _stub_wandb(), "threads": threads}
    os.chdir(nayer_dir)
    import datafree
    import datafree_kd
    import registry

    method = datafree_kd.parser._option_string_actions["--method"]
    if "nayer" not in method.choices:
        method.choices = list(method.choices) + ["nayer"]
        patches["method_choices"] = method.choices
    if not torch.cuda.is_available():
        datafree_kd.parser.set_defaults(gpu=None)
        patches["cpu"] = _patch_cpu()

    registry.datasets = _DatasetsView(make_npz_cifar10(npz, eval_images))

    def build(name: str, role: str):
        def fn(num_classes=10, **kwargs):
            from fastcae.models import create_model

            net = create_model(name, num_classes=num_classes)
            model = NayerClassifier(net, state.teacher_called if role == "teacher" else None)
            setattr(state, role, model)
            return model
        fn.__name__ = f"fastcae_{role}"
        return fn

    registry.MODEL_DICT[CHECKPOINT_NAME] = build("cifar10_resnet56", "teacher")
    registry.MODEL_DICT[STUDENT_NAME] = build("cifar10_resnet20", "student")
    os.makedirs("checkpoints/pretrained", exist_ok=True)
    ckpt = f"checkpoints/pretrained/cifar10_{CHECKPOINT_NAME}.pth"
    torch.save({"state_dict": _teacher_state_dict(teacher_weights)}, f"{ckpt}.{os.getpid()}.tmp")
    os.replace(f"{ckpt}.{os.getpid()}.tmp", ckpt)  # another run may be reading it

    make_evaluator = datafree.evaluators.classification_evaluator

    def classification_evaluator(dataloader):
        inner = make_evaluator(dataloader)
        state.evaluator = inner

        def evaluate(model, device=None, progress=False):
            if state.calibrate:
                return {"Acc": (0.0, 0.0), "Loss": 0.0}
            clock, t = state.clock(), time.perf_counter()
            res = inner(model, device=device, progress=progress)
            dt = time.perf_counter() - t
            state.eval_seconds += dt
            top1, top5 = (float(a) / 100.0 for a in res["Acc"])
            epoch = state.epochs[-1] if state.epochs else None
            state.evals.append({"epoch": epoch["epoch"] if epoch else None, "seconds": round(clock, 3),
                                "wall_seconds": round(state.wall() - dt, 3), "accuracy": top1, "top5": top5,
                                "loss": float(res["Loss"]), "eval_seconds": round(dt, 3),
                                "lr": epoch.get("lr") if epoch else None})
            if epoch is not None:
                epoch["accuracy"] = top1
                epoch["end_seconds"] = round(clock, 3)
            state.kd_calls_since_eval = 0
            rec = state.flush()
            print(f"[nayer] epoch {epoch['epoch'] if epoch else '?'}: {clock:7.1f} s  top-1 {100 * top1:.2f}%  "
                  f"(eval {dt:.1f} s, wall {rec['wall_seconds']:.0f} s)", file=sys.__stdout__, flush=True)
            return res

        return evaluate

    datafree.evaluators.classification_evaluator = classification_evaluator

    synthesize = datafree.synthesis.NAYER.synthesize

    def timed_synthesize(self, *a, **k):
        if state.first_synthesis_clock is None:
            state.first_synthesis_clock = state.clock()
            if state.check_teacher and state.evaluator is not None and not state.calibrate:
                state.monitor_on, t = False, time.perf_counter()
                res = state.evaluator(self.teacher)
                state.eval_seconds += time.perf_counter() - t
                state.monitor_on = True
                state.record["teacher_accuracy"] = float(res["Acc"][0]) / 100.0
                print(f"[nayer] teacher through NAYER's evaluator: {res['Acc'][0]:.2f}% "
                      f"({time.perf_counter() - t:.1f} s, not counted)", file=sys.__stdout__, flush=True)
        prev = state.epochs[-1] if state.epochs else None
        if prev is not None and prev["end_seconds"] is None:
            prev["end_seconds"] = round(state.clock(), 3)  # a warm-up epoch: no evaluation closes it
        epoch = state.begin_epoch("warmup" if self.ep < self.ep_start else "kd")
        state.check()
        t = time.perf_counter()
        out = synthesize(self, *a, **k)
        epoch["synth_seconds"] = round(time.perf_counter() - t, 4)
        if epoch["phase"] == "warmup":
            state.flush()
        return out

    datafree.synthesis.NAYER.synthesize = timed_synthesize

    train = datafree_kd.train

    def timed_train(synthesizer, model, criterion, optimizer, args):
        epoch = state.epochs[-1]
        epoch["lr"] = optimizer.param_groups[0]["lr"]
        t = time.perf_counter()
        try:
            return train(synthesizer, model, criterion, optimizer, args)
        finally:
            epoch["kd_seconds"] = round(time.perf_counter() - t, 4)

    datafree_kd.train = timed_train
    state.record.setdefault("shim", {})["patches"] = patches
    return datafree_kd


def run(datafree_kd, state: RunState, nayer_args: list[str], log_path: str | None) -> dict:
    """Run NAYER's ``main()`` with ``nayer_args`` as its command line, under the deadline."""
    sys.argv = ["datafree_kd.py", *nayer_args]
    args, _ = datafree_kd.parser.parse_known_args(nayer_args)
    pool = os.path.abspath(args.save_dir + args.log_tag)
    if os.path.isdir(pool) and os.listdir(pool):
        raise SystemExit(f"NAYER's pool directory {pool} is not empty: its ImagePool would train on old images")
    state.record["pool_dir"] = pool
    log = open(log_path, "a") if log_path else open(os.devnull, "w")
    status = "finished"
    with log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        state.start()
        try:
            datafree_kd.main()
        except BudgetExhausted as e:
            status = "deadline"
            print(f"[shim] {e}", flush=True)
        except BaseException:
            state.flush("error")
            raise
    if state.epochs and state.epochs[-1]["end_seconds"] is None:
        state.epochs[-1]["end_seconds"] = round(state.clock(), 3)
        state.epochs[-1]["cut"] = status == "deadline"
    if (status == "deadline" and not state.calibrate and state.kd_calls_since_eval > 0
            and state.evaluator is not None and state.student is not None):
        clock = state.clock()
        state.student.eval()
        state.monitor_on = False
        t = time.perf_counter()
        res = state.evaluator(state.student)
        state.eval_seconds += time.perf_counter() - t
        state.record["deadline_eval"] = {"seconds": round(clock, 3), "accuracy": float(res["Acc"][0]) / 100.0,
                                         "kd_steps_since_last_eval": state.kd_calls_since_eval}
    if state.calibrate:
        state.record["calibration"] = calibration_summary(state)
    return state.flush(status)


def calibration_summary(state: RunState) -> dict:
    """Per-step and fixed costs from a short run's teacher-call time stamps (medians: robust to one slow step)."""
    out = {"setup": state.first_synthesis_clock or 0.0, "epochs": []}
    calls = state.teacher_calls
    for i, e in enumerate(state.epochs):
        end = state.epochs[i + 1]["first_call"] if i + 1 < len(state.epochs) else len(calls)
        mine = calls[e["first_call"]:end]
        gen = [t for t, g in mine if g]
        kd = [t for t, g in mine if not g]
        d_gen = float(np.median(np.diff(gen))) if len(gen) > 1 else None
        d_kd = float(np.median(np.diff(kd))) if len(kd) > 1 else None
        out["epochs"].append({"phase": e["phase"], "synth_seconds": e["synth_seconds"], "kd_seconds": e["kd_seconds"],
                              "g_steps": len(gen), "kd_steps": len(kd), "gen_step": d_gen, "kd_step": d_kd})
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        i = argv.index("--")
        own, nayer_args = argv[:i], argv[i + 1:]
    else:
        own, nayer_args = argv, []
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nayer-dir", required=True, help="NAYER's checkout (pinned, unmodified)")
    p.add_argument("--deps-dir", default=None, help="side directory with kornia, termcolor, xlsxwriter, pandas")
    p.add_argument("--budget", type=float, default=float("inf"), help="training seconds (evaluation excluded)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--test-npz", default=None, help="CIFAR-10 test set (default: shared/data/cifar10_test.npz)")
    p.add_argument("--teacher-weights", default=None, help="default: shared/data/cifar10_resnet56.pth")
    p.add_argument("--eval-images", type=int, default=None,
                   help="evaluate on N test images only, N/10 per class (smoke tests; default: all 10,000)")
    p.add_argument("--record", default=None, help="write this run's record (JSON) here as it goes")
    p.add_argument("--record-base", default=None, help="JSON fields to start the record from")
    p.add_argument("--results", default=None, help="results file to upsert the record into (by run_id)")
    p.add_argument("--log", default=None, help="NAYER's stdout/stderr go here")
    p.add_argument("--calibrate", action="store_true", help="skip evaluation; record step timings")
    p.add_argument("--no-check-teacher", action="store_true",
                   help="skip evaluating the teacher through NAYER's evaluator before the first synthesis")
    a = p.parse_args(own)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    shared = os.environ.get("FASTCAE_SHARED_DATA") or os.path.join(os.path.dirname(repo), "shared", "data")
    npz = os.path.abspath(a.test_npz or os.path.join(shared, "cifar10_test.npz"))
    weights = os.path.abspath(a.teacher_weights or os.path.join(shared, "cifar10_resnet56.pth"))
    record = {}
    if a.record_base:
        with open(a.record_base) as f:
            record = json.load(f)
    record.setdefault("run_id", f"nayer-{int(time.time())}")
    record["nayer_argv"] = nayer_args
    for k in ("record", "results", "log"):
        if getattr(a, k):
            setattr(a, k, os.path.abspath(getattr(a, k)))
    state = RunState(a.budget, a.calibrate, record, a.record, a.results, not a.no_check_teacher)
    record["eval_images"] = a.eval_images or "all"
    datafree_kd = install(a.nayer_dir, a.deps_dir, state, npz, weights, a.threads, a.eval_images)
    rec = run(datafree_kd, state, nayer_args, a.log)
    final = rec["final_accuracy"]
    who = "nayer calibration" if a.calibrate else "nayer"
    print(f"[{who}] {rec['status']}: {rec['epochs_completed']} epochs, {rec['train_seconds']:.1f} s training, "
          f"final top-1 {'-' if final is None else f'{100 * final:.2f}%'}", file=sys.__stdout__, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
