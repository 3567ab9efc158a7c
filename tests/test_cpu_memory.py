"""The CPU allocator setting (fastcae.cpu_memory): applied once, left alone where the user chose, harmless
where there is no glibc; and distill() applies it on a CPU unless told not to."""

import ctypes.util
import platform

import pytest

from fastcae import cpu_memory
from fastcae.config import DistillConfig


@pytest.fixture
def fresh(monkeypatch):
    """Each test sees a process in which nothing was applied yet, and no malloc settings in its environment."""
    monkeypatch.setattr(cpu_memory, "_state", None)
    for name in (*cpu_memory.USER_SETTINGS, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class FakeLibc:
    def __init__(self, accepts=True):
        self.calls, self.accepts = [], accepts

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return int(self.accepts)


def test_both_thresholds_are_raised_once(fresh):
    libc = FakeLibc()
    fresh.setattr(cpu_memory, "_glibc", lambda: libc)
    assert cpu_memory.keep_freed_memory() == "kept"
    assert cpu_memory.keep_freed_memory() == "kept"  # a second run in the process changes nothing
    assert libc.calls == [(cpu_memory.M_MMAP_THRESHOLD, 1 << 30), (cpu_memory.M_TRIM_THRESHOLD, (1 << 31) - 1)]


@pytest.mark.parametrize("env", [("MALLOC_MMAP_THRESHOLD_", "131072"), ("MALLOC_TRIM_THRESHOLD_", "0"),
                                 ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")])
def test_the_users_malloc_settings_stand(fresh, env):
    libc = FakeLibc()
    fresh.setattr(cpu_memory, "_glibc", lambda: libc)
    fresh.setenv(*env)
    assert cpu_memory.keep_freed_memory() == "user" and libc.calls == []


def test_no_glibc_or_a_refusal_is_not_an_error(fresh):
    fresh.setattr(cpu_memory, "_glibc", lambda: None)
    assert cpu_memory.keep_freed_memory() == "unavailable"
    fresh.setattr(cpu_memory, "_state", None)
    fresh.setattr(cpu_memory, "_glibc", lambda: FakeLibc(accepts=False))
    assert cpu_memory.keep_freed_memory() == "unavailable"


@pytest.mark.skipif(platform.system() != "Linux" or "libc.so.6" not in (ctypes.util.find_library("c") or ""),
                    reason="glibc on Linux only")
def test_the_real_glibc_takes_the_settings(fresh):
    assert cpu_memory._glibc() is not None
    assert cpu_memory.keep_freed_memory() == "kept"


@pytest.mark.parametrize("given, applied", [(None, True), (False, False), (True, True)])
def test_distill_applies_it_on_a_cpu_unless_told_not_to(fresh, given, applied):
    from fastcae import distill
    from tests.helpers import tiny_classifier

    calls = []
    fresh.setattr(cpu_memory, "keep_freed_memory", lambda: calls.append(1) or "kept")
    result = distill(tiny_classifier(), tiny_classifier(), [f"c{i}" for i in range(5)], image_shape=(1, 8, 8),
                     mean=(0.5,), std=(0.25,), epochs=1, warmup_epochs=0, student_steps=1, synth_batch_size=10,
                     student_batch_size=10, progress=False, device="cpu", keep_cpu_memory=given)
    assert result.config.keep_cpu_memory is applied and len(calls) == int(applied)
    assert DistillConfig().keep_cpu_memory is None  # auto until a run resolves it
