"""Accuracy against wall seconds: NAYER's runs (from the peers' results files) beside fastcae's curves.

    python -m benchmarks.peers.plot --nayer benchmarks/results/peers-nayer-<date>.json \\
        [--fastcae curves.json] [--budget 600] [--out peers.png]

``--fastcae`` takes a JSON list of ``{"label": ..., "curve": [[seconds, accuracy], ...]}`` records. Accuracies
may be fractions or percentages (values up to 1 are read as fractions); seconds are training seconds.
NAYER's runs are drawn from their ``curve`` (training seconds, evaluation excluded), each run's final
accuracy marked, and the student evaluated at the deadline (when the deadline cut an epoch) drawn hollow.
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .records import load_runs  # noqa: E402


def _percent(curve: list) -> tuple[list[float], list[float]]:
    xs = [float(s) for s, _ in curve]
    ys = [float(a) for _, a in curve]
    if ys and max(ys) <= 1.0:
        ys = [100.0 * y for y in ys]
    return xs, ys


def nayer_series(paths: list[str], budget: float | None = None, seeds: list[int] | None = None) -> list[dict]:
    out = []
    for path in paths:
        for run in load_runs(path):
            if not run.get("curve") and not run.get("deadline_eval"):
                continue  # nothing evaluated (cut in its warm-up)
            if budget is not None and float(run.get("budget", -1)) != budget:
                continue
            if seeds is not None and run.get("seed") not in seeds:
                continue
            # runs of one seed and budget differ in how they were fitted: say the KD lr and where the costs came from
            lr = (run.get("nayer_args") or {}).get("lr")
            fitted = "given costs" if "from" in (run.get("calibration") or {"from": None}) else "calibrated"
            label = (f"NAYER seed {run.get('seed')} ({run.get('budget', 0):g} s budget"
                     + (f", lr {lr:g}, {fitted})" if lr is not None else ")"))
            out.append({"label": label, "curve": run.get("curve", []), "deadline_eval": run.get("deadline_eval"),
                        "teacher": run.get("teacher_accuracy"), "budget": run.get("budget"),
                        "eval_images": run.get("eval_images", "all")})
    return out


def plot(nayer: list[dict], fastcae: list[dict], out: str, title: str | None = None) -> str:
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    budgets = set()
    for i, run in enumerate(nayer):
        xs, ys = _percent(run["curve"])
        if run["eval_images"] != "all":
            run = {**run, "label": f"{run['label']}, {run['eval_images']} test images"}
        color = plt.cm.Oranges(0.5 + 0.5 * (i + 1) / (len(nayer) + 1))
        ax.plot(xs, ys, "o-", ms=3, lw=1.2, color=color, label=run["label"])
        if xs:
            ax.plot(xs[-1:], ys[-1:], "s", ms=6, color=color)
        d = run.get("deadline_eval")
        if d:
            dx, dy = _percent([[d["seconds"], d["accuracy"]]])
            ax.plot(dx, dy, "o", ms=6, mfc="none", color=color)
        if run.get("budget"):
            budgets.add(float(run["budget"]))
    for i, rec in enumerate(fastcae):
        xs, ys = _percent(rec["curve"])
        color = plt.cm.Blues(0.5 + 0.5 * (i + 1) / (len(fastcae) + 1))
        ax.plot(xs, ys, "o-", ms=3, lw=1.2, color=color, label=rec.get("label", f"fastcae {i}"))
        if xs:
            ax.plot(xs[-1:], ys[-1:], "s", ms=6, color=color)
    teachers = [r for r in nayer if r.get("teacher")]
    if teachers:
        t = teachers[0]
        on = "" if t["eval_images"] == "all" else f" on {t['eval_images']} images"
        ax.axhline(100 * t["teacher"], color="grey", lw=0.8, ls=":", label=f"teacher {100 * t['teacher']:.2f}%{on}")
    for b in sorted(budgets):
        ax.axvline(b, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("training seconds (evaluation excluded)")
    ax.set_ylabel("CIFAR-10 test top-1 (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.set_title(title or "ResNet-56 -> ResNet-20, data-free, same machine and budget")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nayer", nargs="*", default=[], help="peers results files (peers-nayer-<date>.json)")
    p.add_argument("--fastcae", nargs="*", default=[], help='JSON lists of {"label", "curve"} records')
    p.add_argument("--budget", type=float, default=None, help="only NAYER runs of this budget")
    p.add_argument("--seeds", type=int, nargs="*", default=None, help="only NAYER runs of these seeds")
    p.add_argument("--title", default=None)
    p.add_argument("--out", default="peers.png")
    a = p.parse_args(argv)
    fastcae = []
    for path in a.fastcae:
        with open(path) as f:
            data = json.load(f)
        fastcae.extend(data if isinstance(data, list) else [data])
    print(plot(nayer_series(a.nayer, a.budget, a.seeds), fastcae, a.out, a.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
