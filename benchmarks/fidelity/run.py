"""Run the fidelity suite: distil every case with only a time budget given, as a new user would.

    python -m benchmarks.fidelity.run                       # all cases, budgets 60 and 240 s, seeds 0 1 2
    python -m benchmarks.fidelity.run --cases mbv3-grey32 --budgets 60 --seeds 0
    python -m benchmarks.fidelity.run --recipe digits        # the README's old advice: preset="digits"
    python -m benchmarks.fidelity.run --tier natural --budgets 600 1800   # public CIFAR-10 teachers

Per case: train (or load the cached) teacher, then per budget and seed ``distill(teacher, student,
class_names, image_shape=..., mean=..., std=..., max_seconds=budget, seed=seed)`` with nothing else, and
score the student on the held-out split. The noise-input baseline (KD on uniform noise, the same number of
student steps, no generator) runs once per case and budget. The natural tier (``natural.py``) distils public
CIFAR-10 teachers given only the budget and the seed, and scores on CIFAR-10's test images. Results are
written after every run to the JSON file (``--out``), so a cut-off suite keeps what it measured; ``--table``
prints the Markdown table of an existing file.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fastcae import DistillResult, distill
from fastcae.apps.data import ImageSplit
from fastcae.apps.demo import noise_kd_baseline
from fastcae.apps.teacher import train_classifier
from fastcae.atomic import atomic_write
from fastcae.evaluate import accuracy
from fastcae.health import HEALTH_FIELDS
from fastcae.synthesis.embeddings import default_cache_dir
from fastcae.utils import versions

from .cases import ALL_CASES, CASES, Case
from .natural import NATURAL_CASES, NATURAL_PROBES, NaturalCase

TIERS = {"digits": CASES, "natural": NATURAL_CASES}
EVERY_CASE = {**ALL_CASES, **NATURAL_CASES, **NATURAL_PROBES}
CURVE_IMAGES = 1000  # a natural run scores its student on this many test images after every epoch (its curve)

RECIPES = {
    "default": {},  # only the budget: what fastcae plans by itself
    "digits": {"preset": "digits"},  # the README's advice before the budget planner
}


def teacher_path(case: Case) -> Path:
    key = hashlib.sha256(f"{case.name}:{case.teacher_epochs}:{case.teacher_lr}:{case.data}".encode()).hexdigest()[:10]
    return default_cache_dir().parent / "fidelity" / f"{case.name}-{key}.safetensors"


def load_teacher(case: Case, train, mean, std, progress: bool) -> tuple[torch.nn.Module, float]:
    """The case's teacher from the cache, else trained (seed 0) and cached; returns (model, seconds)."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = case.make_teacher()
    path = teacher_path(case)
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval(), 0.0
    start = time.perf_counter()
    train_classifier(model, train, mean, std, epochs=case.teacher_epochs, lr=case.teacher_lr, batch_size=64,
                     seed=0, progress=progress)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp))  # a cut-off run never leaves half a teacher
    return model.eval(), time.perf_counter() - start


@dataclass
class CaseRun:
    """One distillation of a case, with what scoring and studying it needs."""

    case: Case
    train: ImageSplit
    test: ImageSplit
    mean: tuple
    std: tuple
    teacher: torch.nn.Module
    teacher_seconds: float
    result: DistillResult
    seconds: float


def distil_case(case: Case, budget: float, seed: int, recipe: str = "default", progress: bool = False,
                options: dict | None = None) -> CaseRun:
    """Distil ``case`` as a new user would: the class names, image shape, mean/std and the budget (plus the
    recipe's and ``options``' fields, for probes)."""
    train, test = case.data.load()
    mean, std = train.channel_stats()
    teacher, teacher_seconds = load_teacher(case, train, mean, std, progress)
    torch.manual_seed(seed)
    student = case.make_student()
    start = time.perf_counter()
    result = distill(teacher, student, case.data.class_names, image_shape=tuple(train.images.shape[1:]), mean=mean,
                     std=std, max_seconds=budget, seed=seed, progress=progress, **RECIPES[recipe],
                     **(options or {}))
    return CaseRun(case, train, test, mean, std, teacher, teacher_seconds, result, time.perf_counter() - start)


def distil_natural(case: NaturalCase, budget: float, seed: int, recipe: str = "default", progress: bool = False,
                   options: dict | None = None) -> CaseRun:
    """Distil a natural-images case as a new user would: the public teacher, a fresh student, the budget and the
    seed; the teacher's ``pretrained_cfg`` gives the class names, image shape and normalisation. A fixed subset of
    the test images is scored after every epoch (inside the budget, as a user's ``eval_data`` would be) for the
    accuracy-against-time curve; the table's accuracy is on all of them, after the run."""
    test = case.test_split()
    teacher = case.make_teacher()
    mean, std = tuple(teacher.pretrained_cfg["mean"]), tuple(teacher.pretrained_cfg["std"])
    torch.manual_seed(seed)
    student = case.make_student()
    curve = _curve_subset(test)
    start = time.perf_counter()
    result = distill(teacher, student, max_seconds=budget, seed=seed, progress=progress, eval_data=curve,
                     **RECIPES[recipe], **(options or {}))
    return CaseRun(case, None, test, mean, std, teacher, 0.0, result, time.perf_counter() - start)


def _curve_subset(test: ImageSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``CURVE_IMAGES // classes`` test images of each class: the same subset in every run."""
    classes = int(test.labels.max()) + 1
    idx = torch.cat([(test.labels == c).nonzero().flatten()[: CURVE_IMAGES // classes] for c in range(classes)])
    return test.images[idx], test.labels[idx]


_TEACHER_ACCURACY: dict[str, float] = {}  # a natural case's teacher is scored once per process


def run_case(case: Case | NaturalCase, budget: float, seed: int, recipe: str, baseline: bool, progress: bool,
             options: dict | None = None) -> dict:
    natural = isinstance(case, NaturalCase)
    run = (distil_natural if natural else distil_case)(case, budget, seed, recipe, progress, options)
    test, mean, std, teacher, result = run.test, run.mean, run.std, run.teacher, run.result
    if natural:
        if case.teacher not in _TEACHER_ACCURACY:
            _TEACHER_ACCURACY[case.teacher] = accuracy(teacher, test.images, test.labels, mean, std)
        teacher_acc = _TEACHER_ACCURACY[case.teacher]
    else:
        teacher_acc = accuracy(teacher, test.images, test.labels, mean, std)
    teacher_seconds, seconds = run.teacher_seconds, run.seconds
    student_acc = accuracy(result.student, test.images, test.labels, mean, std)
    steps = sum(h.get("student_steps", 0) for h in result.history)
    record = {
        "case": case.name, "budget": budget, "seed": seed, "recipe": recipe,
        "options": {k: v for k, v in (options or {}).items() if k != "profile"},
        "teacher": teacher_acc, "student": student_acc, "distill_seconds": seconds, "student_steps": steps,
        "epochs_run": len(result.history), "teacher_train_seconds": teacher_seconds,
        # how the steps ran, and when each epoch ended: on a GPU the first epoch holds the compiles
        "compile_mode": getattr(result, "compile_mode", None),
        "epoch_end_seconds": [round(h["seconds"], 1) for h in result.history if "seconds" in h],
        "plan": getattr(result, "plan", None), "last": result.history[-1] if result.history else None,
        "tier": "natural" if natural else "digits", "precision": result.config.precision,
        "images_synthesized": result.history[-1].get("images_synthesized") if result.history else 0,
        # (seconds, accuracy) after each evaluated epoch: a natural run's subset of the test images
        "curve": [[round(h["seconds"], 1), h["accuracy"]] for h in result.history if h.get("accuracy") is not None],
        "flip": next(({"flip": h["flip"], "consistency": h["flip_consistency"]} for h in result.history
                      if "flip" in h), None),
        # synthesis health per epoch, rounded: where the generator stood when the student learned from it
        "health": [{k: round(h[k], 4) if isinstance(h.get(k), float) else h.get(k)
                    for k in (*HEALTH_FIELDS, "kd")} for h in result.history],
    }
    if baseline:
        torch.manual_seed(seed)
        base = noise_kd_baseline(teacher, case.make_student(), mean, std, steps=max(steps, 1),
                                 batch_size=result.config.student_batch_size, temperature=result.config.temperature,
                                 lr=result.config.lr_s, image_shape=tuple(test.images.shape[1:]), seed=seed,
                                 precision=result.config.precision, channels_last=bool(result.config.channels_last))
        teacher.to(memory_format=torch.contiguous_format)
        record["noise_baseline"] = accuracy(base, test.images, test.labels, mean, std)
    return record


def parse_options(items: list[str]) -> dict:
    """``--set KEY=VALUE`` items -> distill options (numbers, lists, dicts and booleans as JSON)."""
    def value(text: str):
        try:
            return json.loads(text)
        except json.JSONDecodeError:  # a bare word: paradigm=fast, text_encoder=hash
            return text
    return {k: value(v) for k, _, v in (i.partition("=") for i in items)}


def machine() -> dict:
    return {"date": datetime.date.today().isoformat(), **versions(), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "device": "cuda" if torch.cuda.is_available() else "cpu"}


def table(records: list[dict]) -> str:
    """Markdown: one row per case and budget, mean and spread (min-max) over seeds, in percent."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        recipe = r["recipe"] + "".join(f" {k}={v}" for k, v in sorted(r.get("options", {}).items()))
        groups.setdefault((recipe, r["case"], r["budget"]), []).append(r)
    lines = ["| recipe | case | budget | student % (mean, min-max) | teacher % | gap | noise baseline % | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for (recipe, name, budget), rs in sorted(groups.items()):
        accs = [100 * r["student"] for r in rs]
        mean = statistics.fmean(accs)
        teacher = 100 * rs[0]["teacher"]
        base = [100 * r["noise_baseline"] for r in rs if "noise_baseline" in r]
        lines.append(f"| {recipe} | {name} | {budget:.0f} s | {mean:.1f} ({min(accs):.1f}-{max(accs):.1f}) | "
                     f"{teacher:.1f} | {teacher - mean:.1f} | {statistics.fmean(base) if base else float('nan'):.1f} "
                     f"| {len(rs)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="*", default=None, choices=list(EVERY_CASE),
                   help="default: the tier's cases; the hold-out and probe cases run only when named")
    p.add_argument("--tier", default="digits", choices=list(TIERS),
                   help="digits (bundled digits, teachers trained here) or natural (public CIFAR-10 teachers on "
                        "CIFAR-10's test images, from ../shared/data)")
    p.add_argument("--budgets", nargs="*", type=float, default=[60.0, 240.0])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--recipe", default="default", choices=list(RECIPES))
    p.add_argument("--out", default=None, help="JSON file (appended to if it exists)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--no-baseline", action="store_true", help="skip the noise-input baseline (probes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a distill option for every run (experiments; the suite itself gives none)")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="write each run's throughput report there (distill(profile=...): images/s per phase and, "
                        "on a GPU, NVML utilisation and power)")
    p.add_argument("--table", default=None, help="print the table of this JSON file and exit")
    args = p.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())["runs"]))
        return 0
    torch.set_num_threads(min(2, torch.get_num_threads()))
    options = parse_options(args.set)
    tier = "" if args.tier == "digits" else f"{args.tier}-"
    out = Path(args.out or f"benchmarks/results/fidelity-{tier}{args.recipe}-{datetime.date.today().isoformat()}.json")
    doc = json.loads(out.read_text()) if out.exists() else {"machine": machine(), "runs": []}
    for name in args.cases or list(TIERS[args.tier]):
        for budget in args.budgets:
            for i, seed in enumerate(args.seeds):
                opts = dict(options)
                if args.profile:
                    opts["profile"] = str(Path(args.profile) / f"{name}-{budget:g}s-seed{seed}.json")
                record = run_case(EVERY_CASE[name], budget, seed, args.recipe,
                                  baseline=(i == 0 and not args.no_baseline), progress=args.progress, options=opts)
                doc["runs"].append(record)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(doc, indent=1, default=str))
                print(f"{name:<22} {budget:>5.0f} s seed {seed}: student {100 * record['student']:.1f}% "
                      f"teacher {100 * record['teacher']:.1f}% in {record['distill_seconds']:.0f} s "
                      f"({record['epochs_run']} epochs)", flush=True)
    print(table(doc["runs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
