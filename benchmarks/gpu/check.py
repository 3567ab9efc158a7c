"""The parts of ``benchmarks/gpu/run.sh`` that time things in Python: fused ops, the two steps, the summary.

    python -m benchmarks.gpu.check versions OUT/check.jsonl   # device, torch, triton, CUDA, date
    python -m benchmarks.gpu.check ops      OUT/check.jsonl   # fused op vs eager vs torch.compile, fwd+bwd
    python -m benchmarks.gpu.check steps    OUT/check.jsonl   # student / generator step: eager, compiled,
                                                              # CUDA graphs, in fp32 and bf16 (R34 -> R18)
    python -m benchmarks.gpu.check summary  OUT/check.jsonl   # ratios against the targets, GPU-hours

Every measurement is appended to the JSON-lines file as soon as it exists, so a part cut off by its time cap
keeps what it measured. Timings are CUDA-event medians after warm-up (compiles and CUDA-graph recording
happen in the warm-up). ``--smoke`` runs the same code at tiny shapes on the CPU (eager, and aot_eager for the
compiled column: no C++ builds): that is how the script itself is tested without a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

TARGETS = {  # issue 10's targets, printed with the measured values
    "bf16 student step vs fp32 eager": 1.8,
    "CUDA-graph student step vs eager": 1.5,
    "bn_stats_loss fwd+bwd vs bytes floor (at most)": 1.5,
    "logit_loss vs eager": 2.0,
    "supcon_loss vs eager": 2.0,
}


def _versions() -> dict:
    import platform

    from fastcae.utils import versions

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"date": time.strftime("%Y-%m-%d"), "device": gpu, **versions("triton"), "cuda": torch.version.cuda}


def _emit(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def _time(fn, warmup: int, rounds: int, device: str) -> float:
    """Median seconds of ``fn()`` (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(rounds):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


# --------------------------------------------------------------------------------------------------- ops
def part_ops(out: Path, smoke: bool) -> None:
    """Each fused op (forward + backward) against its eager reference and torch.compile of the reference,
    at CIFAR shapes, fp32 and bf16."""
    from fastcae import losses, ops

    device = "cpu" if smoke else "cuda"
    rounds, warmup = (3, 1) if smoke else (50, 5)
    B, C, S = (16, 10, 4) if smoke else (512, 100, 32)
    cases = []
    for dtype in (torch.float32, torch.bfloat16):
        t, s = torch.randn(B, C, device=device, dtype=dtype), torch.randn(B, C, device=device, dtype=dtype)
        y = torch.randint(0, C, (B,), device=device)
        cases.append(("logit_loss", dtype, lambda f, t=t, s=s, y=y: f(t, s, y, temperature=20.0, kd_weight=1.0,
                                                                     adv_weight=0.0, ce_weight=0.0), ("logits", s),
                      ops.logit_loss, losses.logit_loss, None))
        z = torch.nn.functional.normalize(torch.randn(B, 128, device=device), dim=1).to(dtype)
        lab = torch.randint(0, 10, (B,), device=device)
        cases.append(("supcon_loss", dtype, lambda f, z=z, lab=lab: f(z, lab, 0.1), ("z", z), ops.supcon_loss,
                      losses.supcon_loss, None))
        x = torch.randn(400 if not smoke else 8, 64, S, S, device=device, dtype=dtype)
        stats = [torch.randn(64, device=device), torch.rand(64, device=device) + 0.5, torch.zeros(64, device=device),
                 torch.ones(64, device=device), torch.zeros((), device=device)]
        floor = 3 * x.numel() * x.element_size()  # read x (forward), read x and write dx (backward)
        cases.append(("bn_stats_loss", dtype, lambda f, x=x, st=stats: f(x, *st)[0], ("x", x), ops.bn_stats_loss,
                      losses.bn_stats_loss, floor))
    for name, dtype, call, (_, leaf), fused, reference, floor in cases:
        leaf.requires_grad_(True)

        def step(f, call=call, leaf=leaf):
            leaf.grad = None
            call(f).float().backward()

        record = {"part": "ops", "op": name, "dtype": str(dtype).replace("torch.", ""), "shape": list(leaf.shape)}
        with ops.backend("reference"):
            record["eager_ms"] = 1e3 * _time(lambda: step(reference), warmup, rounds, device)
            compiled = torch.compile(reference, backend="aot_eager" if smoke else "inductor")
            try:
                record["compiled_ms"] = 1e3 * _time(lambda: step(compiled), warmup + 2, rounds, device)
            except Exception as err:  # noqa: BLE001 - recorded, the check goes on
                record["compiled_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        if not smoke:
            with ops.backend("triton"):
                record["fused_ms"] = 1e3 * _time(lambda: step(fused), warmup, rounds, device)
            record["fused_vs_eager"] = round(record["eager_ms"] / record["fused_ms"], 2)
            if floor is not None:
                record["floor_ms"] = 1e3 * floor / _peak_bandwidth()
                record["fused_vs_floor"] = round(record["fused_ms"] / record["floor_ms"], 2)
        leaf.requires_grad_(False)
        _emit(out, record)


def _peak_bandwidth() -> float:
    """Bytes per second of device memory (H100/H200 class: from the name; else measured by a large copy)."""
    name = torch.cuda.get_device_name(0)
    known = {"H200": 4.8e12, "H100 SXM": 3.35e12, "H100": 3.35e12, "A100": 2.0e12}
    for key, value in known.items():
        if key in name:
            return value
    x = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    seconds = _time(lambda: y.copy_(x), 3, 10, "cuda")
    return 2 * x.numel() / seconds


# ------------------------------------------------------------------------------------------------- steps
def part_steps(out: Path, smoke: bool, precisions=("fp32", "bf16"), backends=None, kernels=None) -> None:
    """The student step (batch 512) and the cae generator step (batch 400), ResNet-34 -> ResNet-18 at CIFAR
    shape, per backend and precision; whether CUDA graphs were really captured. ``kernels="reference"`` runs
    the compiled backends on the PyTorch references (traced and fused by inductor) instead of the fused
    Triton custom ops: which of the two makes the faster compiled step."""
    import contextlib

    from benchmarks.scales import CPU_SCALE, GPU_SCALE, build_run, kernels_for
    from fastcae import ops

    scale = CPU_SCALE if smoke else GPU_SCALE
    device = "cpu" if smoke else "cuda"
    if backends is None:
        backends = ("eager",) if smoke else ("eager", "compiled", "cudagraphs")  # smoke: no C++ builds on CPU
    rounds = 3 if smoke else 20
    for precision in precisions:
        for backend in backends:
            record = {"part": "steps", "backend": backend, "precision": precision, "scale": scale.name}
            if kernels:
                record["kernel_backend"] = kernels
            try:
                from torch._dynamo.utils import counters

                counters.clear()
                torch._dynamo.reset()  # each configuration compiles its own graphs
                with kernels_for(backend), (ops.backend(kernels) if kernels else contextlib.nullcontext()):
                    run = build_run("cae", backend, scale, precision=precision)
                    run._set_student_trainable(True)
                    images = torch.rand(scale.student_batch, *scale.image_shape, device=device)
                    labels = torch.randint(0, scale.num_classes, (scale.student_batch,), device=device)
                    record["student_ms"] = 1e3 * _time(
                        lambda: run.steps.student_step(run.optimizer, images, labels), 4, rounds, device)
                    synth = run.synth
                    run._set_student_trainable(False)
                    generator, optimizer, after = synth.step_parts()
                    generator.train()
                    generator.new_batch(synth.targets, synth.sources)
                    record["generator_ms"] = 1e3 * _time(
                        lambda: run.steps.generator_step(generator, optimizer, synth.targets, synth.sources,
                                                         run.cfg.adv_weight, after), 4, rounds, device)
                record["ran_as"] = run.effective_compile_mode
                if run.steps.fallback_error:
                    record["compile_fallback"] = run.steps.fallback_error
                if backend == "cudagraphs":
                    inductor = dict(counters.get("inductor", {}))
                    # only skips mean a graph ran without CUDA graphs; other cudagraph counters (inputs
                    # recorded, say) count what a capture did
                    record["cudagraph_counters"] = {k: v for k, v in inductor.items() if "cudagraph" in k}
                    record["cudagraphs_captured"] = (run.effective_compile_mode == "cudagraphs"
                                                     and not inductor.get("cudagraph_skips"))
                record["kernels"] = ops.kernel_report()
            except Exception as err:  # noqa: BLE001 - recorded, the next configuration still runs
                record["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
            _emit(out, record)


# ----------------------------------------------------------------------------------------------- summary
def part_summary(out: Path) -> int:
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    meta = next((r for r in records if r.get("part") == "versions"), {})
    print(f"# fastcae GPU check: {meta.get('device', '?')}, torch {meta.get('torch', '?')}, "
          f"triton {meta.get('triton', '?')}, {meta.get('date', '?')}")
    tests = next((r for r in records if r.get("part") == "tests"), None)
    print(f"kernel tests compiled on the GPU: {tests['summary'] if tests else 'not run (or cut off)'}")
    # the steps as distill runs them (fused ops where they work); those timed on forced reference kernels
    # (--kernels reference) are printed beside them under their own name
    steps = {(r["backend"] + ("" if r.get("kernel_backend", "auto") == "auto" else f"+{r['kernel_backend']}"),
              r["precision"]): r for r in records if r.get("part") == "steps" and "student_ms" in r}
    for r in records:
        if r.get("part") == "steps" and "error" in r:
            print(f"step {r['backend']} {r['precision']}: ERROR {r['error']}")
    measured = {}
    eager = steps.get(("eager", "fp32"))
    if eager:
        for (backend, precision), r in sorted(steps.items()):
            print(f"step {backend:<20} {precision}: student {r['student_ms']:.1f} ms, generator "
                  f"{r.get('generator_ms', float('nan')):.1f} ms, ran as {r.get('ran_as')}"
                  + (f", CUDA graphs captured: {r['cudagraphs_captured']}" if "cudagraphs_captured" in r else ""))
        best_bf16 = min((r["student_ms"] for (b, p), r in steps.items() if p == "bf16" and "+" not in b), default=None)
        if best_bf16:
            measured["bf16 student step vs fp32 eager"] = eager["student_ms"] / best_bf16
        graphs = steps.get(("cudagraphs", "fp32"))
        if graphs:
            measured["CUDA-graph student step vs eager"] = eager["student_ms"] / graphs["student_ms"]
    for r in records:
        if r.get("part") != "ops":
            continue
        print(f"op {r['op']:<14} {r['dtype']:<9}: eager {r['eager_ms']:.3f} ms, compiled "
              f"{r.get('compiled_ms', float('nan')):.3f} ms, fused {r.get('fused_ms', float('nan')):.3f} ms"
              + (f", floor {r['floor_ms']:.3f} ms" if "floor_ms" in r else ""))
        if r["dtype"] == "float32" and "fused_vs_eager" in r:
            if r["op"] in ("logit_loss", "supcon_loss"):
                measured[f"{r['op']} vs eager"] = r["fused_vs_eager"]
            if "fused_vs_floor" in r:
                measured["bn_stats_loss fwd+bwd vs bytes floor (at most)"] = r["fused_vs_floor"]
    print("\n| target | wanted | measured | met |\n|---|---|---|---|")
    for name, want in TARGETS.items():
        got = measured.get(name)
        ok = None if got is None else (got <= want if "at most" in name else got >= want)
        print(f"| {name} | {'<=' if 'at most' in name else '>='} {want} | "
              f"{'n/a' if got is None else f'{got:.2f}'} | {'n/a' if ok is None else ('yes' if ok else 'NO')} |")
    best = min(steps.values(), key=lambda r: r["student_ms"] + r.get("generator_ms", 0), default=None)
    if best and "generator_ms" in best:
        from fastcae.presets import make_config

        for dataset in ("cifar10", "cifar100"):
            c = make_config(preset=f"{dataset}-resnet34-resnet18", paradigm="cae")
            g, s = best["generator_ms"] / 1e3, best["student_ms"] / 1e3
            seconds = (c.warmup_epochs * c.warmup_synth_batches * c.generator_steps * g
                       + (c.epochs - c.warmup_epochs) * (c.synth_batches * c.generator_steps * g + c.student_steps * s))
            print(f"GPU-hours, {dataset} preset ({c.epochs} epochs), {best['backend']} {best['precision']}: "
                  f"{seconds / 3600:.2f}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=("versions", "ops", "steps", "summary"))
    p.add_argument("out", type=Path)
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: tests this script")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"),
                   help="steps: the precisions to time")
    p.add_argument("--backends", nargs="+", default=None, choices=("eager", "compiled", "cudagraphs"),
                   help="steps: the backends to time (default: all three on a GPU, eager in --smoke)")
    p.add_argument("--kernels", default=None, choices=("reference", "auto"),
                   help="steps: force this kernel backend (reference: compiled steps trace the PyTorch references)")
    args = p.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.part == "versions":
        _emit(args.out, {"part": "versions", **_versions()})
    elif args.part == "ops":
        part_ops(args.out, args.smoke)
    elif args.part == "steps":
        part_steps(args.out, args.smoke, args.precisions, args.backends, args.kernels)
    else:
        return part_summary(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
