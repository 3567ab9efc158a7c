"""benchmarks/summarize.py: the docs' tables and ratios come from one results file, computed right."""

import importlib.util
import json
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("summarize", Path(__file__).parents[1] / "benchmarks" / "summarize.py")
summarize = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(summarize)


def _bench(name, median_s, params, **extra):
    return {"name": name, "params": params, "stats": {"median": median_s}, "extra_info": extra}


def test_tables_and_ratios(tmp_path):
    data = {
        "machine_info": {"cuda_device": "none", "cpu_threads": 2, "torch": "2.14.1", "triton": "3.8.0",
                         "python": "3.11", "date": "2026-11-24"},
        "benchmarks": [
            _bench("test_student_step[eager]", 0.010, {"backend": "eager"}),
            _bench("test_student_step[compiled]", 0.004, {"backend": "compiled"}),
            _bench("test_synthesis_batch[cae-eager]", 0.3, {"paradigm": "cae", "backend": "eager"},
                   ms_per_kept_image=2.0),
            _bench("test_synthesis_batch[nayer-eager]", 0.9, {"paradigm": "nayer", "backend": "eager"},
                   ms_per_kept_image=6.0),
            _bench("test_time_to_accuracy[cae]", 60, {"paradigm": "cae"}, target=0.95, budget_s=60,
                   seconds_to_target=10.0, final_accuracy=0.99, generator_steps=10, images_synthesized=7000,
                   epochs=27),
            _bench("test_time_to_accuracy[nayer]", 60, {"paradigm": "nayer"}, target=0.95, budget_s=60,
                   seconds_to_target=None, final_accuracy=0.90, generator_steps=30, images_synthesized=3000,
                   epochs=9),
            _bench("test_pool_epoch[pool-uint8]", 0.01, {"store": "pool-uint8"}, images_per_s=100_000.0),
            _bench("test_pool_epoch[png-workers0]", 0.3, {"store": "png-workers0"}, images_per_s=5_000.0),
            _bench("test_epoch[prior]", 2.0, {"design": "prior"}, synth_batches=2, synth_batch=64,
                   student_steps=20, student_batch=64),
            _bench("test_epoch[fastcae-compiled]", 0.5, {"design": "fastcae-compiled"}, synth_batches=2,
                   synth_batch=64, student_steps=20, student_batch=64),
        ],
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    text = summarize.summarize(str(path))
    assert "| student step | 10.00 | 4.00 (2.50x) |" in text
    assert "| eager | 2.000 | 6.000 (3.00x) | n/a |" in text
    assert "| nayer | 30 | not reached |" in text and "| cae | 10 | 10.0 |" in text
    assert "| pool-uint8 | 100,000 | 20.00x |" in text
    assert "| fastcae-compiled | 0.50 | 4.00x |" in text
    assert "torch 2.14.1" in text
    assert "GPU-hours" not in text  # digits-scale steps say nothing about the CIFAR presets


def test_gpu_hours_from_cifar_scale_steps(tmp_path):
    data = {"machine_info": {}, "benchmarks": [
        _bench("test_generator_step[cae-cudagraphs]", 0.010, {"paradigm": "cae", "backend": "cudagraphs"},
               scale="cifar32"),
        _bench("test_student_step[cudagraphs]", 0.020, {"backend": "cudagraphs"}, scale="cifar32"),
    ]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    text = summarize.summarize(str(path))
    # CIFAR-10: 20 * 100 * 0.01 + 100 * (20 * 0.01 + 400 * 0.02) = 20 + 820 = 840 s = 0.23 h
    assert "| cifar10 (120 epochs) | cudagraphs | 10.0 | 20.0 | 0.23 |" in text
    # CIFAR-100: 20 + 200 * 8.2 = 1660 s = 0.46 h
    assert "| cifar100 (220 epochs) | cudagraphs | 10.0 | 20.0 | 0.46 |" in text


def test_data_parallel_scaling_table(tmp_path):
    common = {"threads_per_process": 1, "compile_mode": "eager", "scale": "digits16"}
    data = {"machine_info": {}, "benchmarks": [
        _bench("test_data_parallel_throughput[2proc]", 9.0, {"processes": 2}, processes=2, synthesis_images_per_s=190.0,
               synthesis_scaling_efficiency=0.95, student_images_per_s=3000.0, student_scaling_efficiency=0.75,
               **common),
        _bench("test_data_parallel_throughput[1proc]", 9.0, {"processes": 1}, processes=1, synthesis_images_per_s=100.0,
               student_images_per_s=2000.0, **common),
    ]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    text = summarize.summarize(str(path))
    assert "### Data-parallel scaling (torchrun, digits16 scale, same global batches)" in text
    one, two = "| 1 | 1 | 100 | 1.00 | 2000 | 1.00 | eager |", "| 2 | 1 | 190 | 0.95 | 3000 | 0.75 |"
    assert text.index(one) < text.index(two)
