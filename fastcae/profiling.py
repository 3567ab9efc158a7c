"""Throughput and GPU reports for a distillation run: the loop's own counters plus NVML readings.

Two independent sources are combined: ``PhaseRecorder`` (what the loop did and when: synthesis /
distillation spans with image and step counts) and ``GPUSampler`` (``fastcae.gpu_sampler``: what the GPU did
meanwhile, read by nvidia-ml-py at ~10 Hz on a daemon thread). ``build_report`` joins them on
``time.perf_counter`` stamps, and ``write_report`` writes JSON + Markdown + PNG. Without NVML (no driver, CI,
CPU runs) nothing raises: the report keeps the throughput numbers and says in plain words why GPU metrics are
missing.

    with profile_session("runs/profile.json", meta={"config": asdict(cfg)}) as rec:
        with rec.phase("synthesis"):
            ...; rec.add(images=batch_size)
        with rec.phase("distillation"):
            ...; rec.add(images=batch_size, steps=1)
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .gpu_sampler import UNAVAILABLE_PREFIX, GPUSampler

__all__ = ["GPUSampler", "PhaseRecorder", "Span", "build_report", "collect_meta", "format_report_summary",
           "profile_session", "write_report"]

_MAX_TIMELINE_POINTS = 2000  # the JSON/plot timeline is strided to this; aggregates use every sample


# ---------------------------------------------------------------------------------------------------------
# The loop's own counters
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Span:
    """One timed phase: perf_counter start/end and what the loop produced in it."""

    phase: str
    start: float
    end: float
    images: int = 0
    steps: int = 0


class PhaseRecorder:
    """Records phase spans with the loop's counts, so throughput comes from what ran, not from estimates.

    fastcae uses "synthesis" (images = images synthesised) and "distillation" (images = student images
    processed = steps x batch size). Phases may repeat (one span per epoch); ``add`` counts into the innermost
    open phase.
    """

    def __init__(self):
        self.spans: list[Span] = []
        self._open: list[Span] = []
        self.report_paths: tuple[Path, Path, Path] | None = None  # set by profile_session on exit

    @contextmanager
    def phase(self, name: str):
        span = Span(name, time.perf_counter(), float("nan"))
        self._open.append(span)
        try:
            yield span
        finally:
            span.end = time.perf_counter()
            self._open.remove(span)
            self.spans.append(span)

    def add(self, images: int = 0, steps: int = 0) -> None:
        if not self._open:
            raise RuntimeError("PhaseRecorder.add() called outside any `with recorder.phase(...)` block")
        self._open[-1].images += int(images)
        self._open[-1].steps += int(steps)


# ---------------------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------------------
def _as_span(s) -> Span:
    return s if isinstance(s, Span) else Span(**s)


def _values(samples, key):
    return [s[key] for s in samples if s.get(key) is not None]


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def _per_1k(energy, images):
    return energy / images * 1000.0 if energy is not None and images else None


def _energy_intervals(samples):
    """Trapezoid pieces ``(t_mid, joules)`` between consecutive power samples of each GPU, in time order: the
    GPUs' energies add up."""
    pieces = []
    for gpu in dict.fromkeys(s.get("gpu") for s in samples):
        pts = sorted((s["t"], s["power_w"]) for s in samples if s.get("gpu") == gpu and s.get("power_w") is not None)
        pieces += [((t0 + t1) / 2, (p0 + p1) / 2 * (t1 - t0)) for (t0, p0), (t1, p1) in zip(pts, pts[1:])]
    return sorted(pieces)


def _gpu_stats(samples, energy):
    util, mem, power = _values(samples, "util_pct"), _values(samples, "mem_mib"), _values(samples, "power_w")
    return {
        "samples": len(samples),
        "util_mean_pct": _mean(util),
        "util_peak_pct": max(util) if util else None,
        "mem_peak_mib": max(mem) if mem else None,
        "power_mean_w": _mean(power),
        "energy_j": energy,
    }


def build_report(spans, samples, meta: dict | None = None, reason: str | None = None) -> dict:
    """Join phase spans and GPU samples into one JSON-ready dict.

    Per phase (spans of the same name summed): seconds, images, steps, images/s, steps/s; with samples also
    mean/peak utilisation, peak memory, mean power, energy (J) and J per 1,000 images. A sample belongs to the
    phase whose span [start, end) contains its stamp; for energy, each trapezoid piece between two consecutive
    power samples belongs to the phase containing its midpoint, so phase energies add up to the overall
    energy less the time between phases. Overall J per 1,000 images divides the whole run's energy by the
    images of all phases together. ``reason`` explains missing samples (``GPUSampler.reason``).
    """
    spans = sorted((_as_span(s) for s in spans), key=lambda s: s.start)
    samples = sorted((dict(s) for s in samples), key=lambda s: s["t"])
    have_gpu = bool(samples)
    pieces = _energy_intervals(samples) if have_gpu else []

    def inside(t, name):
        return any(s.phase == name and s.start <= t < s.end for s in spans)

    phases: dict[str, dict] = {}
    for name in dict.fromkeys(s.phase for s in spans):  # first-seen order
        own = [s for s in spans if s.phase == name]
        seconds = sum(s.end - s.start for s in own)
        images, steps = sum(s.images for s in own), sum(s.steps for s in own)
        entry = {
            "spans": len(own),
            "seconds": seconds,
            "images": images,
            "steps": steps,
            "images_per_s": images / seconds if seconds > 0 else None,
            "steps_per_s": steps / seconds if seconds > 0 else None,
        }
        if have_gpu:
            energy = sum(j for t, j in pieces if inside(t, name)) if pieces else None
            gpu = _gpu_stats([x for x in samples if inside(x["t"], name)], energy)
            gpu["energy_j_per_1k_images"] = _per_1k(energy, images)
            entry["gpu"] = gpu
        phases[name] = entry

    total_images = sum(p["images"] for p in phases.values())
    wall = (spans[-1].end - spans[0].start) if spans else 0.0
    report: dict = {
        "phases": phases,
        "overall": {"seconds": wall, "images": total_images,
                    "steps": sum(p["steps"] for p in phases.values())},
    }
    starts = ([spans[0].start] if spans else []) + ([samples[0]["t"]] if samples else [])
    t0 = min(starts) if starts else 0.0
    if have_gpu:
        energy = sum(j for _, j in pieces) if pieces else None
        overall = _gpu_stats(samples, energy)
        overall["energy_j_per_1k_images"] = _per_1k(energy, total_images)
        report["gpu_metrics"] = "available"
        report["overall"]["gpu"] = overall
        gpus = list(dict.fromkeys(x.get("gpu") for x in samples))
        if len(gpus) > 1:  # several GPUs sampled: the overall numbers are over all of them, and each has its own
            per_gpu = {}
            for gpu in gpus:
                own = [x for x in samples if x.get("gpu") == gpu]
                own_pieces = _energy_intervals(own)
                per_gpu[str(gpu)] = _gpu_stats(own, sum(j for _, j in own_pieces) if own_pieces else None)
            report["overall"]["per_gpu"] = per_gpu
    else:
        why = reason or "no GPU samples were recorded"
        report["gpu_metrics"] = "unavailable: " + why.removeprefix(UNAVAILABLE_PREFIX)
    stride = max(1, -(-len(samples) // _MAX_TIMELINE_POINTS))
    report["timeline"] = {
        "t0": t0,
        "spans": [{"phase": s.phase, "start": s.start - t0, "end": s.end - t0} for s in spans],
        "samples": [{**x, "t": x["t"] - t0} for x in samples[::stride]],
    }
    report["meta"] = dict(meta or {})
    report["meta"].setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return report


def collect_meta(meta: dict | None = None, sampler: GPUSampler | None = None) -> dict:
    """Versions, date and device for the report, so numbers stay comparable across machines and releases;
    the caller's ``meta`` (e.g. ``{"config": asdict(cfg)}``) wins over these defaults."""
    from .utils import versions

    out = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {**versions("nvidia-ml-py"), "nvidia_driver": sampler.driver_version if sampler else None},
        "device": (sampler.device_name if sampler and sampler.available else None) or "no NVIDIA GPU (NVML)",
        "host": platform.node(),
    }
    out.update(meta or {})
    return out


# ---------------------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------------------
def _fmt(x, digits=1):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _markdown(report: dict) -> str:
    meta = report.get("meta", {})
    lines = ["# fastcae throughput report", "",
             f"Date: {meta.get('date', 'n/a')}  ", f"Device: {meta.get('device', 'n/a')}  ",
             f"Compiled steps: {meta.get('compile_mode', 'n/a')}  ",
             "Fused ops: " + (", ".join(f"{op} {how}" for op, how in meta.get("kernels", {}).items()) or "n/a"), ""]
    gpu = report["gpu_metrics"] == "available"
    head = ["phase", "seconds", "images", "images/s", "steps/s"]
    if gpu:
        head += ["util mean %", "util peak %", "peak memory MiB", "J per 1,000 images"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = list(report["phases"].items()) + [("overall", report["overall"])]
    for name, p in rows:
        secs = p["seconds"]
        ips = p.get("images_per_s", p["images"] / secs if secs > 0 else None)
        sps = p.get("steps_per_s", p["steps"] / secs if secs > 0 else None)
        cells = [name, _fmt(secs, 2), f"{p['images']:,}", _fmt(ips), _fmt(sps, 2)]
        if gpu:
            g = p.get("gpu", {})
            cells += [_fmt(g.get("util_mean_pct")), _fmt(g.get("util_peak_pct")), _fmt(g.get("mem_peak_mib"), 0),
                      _fmt(g.get("energy_j_per_1k_images"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if gpu:
        lines.append(f"Energy over the run: {_fmt(report['overall']['gpu']['energy_j'])} J.")
        per_gpu = report["overall"].get("per_gpu")
        if per_gpu:
            lines += ["", f"The {len(per_gpu)} GPUs of the node (utilisation and memory above are per GPU, energy "
                      f"their sum):", "", "| GPU | util mean % | util peak % | peak memory MiB | energy J |",
                      "|---|---|---|---|---|"]
            lines += [f"| {g} | {_fmt(v['util_mean_pct'])} | {_fmt(v['util_peak_pct'])} | "
                      f"{_fmt(v['mem_peak_mib'], 0)} | {_fmt(v['energy_j'])} |" for g, v in per_gpu.items()]
    else:
        lines.append(f"GPU metrics were unavailable ({report['gpu_metrics'].removeprefix('unavailable: ')}); "
                     f"only the loop's own throughput is reported.")
    health = meta.get("health") or []
    if health:
        lines += ["", "Synthesis health per epoch (BN-statistics loss; how often the teacher labels a kept image as "
                  "the class it was made for; mean within-class pixel std of kept images):", "",
                  "| epoch | phase | BN loss | agreement % | diversity |", "|---|---|---|---|---|"]
        shown = health if len(health) <= 12 else health[:4] + health[-8:]
        for h in shown:
            agree = h.get("agreement")
            lines.append(f"| {h['epoch']} | {h.get('phase', '')} | {_fmt(h.get('g_bn'), 3)} | "
                         f"{_fmt(None if agree is None else 100 * agree)} | {_fmt(h.get('diversity'), 3)} |")
    return "\n".join(lines) + "\n"


def _plot(report: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    timeline = report["timeline"]
    if report["gpu_metrics"] == "available":
        fig = Figure(figsize=(9, 5))
        FigureCanvasAgg(fig)
        ax_u, ax_p = fig.subplots(2, 1, sharex=True)
        samples = timeline["samples"]
        gpus = list(dict.fromkeys(s.get("gpu") for s in samples))
        for ax, key, label in ((ax_u, "util_pct", "GPU utilisation (%)"), (ax_p, "power_w", "power (W)")):
            for i, gpu in enumerate(gpus):  # one line per GPU of the node
                pts = [(s["t"], s[key]) for s in samples if s.get("gpu") == gpu and s.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), lw=1, color="black" if len(gpus) == 1 else f"C{i}",
                            label=None if gpu is None else f"GPU {gpu}")
            ax.set_ylabel(label)
        if len(gpus) > 1:
            ax_p.legend(loc="upper right")
        colours, seen = {}, set()
        for s in timeline["spans"]:
            colour = colours.setdefault(s["phase"], f"C{len(colours)}")
            for ax in (ax_u, ax_p):
                ax.axvspan(s["start"], s["end"], color=colour, alpha=0.2,
                           label=s["phase"] if ax is ax_u and s["phase"] not in seen else None)
            seen.add(s["phase"])
        if seen:
            ax_u.legend(loc="upper right")
        ax_p.set_xlabel("seconds")
        ax_u.set_title(f"{report['meta'].get('device', 'GPU')}")
    else:
        fig = Figure(figsize=(6, 4))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        names = list(report["phases"])
        ax.bar(names, [report["phases"][n]["images_per_s"] or 0.0 for n in names],
               color=[f"C{i}" for i in range(len(names))])
        ax.set_ylabel("images / s")
        ax.set_title("throughput per phase (GPU metrics unavailable)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_report(report: dict, path_json) -> tuple[Path, Path, Path]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png`` side by side; return the three paths."""
    path_json = Path(path_json)
    if path_json.suffix != ".json":
        path_json = path_json.with_name(path_json.name + ".json")
    path_json.parent.mkdir(parents=True, exist_ok=True)
    path_md, path_png = path_json.with_suffix(".md"), path_json.with_suffix(".png")
    path_json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    path_md.write_text(_markdown(report))
    _plot(report, path_png)
    return path_json, path_md, path_png


def format_report_summary(path_json) -> str:
    """The Markdown summary written beside a report (``<name>.md``), with where the three files are."""
    path_json = Path(path_json)
    if path_json.suffix != ".json":
        path_json = path_json.with_name(path_json.name + ".json")
    md, png = path_json.with_suffix(".md"), path_json.with_suffix(".png")
    return f"{md.read_text()}\nreport: {path_json} (summary {md}, plot {png})"


@contextmanager
def profile_session(path, device_index: int | list[int] = 0, meta: dict | None = None, interval: float = 0.1):
    """Sample the GPU and record phases for the body, then write the report; yields the ``PhaseRecorder``.

    The report is written even when the body raises (a partial profile of a failed run is still useful);
    the paths are left on ``recorder.report_paths``.
    """
    recorder = PhaseRecorder()
    sampler = GPUSampler(device_index, interval).start()
    failed = False
    try:
        yield recorder
    except BaseException:
        failed = True
        raise
    finally:
        sampler.stop()
        report = build_report(recorder.spans, sampler.samples, collect_meta(meta, sampler), sampler.reason)
        if failed:
            try:
                recorder.report_paths = write_report(report, path)
            except Exception:  # noqa: BLE001  (never hide the body's own exception behind a reporting error)
                pass
        else:
            recorder.report_paths = write_report(report, path)
