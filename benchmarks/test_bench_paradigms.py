"""The paradigm question: what does changing the generator paradigm buy? ``cae`` against ``nayer`` and ``fast``.

1. ``test_synthesis_batch``: one synthesis batch (the paradigm's own generator steps per batch: cae 10,
   nayer 30, fast 5, and its per-batch work: NAYER's noisy-layer re-draw and new Adam, Fast's clone and
   meta step), timed per backend. ``extra_info["ms_per_kept_image"]`` is the synthesis cost of each image
   the pool keeps. CPU: the digits shape; GPU: CIFAR scale (ResNet-34 teacher, ResNet-18 student).
2. ``test_time_to_accuracy``: a whole distillation of the digits teacher (trained, or loaded from the
   demo's cache) with the digits preset and each paradigm's own generator steps, at an equal wall-time
   budget. Records the training seconds until the student first reaches ``TARGET`` accuracy on the held-out
   digits (evaluation time excluded), and the accuracy at the end of the budget. One round per paradigm:
   it is a run, not a micro-benchmark; accuracy readings at one seed swing by a point or two.

Ratios (cae vs nayer, cae vs fast) come from one run: ``python benchmarks/summarize.py <results.json>``.
Run: ``pytest benchmarks/test_bench_paradigms.py --benchmark-only``.
"""

import math

import pytest
import torch

from benchmarks.scales import DEVICE, SCALE, backend_params, build_run, kernels_for, sync
from fastcae import distill
from fastcae.apps.data import load_digits
from fastcae.apps.demo import digits_teacher
from fastcae.config import DEFAULT_G_STEPS
from fastcae.datasets import DIGIT_NAMES
from fastcae.models import create_model
from fastcae.presets import get_preset
from fastcae.synthesis.embeddings import EncoderUnavailable, class_embeddings

PARADIGMS = ["cae", "nayer", "fast"]
ROUNDS = 10 if DEVICE == "cuda" else 3
TARGET = 0.95  # held-out digits accuracy (the teacher scores 99.8%)
BUDGET_S = 60.0  # wall-time budget per paradigm (seconds of training)


@pytest.mark.parametrize("backend", backend_params(["eager", "compiled", "cudagraphs"]))
@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_synthesis_batch(benchmark, paradigm, backend):
    with kernels_for(backend):
        run = build_run(paradigm, backend)
        run._set_student_trainable(False)
        adv = run.cfg.adv_weight

        def batch():
            out = run.synth.synthesize(adv)
            sync()
            return out

        benchmark.group = f"synthesis batch {SCALE.name}"
        benchmark.pedantic(batch, rounds=ROUNDS, warmup_rounds=2, iterations=1)
    steps = DEFAULT_G_STEPS[paradigm]
    benchmark.extra_info.update(scale=SCALE.name, paradigm=paradigm, backend=backend, generator_steps=steps,
                                kept_images=SCALE.synth_batch, compile=run.effective_compile_mode)
    if benchmark.stats:
        median = benchmark.stats.stats.median
        benchmark.extra_info["ms_per_kept_image"] = round(1e3 * median / SCALE.synth_batch, 4)
        benchmark.extra_info["ms_per_generator_step"] = round(1e3 * median / steps, 3)


@pytest.fixture(scope="module")
def digits():
    train, test = load_digits(image_size=16, seed=0)
    mean, std = train.channel_stats()
    teacher, _ = digits_teacher(train, test, mean, std, 16, seed=0, device=DEVICE, progress=False)
    try:  # the demo's MiniLM embeddings; an image without the bundled encoder (the GPU one) gets random ones
        prompt = get_preset("digits").config["prompt"]
        embeddings, encoder = class_embeddings(DIGIT_NAMES, encoder="minilm", prompt=prompt), "minilm"
    except EncoderUnavailable:
        embeddings, encoder = class_embeddings(DIGIT_NAMES, encoder="random"), "random"
    return teacher, test, mean, std, embeddings, encoder


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_time_to_accuracy(benchmark, digits, paradigm):
    teacher, test, mean, std, embeddings, encoder = digits

    def distil():
        torch.manual_seed(0)
        student = create_model("digits_student", num_classes=10, in_chans=1)
        return distill(teacher, student, DIGIT_NAMES, image_shape=tuple(test.images.shape[1:]), mean=mean, std=std,
                       preset="digits", paradigm=paradigm, g_steps=None, eval_data=(test.images, test.labels),
                       device=DEVICE, seed=0, max_seconds=BUDGET_S, progress=False, text_encoder=embeddings)

    benchmark.group = "time to accuracy (digits)"
    result = benchmark.pedantic(distil, rounds=1, iterations=1)
    reached = [h["seconds"] for h in result.history if (h.get("accuracy") or 0) >= TARGET]
    benchmark.extra_info.update(
        paradigm=paradigm, generator_steps=DEFAULT_G_STEPS[paradigm], target=TARGET, budget_s=BUDGET_S,
        text_encoder=encoder,
        seconds_to_target=reached[0] if reached else None,
        final_accuracy=result.accuracy, epochs=len(result.history),
        images_synthesized=result.history[-1]["images_synthesized"], compile=result.compile_mode,
        accuracy_curve=[(round(h["seconds"], 2), h["accuracy"]) for h in result.history],
    )
    assert result.accuracy is not None and math.isfinite(result.accuracy)
