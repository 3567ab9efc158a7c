"""Accuracy on real data: a data-free student of the digits teacher, fixed seed, short budget.

The student never sees a digit: only generator images. The held-out split scores it, far above chance and
above the noise-input KD baseline with the same number of student steps.
"""

import pytest
import torch

from fastcae import distill
from fastcae.apps.data import load_digits
from fastcae.apps.demo import digits_teacher, noise_kd_baseline
from fastcae.datasets import DIGIT_NAMES
from fastcae.evaluate import accuracy
from fastcae.models import create_model


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    train, test = load_digits(image_size=16)
    mean, std = train.channel_stats()
    teacher, _ = digits_teacher(train, test, mean, std, 16, progress=False, use_cache=False)
    return train, test, mean, std, teacher


def test_teacher_is_accurate(digits):
    _, test, mean, std, teacher = digits
    assert accuracy(teacher, test.images, test.labels, mean, std) >= 0.98


def test_data_free_student_beats_chance_and_the_noise_baseline(digits):
    train, test, mean, std, teacher = digits
    torch.manual_seed(0)
    student = create_model("digits_student", num_classes=10, in_chans=1)
    result = distill(teacher, student, DIGIT_NAMES, image_shape=(1, 16, 16), mean=mean, std=std, preset="digits",
                     epochs=4, device="cpu", seed=0, progress=False)
    student_acc = accuracy(result.student, test.images, test.labels, mean, std)
    steps = sum(h.get("student_steps", 0) for h in result.history)
    baseline = noise_kd_baseline(teacher, create_model("digits_student", num_classes=10, in_chans=1), mean, std,
                                 steps=steps, batch_size=128, temperature=4.0, lr=0.05, image_shape=(1, 16, 16))
    baseline_acc = accuracy(baseline, test.images, test.labels, mean, std)
    print(f"student {student_acc:.3f}, noise baseline {baseline_acc:.3f}, {steps} student steps")
    assert student_acc >= 0.80, f"data-free student only reached {student_acc:.1%}"
    assert student_acc >= baseline_acc + 0.40, f"student {student_acc:.1%} vs noise baseline {baseline_acc:.1%}"
