"""fastcae.profiling: aggregation on synthetic spans/samples, the writers; fastcae.gpu_sampler: the no-driver
path, a fake NVML."""

import json
import sys
import time
import types

import pytest

from fastcae.gpu_sampler import GPUSampler
from fastcae.profiling import PhaseRecorder, Span, build_report, profile_session, write_report


def _samples(t_from, t_to, dt=0.1, power=100.0, util=50.0, mem=1000.0, peak_at=None, peak_mem=None):
    out, n = [], round((t_to - t_from) / dt)
    for i in range(n + 1):
        t = t_from + i * dt
        m = peak_mem if peak_at is not None and abs(t - peak_at) < 1e-9 else mem
        out.append({"t": t, "util_pct": util, "mem_mib": m, "power_w": power, "sm_mhz": 1500.0, "temp_c": 60.0})
    return out


SPANS = [Span("synthesis", 0.0, 1.0, images=512, steps=0),
         Span("distillation", 1.0, 2.0, images=2048, steps=8)]


def test_throughput_energy_and_phase_assignment():
    samples = _samples(0.0, 1.0, util=90.0)[:-1] + _samples(1.0, 2.0, util=30.0, peak_at=1.5, peak_mem=4096.0)
    r = build_report(SPANS, samples, {"config": {"epochs": 1}})
    syn, dis = r["phases"]["synthesis"], r["phases"]["distillation"]
    assert syn["seconds"] == pytest.approx(1.0) and syn["images_per_s"] == pytest.approx(512.0)
    assert dis["images_per_s"] == pytest.approx(2048.0) and dis["steps_per_s"] == pytest.approx(8.0)
    assert r["gpu_metrics"] == "available"
    # constant 100 W for 2 s -> 200 J by trapezoid; half in each phase
    assert r["overall"]["gpu"]["energy_j"] == pytest.approx(200.0)
    assert syn["gpu"]["energy_j"] == pytest.approx(100.0) and dis["gpu"]["energy_j"] == pytest.approx(100.0)
    assert syn["gpu"]["energy_j_per_1k_images"] == pytest.approx(100.0 / 512 * 1000)
    assert dis["gpu"]["energy_j_per_1k_images"] == pytest.approx(100.0 / 2048 * 1000)
    assert r["overall"]["gpu"]["energy_j_per_1k_images"] == pytest.approx(200.0 / 2560 * 1000)
    # samples go to the phase whose span holds their stamp: utilisation differs per phase
    assert syn["gpu"]["util_mean_pct"] == pytest.approx(90.0) and syn["gpu"]["samples"] == 10
    assert dis["gpu"]["util_mean_pct"] == pytest.approx(30.0) and dis["gpu"]["util_peak_pct"] == 30.0
    assert dis["gpu"]["mem_peak_mib"] == 4096.0 and syn["gpu"]["mem_peak_mib"] == 1000.0
    assert r["overall"]["gpu"]["mem_peak_mib"] == 4096.0 and r["overall"]["gpu"]["util_peak_pct"] == 90.0
    assert r["meta"]["config"] == {"epochs": 1} and "date" in r["meta"]


def test_repeated_phases_sum_and_no_samples_reason():
    spans = [Span("synthesis", 0.0, 0.5, images=100), Span("synthesis", 1.0, 1.5, images=100),
             {"phase": "distillation", "start": 0.5, "end": 1.0, "images": 64, "steps": 2}]
    r = build_report(spans, [], {}, reason="GPU metrics unavailable: NVML could not be initialised (x)")
    assert r["phases"]["synthesis"]["seconds"] == pytest.approx(1.0)
    assert r["phases"]["synthesis"]["images_per_s"] == pytest.approx(200.0)
    assert "gpu" not in r["phases"]["synthesis"] and "gpu" not in r["overall"]
    assert r["gpu_metrics"] == "unavailable: NVML could not be initialised (x)"
    json.dumps(r)  # JSON-ready


def test_phase_recorder_counts_into_open_phase():
    rec = PhaseRecorder()
    with rec.phase("synthesis"):
        rec.add(images=256)
        rec.add(images=256)
    with rec.phase("distillation"):
        rec.add(images=128, steps=1)
    (s, d) = rec.spans
    assert (s.phase, s.images, s.steps) == ("synthesis", 512, 0)
    assert (d.phase, d.images, d.steps) == ("distillation", 128, 1)
    assert s.start <= s.end <= d.start <= d.end
    with pytest.raises(RuntimeError):
        rec.add(images=1)


def test_absent_driver_does_not_raise():
    sampler = GPUSampler()
    sampler.start()
    sampler.stop()
    assert sampler.available is False
    assert sampler.reason.startswith("GPU metrics unavailable") and "NVML" in sampler.reason
    assert sampler.samples == []


def test_missing_pynvml_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with GPUSampler() as sampler:
        pass
    assert sampler.available is False and "pynvml" in sampler.reason


def _fake_pynvml(fail_handle=False):
    nv = types.ModuleType("pynvml")
    nv.calls = {"init": 0, "shutdown": 0}

    class NVMLError(Exception):
        pass

    nv.NVMLError = NVMLError
    nv.NVML_CLOCK_SM, nv.NVML_TEMPERATURE_GPU = 1, 0

    def init():
        nv.calls["init"] += 1

    def shutdown():
        nv.calls["shutdown"] += 1

    def handle(i):
        if fail_handle:
            raise NVMLError("Invalid Argument")
        return ("gpu", i)

    nv.nvmlInit, nv.nvmlShutdown, nv.nvmlDeviceGetHandleByIndex = init, shutdown, handle
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87, memory=40)
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30)
    nv.nvmlDeviceGetPowerUsage = lambda h: 250_000
    nv.nvmlDeviceGetClockInfo = lambda h, kind: 1980 if kind == 1 else 0
    nv.nvmlDeviceGetTemperature = lambda h, kind: 55
    nv.nvmlDeviceGetName = lambda h: b"Fake H100"
    nv.nvmlSystemGetDriverVersion = lambda: "999.1"
    return nv


def test_fake_nvml_sampler_thread(monkeypatch):
    nv = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    with GPUSampler(interval=0.05) as sampler:
        time.sleep(0.3)
    assert sampler.available and sampler.reason is None and sampler.device_name == "Fake H100"
    assert nv.calls == {"init": 1, "shutdown": 1}
    samples = sampler.samples
    assert len(samples) >= 3
    assert samples[0] == {"t": samples[0]["t"], "util_pct": 87.0, "mem_mib": 3072.0, "power_w": 250.0,
                          "sm_mhz": 1980.0, "temp_c": 55.0}
    assert all(a["t"] < b["t"] for a, b in zip(samples, samples[1:]))
    n = len(samples)
    time.sleep(0.15)
    assert len(sampler.samples) == n  # thread really stopped


def test_fake_nvml_bad_index_shuts_down(monkeypatch):
    nv = _fake_pynvml(fail_handle=True)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    sampler = GPUSampler(device_index=3).start()
    sampler.stop()
    assert not sampler.available and "index 3" in sampler.reason
    assert nv.calls == {"init": 1, "shutdown": 1}


def test_writers_with_samples(tmp_path):
    samples = _samples(0.0, 2.0)
    paths = write_report(build_report(SPANS, samples, {"device": "Fake"}), tmp_path / "out" / "profile.json")
    j, md, png = paths
    assert [p.suffix for p in paths] == [".json", ".md", ".png"] and all(p.exists() for p in paths)
    assert json.loads(j.read_text())["overall"]["gpu"]["energy_j"] == pytest.approx(200.0)
    text = md.read_text()
    assert "| synthesis |" in text and "J per 1,000 images" in text and "unavailable" not in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_session_without_gpu_writes_unavailable(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with profile_session(tmp_path / "run.json", meta={"config": {"paradigm": "cae"}}) as rec:
        with rec.phase("synthesis"):
            time.sleep(0.01)
            rec.add(images=64)
        with rec.phase("distillation"):
            time.sleep(0.01)
            rec.add(images=32, steps=1)
    j, md, png = rec.report_paths
    report = json.loads(j.read_text())
    assert report["gpu_metrics"].startswith("unavailable: ") and "pynvml" in report["gpu_metrics"]
    assert report["meta"]["config"] == {"paradigm": "cae"} and report["meta"]["versions"]["torch"]
    assert report["phases"]["synthesis"]["images"] == 64
    assert "GPU metrics were unavailable" in md.read_text()
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_unsupported_reading_is_none(monkeypatch):
    nv = _fake_pynvml()

    def no_power(h):
        raise nv.NVMLError("Not Supported")

    nv.nvmlDeviceGetPowerUsage = no_power
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    sampler = GPUSampler().start()
    sampler.stop()
    assert sampler.samples and sampler.samples[0]["power_w"] is None and sampler.samples[0]["util_pct"] == 87.0
    r = build_report([Span("synthesis", 0.0, 1e12, images=10)], sampler.samples, {})
    assert r["overall"]["gpu"]["energy_j"] is None and r["phases"]["synthesis"]["gpu"]["util_peak_pct"] == 87.0


def test_every_gpu_of_the_node_is_sampled_and_their_energies_add_up(monkeypatch, tmp_path):
    """A torchrun job's rank 0 samples the GPUs of all its node's processes: each sample names its GPU, the
    overall energy is the sum of the GPUs', and the report has a line per GPU."""
    nv = _fake_pynvml()
    nv.nvmlDeviceGetPowerUsage = lambda h: 100_000 * (h[1] + 1)  # GPU 0 draws 100 W, GPU 1 200 W
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    sampler = GPUSampler(device_index=[0, 1]).start()
    sampler.stop()
    assert sampler.device_name == "2 x Fake H100"
    assert [(x["gpu"], x["power_w"]) for x in sampler.samples[:2]] == [(0, 100.0), (1, 200.0)]

    samples = [{"t": t, "gpu": gpu, "util_pct": 20.0 + 60 * gpu, "mem_mib": 1000.0 * (gpu + 1),
                "power_w": 100.0 * (gpu + 1)} for t in (0.0, 1.0, 2.0) for gpu in (0, 1)]
    report = build_report([Span("synthesis", 0.0, 2.5, images=100)], samples, {"device": "x"})
    assert report["overall"]["gpu"]["energy_j"] == pytest.approx(2 * 100 + 2 * 200)  # 2 s at 100 W and 200 W
    assert report["overall"]["gpu"]["util_mean_pct"] == pytest.approx(50.0)
    assert {g: v["energy_j"] for g, v in report["overall"]["per_gpu"].items()} == pytest.approx({"0": 200.0,
                                                                                                 "1": 400.0})
    _, md, png = write_report(report, tmp_path / "profile.json")
    assert "| 1 | 80.0 | 80.0 | 2,000 | 400.0 |" in md.read_text() and png.exists()


def test_the_node_gpus_are_one_per_local_process(monkeypatch):
    import torch

    from fastcae.distributed import node_gpus

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert node_gpus(torch.device("cuda:3")) == [3] and node_gpus(torch.device("cpu")) == [0]
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert node_gpus(torch.device("cuda:5")) == list(range(8))
