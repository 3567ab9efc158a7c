"""Markdown tables, with the ratios the docs quote (docs/performance.md), from one pytest-benchmark JSON file.

    python benchmarks/summarize.py benchmarks/results/<device>-<date>.json

Every ratio is between medians of the same file (one run, one machine), never across files.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def _median_ms(bench: dict) -> float:
    return bench["stats"]["median"] * 1e3


def _param(bench: dict, name: str):
    return (bench.get("params") or {}).get(name)


def _table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def _ratio(base: float | None, value: float | None) -> str:
    return f"{base / value:.2f}x" if base and value else "n/a"


def steps_section(benches: list[dict]) -> list[str]:
    gen = [b for b in benches if b["name"].startswith("test_generator_step[")]
    stu = [b for b in benches if b["name"].startswith("test_student_step[")]
    if not gen and not stu:
        return []
    lines = ["### Steps (median ms per step; speed-up over eager in brackets)", ""]
    by = defaultdict(dict)
    for b in gen:
        by[f"generator step, {_param(b, 'paradigm')}"][_param(b, "backend")] = _median_ms(b)
    for b in stu:
        by["student step"][_param(b, "backend")] = _median_ms(b)
    backends = [k for k in ("eager", "fused", "compiled", "cudagraphs") if any(k in v for v in by.values())]
    rows = []
    for step, times in by.items():
        eager = times.get("eager")
        row = [step]
        for k in backends:
            t = times.get(k)
            row.append("skipped" if t is None else f"{t:.2f}" + ("" if k == "eager" else f" ({_ratio(eager, t)})"))
        rows.append(row)
    return lines + _table(["step"] + backends, rows)


def paradigm_section(benches: list[dict]) -> list[str]:
    synth = [b for b in benches if b["name"].startswith("test_synthesis_batch[")]
    tta = [b for b in benches if b["name"].startswith("test_time_to_accuracy[")]
    lines = []
    if synth:
        lines += ["### Paradigms: synthesis cost per kept image (ms; nayer or fast over cae in brackets)", ""]
        cost = defaultdict(dict)
        for b in synth:
            cost[_param(b, "backend")][_param(b, "paradigm")] = b["extra_info"].get("ms_per_kept_image")
        rows = []
        for backend, per in cost.items():
            cae = per.get("cae")
            rows.append([backend] + [
                "n/a" if per.get(p) is None else f"{per[p]:.3f}" + ("" if p == "cae" else f" ({_ratio(per[p], cae)})")
                for p in ("cae", "nayer", "fast")])
        lines += _table(["backend", "cae", "nayer", "fast"], rows)
    if tta:
        target = tta[0]["extra_info"].get("target")
        budget = tta[0]["extra_info"].get("budget_s")
        lines += [f"### Paradigms: digits teacher, time to {100 * target:.0f}% student accuracy "
                  f"(budget {budget:.0f} s each)", ""]
        info = {_param(b, "paradigm"): b["extra_info"] for b in tta}
        cae_t = (info.get("cae") or {}).get("seconds_to_target")
        rows = []
        for p, e in info.items():
            t = e.get("seconds_to_target")
            rows.append([p, e.get("generator_steps"), "not reached" if t is None else f"{t:.1f}",
                         "" if p == "cae" else _ratio(t, cae_t),
                         f"{100 * e['final_accuracy']:.1f}%" if e.get("final_accuracy") is not None else "n/a",
                         e.get("images_synthesized"), e.get("epochs")])
        lines += _table(["paradigm", "generator steps per batch", "seconds to target", "cae faster by",
                         "accuracy at budget", "images synthesised", "epochs"], rows)
    return lines


def pool_section(benches: list[dict]) -> list[str]:
    pool = [b for b in benches if b["name"].startswith("test_pool_epoch[")]
    if not pool:
        return []
    rates = {_param(b, "store"): b["extra_info"].get("images_per_s") for b in pool}
    base = rates.get("png-workers0")
    rows = [[s, f"{r:,.0f}", _ratio(r, base) if s != "png-workers0" else ""] for s, r in rates.items() if r]
    return ["### Pool: images per second fed to the student (over the PNG directory, 0 workers)", ""] + _table(
        ["store", "images/s", "speed-up"], rows)


def epoch_section(benches: list[dict]) -> list[str]:
    ep = [b for b in benches if b["name"].startswith("test_epoch[")]
    if not ep:
        return []
    times = {_param(b, "design"): _median_ms(b) for b in ep}
    prior = times.get("prior")
    e0 = ep[0]["extra_info"]
    rows = [[d, f"{t / 1e3:.2f}", "" if d == "prior" else _ratio(prior, t)] for d, t in times.items()]
    title = (f"### One epoch ({e0['synth_batches']} synthesis batches of {e0['synth_batch']}, "
             f"{e0['student_steps']} student steps of {e0['student_batch']}), against the prior design")
    return [title, ""] + _table(["design", "seconds", "faster than prior"], rows)


def hours_section(benches: list[dict]) -> list[str]:
    """GPU-hours of the CIFAR presets from the measured step times (docs/reproducing.md, section 3): only
    for the CIFAR-scale steps (ResNet-34 -> ResNet-18, batches of 400 and 512), where they apply."""
    step = {}
    for b in benches:
        info = b["extra_info"]
        if info.get("scale") != "cifar32":
            continue
        backend = _param(b, "backend")
        if b["name"].startswith("test_generator_step[") and _param(b, "paradigm") == "cae":
            step.setdefault(backend, {})["g"] = b["stats"]["median"]
        elif b["name"].startswith("test_student_step["):
            step.setdefault(backend, {})["s"] = b["stats"]["median"]
    from fastcae.presets import make_config  # the presets' own schedules, so the estimate follows them

    rows = []
    for backend, t in step.items():
        if "g" not in t or "s" not in t:
            continue
        for dataset in ("cifar10", "cifar100"):
            c = make_config(preset=f"{dataset}-resnet34-resnet18", paradigm="cae")
            warm, post, g = c.warmup_epochs, c.epochs - c.warmup_epochs, c.generator_steps
            seconds = (warm * c.warmup_synth_batches * g * t["g"]
                       + post * (c.synth_batches * g * t["g"] + c.student_steps * t["s"]))
            rows.append([f"{dataset} ({c.epochs} epochs)", backend, f"{1e3 * t['g']:.1f}", f"{1e3 * t['s']:.1f}",
                         f"{seconds / 3600:.2f}"])
    if not rows:
        return []
    return ["### Estimated distillation time, cae, ResNet-34 -> ResNet-18 presets (from the step medians)", ""] + (
        _table(["dataset", "backend", "ms per generator step", "ms per student step", "GPU-hours"], rows))


def deploy_section(benches: list[dict]) -> list[str]:
    inf = [b for b in benches if b["name"].startswith("test_inference[")]
    if not inf:
        return []
    info = defaultdict(dict)  # (pair, role) -> what the network is and costs
    for b in inf:
        e = b["extra_info"]
        key = (e["pair"], e["role"])
        info[key].update(model=e["model"], params=e["params"], state=e["state_dict_bytes"], pt2=e["pt2_bytes"])
        info[key][(e["form"], e["batch"])] = _median_ms(b)
    cells = [(form, batch) for form in ("eager", "compiled", "exported") for batch in (1, 64)]
    rows = []
    for (pair, role), v in sorted(info.items(), key=lambda kv: (kv[0][0], kv[0][1] != "teacher")):
        sizes = f"{v['state'] / 1e6:.1f} / " + (f"{v['pt2'] / 1e6:.1f}" if v["pt2"] else "n/a")  # no package
        row = [pair, f"{role}: {v['model']}", f"{v['params'] / 1e6:.2f} M", sizes]
        row += [f"{v[c]:.2f}" if c in v else "n/a" for c in cells]
        teacher = info.get((pair, "teacher"), {})
        if role == "student" and ("exported", 64) in v and ("exported", 64) in teacher:
            row.append(_ratio(teacher[("exported", 64)], v[("exported", 64)]))
        else:
            row.append("")
        rows.append(row)
    head = ["pair", "network", "params", "MB (weights / .pt2)"] + [f"{f} b{n} ms" for f, n in cells]
    return (["### Inference: teacher against student (median ms per batch of images in [0, 1])", ""]
            + _table(head + ["student speed-up (exported, b64)"], rows))


def distributed_section(benches: list[dict]) -> list[str]:
    runs = sorted((b["extra_info"] for b in benches if b["name"].startswith("test_data_parallel_throughput[")),
                  key=lambda e: e["processes"])
    if not runs:
        return []
    rows = [[e["processes"], e["threads_per_process"], f"{e['synthesis_images_per_s']:.0f}",
             f"{e.get('synthesis_scaling_efficiency', 1.0):.2f}", f"{e['student_images_per_s']:.0f}",
             f"{e.get('student_scaling_efficiency', 1.0):.2f}", e["compile_mode"]] for e in runs]
    head = ["processes", "threads each", "synthesis images/s", "efficiency", "student images/s", "efficiency",
            "steps"]
    return ([f"### Data-parallel scaling (torchrun, {runs[0]['scale']} scale, same global batches)", ""]
            + _table(head, rows))


def summarize(path: str) -> str:
    data = json.load(open(path))
    machine = data.get("machine_info", {})
    benches = data["benchmarks"]
    cpu = (machine.get("cpu") or {}).get("brand_raw") or machine.get("machine", "")
    head = [f"Machine: {machine.get('cuda_device', 'none')} GPU, {machine.get('cpu_threads')} CPU threads "
            f"({cpu}); torch {machine.get('torch')}, "
            f"triton {machine.get('triton')}, Python {machine.get('python')}; {machine.get('date')}.", ""]
    body = (steps_section(benches) + hours_section(benches) + paradigm_section(benches) + pool_section(benches)
            + epoch_section(benches) + deploy_section(benches) + distributed_section(benches))
    return "\n".join(head + body)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(summarize(sys.argv[1]))
