"""Transfer with headroom: students distilled from a public CIFAR-10 teacher, scored on CIFAR-10 and on CIFAR-100.

    python -m benchmarks.transfer.run --budget 300 --seeds 0 1 2      # about 75 minutes on 2 CPU cores

Every method distils the public CIFAR-10 ResNet-56 into a fresh ResNet-20 at the same wall budget (only
``max_seconds``, a seed and the method's one option, as a user would), then each student is scored three ways:
CIFAR-10's test images (what distillation optimises); a linear probe on its frozen penultimate features, and a
short fine-tune of the whole network with a new head, on the CIFAR-100 probe set (what transfer means). The
probe set's 10,000 images are split once, 50/50 per class with a fixed seed; the probe's L2 strength is chosen on
the train half only (``linear_probe(weight_decay="auto")``). The reference points are scored the same way: a
randomly initialised ResNet-20 (the floor), the public supervised ResNet-20 (a student trained with data) and the
teacher. Nothing is tuned on the CIFAR-100 images: they are a downstream task only.

Each scored run is appended to ``--out`` (JSON lines) as it finishes and is skipped when the command is run
again, so a cut run resumes. ``--report`` writes the table (Markdown and JSON) and the plot of probe accuracy
against CIFAR-10 accuracy beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fastcae import distill
from fastcae.apps.data import ImageSplit
from fastcae.apps.transfer import fine_tune, linear_probe, split_stratified
from fastcae.evaluate import accuracy
from fastcae.models import resolve_model

from ..fidelity.natural import cifar10_test, shared_data, shared_images
from ..fidelity.run import machine

# method -> the one distill option that makes it (beside max_seconds and the seed)
METHODS: dict[str, dict] = {
    "cae": {},
    "cae, cncl_weight=0": {"cncl_weight": 0.0},
    "nayer": {"paradigm": "nayer"},
    "fast": {"paradigm": "fast"},
}
# Run only when named (--methods): what CNCL does at other strengths, for the diagnosis; never in the table's default.
VARIANTS: dict[str, dict] = {
    "cae, cncl_weight=0.5": {"cncl_weight": 0.5},
    "cae, cncl_temperature=0.5": {"cncl_temperature": 0.5},
    # CutMix gives a mixed image its majority label: CNCL's positives carry pixels of other classes
    "cae, cutmix=0": {"cutmix": 0.0},
    "cae, cutmix=0, cncl_weight=0": {"cutmix": 0.0, "cncl_weight": 0.0},
}
REFERENCES = ("random ResNet-20", "supervised ResNet-20 (public)", "teacher ResNet-56 (public)")
TEACHER, STUDENT = "cifar10_resnet56", "cifar10_resnet20"
FINE_TUNE = {"epochs": 5, "lr": 0.05, "batch_size": 128, "flip": True}  # short: about 50 s per model here


def cifar100_probe() -> ImageSplit:
    """The CIFAR-100 probe set (10,000 train-split images, 100 per class) in [0, 1], ``[N, 3, 32, 32]``."""
    return shared_images("cifar100_train_probe.npz", "the CIFAR-100 probe set")


def score(model: torch.nn.Module, cifar10: ImageSplit, probe: tuple[ImageSplit, ImageSplit], mean, std,
          seed: int) -> dict:
    """CIFAR-10 test accuracy, the CIFAR-100 linear probe and the short fine-tune of one model."""
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    t0 = time.perf_counter()
    c10 = accuracy(model, cifar10.images, cifar10.labels, mean, std)
    lp = linear_probe(model, *probe, mean, std, weight_decay="auto", seed=seed)
    t1 = time.perf_counter()
    ft = fine_tune(model, *probe, mean, std, seed=seed, **FINE_TUNE)
    return {"cifar10": c10, "probe": lp["test_accuracy"], "probe_weight_decay": lp["weight_decay"],
            "probe_train": lp["train_accuracy"], "fine_tune": ft["test_accuracy"],
            "fine_tune_train": ft["train_accuracy"], "probe_seconds": round(t1 - t0, 1),
            "fine_tune_seconds": round(time.perf_counter() - t1, 1)}


def load_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(budget: float, seeds, methods, out: Path, students: Path | None, progress: bool) -> list[dict]:
    cifar10 = cifar10_test()
    probe = split_stratified(cifar100_probe(), 0.5, seed=0)
    weights = shared_data()
    done = {(r["row"], r["seed"], r.get("budget")) for r in load_records(out)}
    out.parent.mkdir(parents=True, exist_ok=True)

    def emit(record: dict) -> None:
        record.update(machine())
        with out.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{record['row']:32s} seed {record['seed']}  CIFAR-10 {100 * record['cifar10']:5.1f}  "
              f"probe {100 * record['probe']:5.1f}  fine-tune {100 * record['fine_tune']:5.1f}", flush=True)

    refs = {REFERENCES[0]: (STUDENT, None), REFERENCES[1]: (STUDENT, weights / "cifar10_resnet20.pth"),
            REFERENCES[2]: (TEACHER, weights / "cifar10_resnet56.pth")}
    scored = {r for r, _, budget in done if budget is None}
    for row, (spec, path) in refs.items():
        for seed in seeds if path is None else seeds[:1]:  # trained weights do not depend on the seed
            if (row, seed, None) in done or (path is not None and row in scored):
                continue
            torch.manual_seed(seed)
            model = resolve_model(spec, weights=path)
            cfg = model.pretrained_cfg
            emit({"row": row, "seed": seed, "budget": None, **score(model, cifar10, probe, cfg["mean"], cfg["std"],
                                                                     seed)})

    for seed in seeds:  # every method at one seed before the next seed: a cut run stays balanced
        for row in methods:
            if (row, seed, budget) in done:
                continue
            teacher = resolve_model(TEACHER, weights=weights / "cifar10_resnet56.pth").eval()
            mean, std = teacher.pretrained_cfg["mean"], teacher.pretrained_cfg["std"]
            torch.manual_seed(seed)
            student = resolve_model(STUDENT)
            t0 = time.perf_counter()
            options = {**METHODS, **VARIANTS}[row]
            result = distill(teacher, student, max_seconds=budget, seed=seed, progress=progress, **options)
            seconds = time.perf_counter() - t0
            if students is not None:
                students.mkdir(parents=True, exist_ok=True)
                torch.save(result.student.state_dict(), students / f"{row.replace(', ', '-').replace('=', '')}"
                                                                    f"-{int(budget)}s-seed{seed}.pt")
            steps = sum(h.get("student_steps", 0) for h in result.history)
            emit({"row": row, "seed": seed, "budget": budget, "options": options,
                  "distill_seconds": round(seconds, 1), "student_steps": steps,
                  # the student's loss terms per epoch: how large CNCL is beside KD
                  "terms": [{k: round(h[k], 4) for k in ("kd", "cncl") if isinstance(h.get(k), float)}
                            for h in result.history],
                  "precision": result.config.precision,
                  **score(result.student, cifar10, probe, mean, std, seed)})
    return load_records(out)


def summarise(records: list[dict], budget: float | None) -> list[dict]:
    """One row per method or reference: mean, min and max of each score over the seeds."""
    rows = []
    for name in (*METHODS, *VARIANTS, *REFERENCES):
        recs = [r for r in records if r["row"] == name and (r.get("budget") in (None, budget))]
        if not recs:
            continue
        row = {"row": name, "seeds": [r["seed"] for r in recs], "budget": recs[0].get("budget")}
        for key in ("cifar10", "probe", "fine_tune"):
            vals = [r[key] for r in recs]
            row[key] = {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals), "values": vals}
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    def cell(s: dict) -> str:
        if len(s["values"]) == 1:
            return f"{100 * s['mean']:.1f}"
        return f"{100 * s['mean']:.1f} ({100 * s['min']:.1f}-{100 * s['max']:.1f})"

    lines = ["| ResNet-20 from | seeds | CIFAR-10 test | CIFAR-100 linear probe | CIFAR-100 fine-tune |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {len(r['seeds'])} | {cell(r['cifar10'])} | {cell(r['probe'])} | "
                     f"{cell(r['fine_tune'])} |")
    return "\n".join(lines)


def plot(records: list[dict], budget: float | None, path: Path) -> None:
    """Probe accuracy against CIFAR-10 accuracy, one point per method and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    markers = dict(zip((*METHODS, *REFERENCES), "oosD^vs*"))
    for i, name in enumerate((*METHODS, *REFERENCES)):
        recs = [r for r in records if r["row"] == name and r.get("budget") in (None, budget)]
        if recs:
            ax.scatter([100 * r["cifar10"] for r in recs], [100 * r["probe"] for r in recs], label=name,
                       marker=markers[name], s=46, color=f"C{i}",
                       facecolors="none" if name == "cae, cncl_weight=0" else None)
    ax.set_xlabel("CIFAR-10 test accuracy (%), the teacher's task")
    ax.set_ylabel("CIFAR-100 linear probe accuracy (%)")
    ax.set_title(f"ResNet-56 -> ResNet-20, {int(budget or 0)} s on 2 CPU cores: transfer against fidelity",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=300.0, help="wall seconds per distillation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=[*METHODS, *VARIANTS],
                        help="the methods to distil (default: the four of the table; the CNCL variants when named)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/transfer-runs.jsonl"))
    parser.add_argument("--students", type=Path, default=None, help="also save each student's weights there")
    parser.add_argument("--report", type=Path, default=None,
                        help="write the table (.md, .json) and the plot (.png) with this path stem")
    parser.add_argument("--report-only", action="store_true", help="tabulate --out without running anything")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    records = (load_records(args.out) if args.report_only else
               run(args.budget, args.seeds, args.methods, args.out, args.students, args.progress))
    rows = summarise(records, args.budget)
    text = table(rows)
    print(text)
    if args.report is not None:
        stem = args.report
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".md").write_text(text + "\n")
        stem.with_suffix(".json").write_text(json.dumps({"budget": args.budget, "fine_tune": FINE_TUNE,
                                                         "rows": rows, "machine": machine()}, indent=1))
        plot(records, args.budget, stem.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
