"""The one-call GPU check's timing parts and summary, run at tiny shapes on the CPU (``--smoke``), so the
script a GPU session depends on is known to work before the GPU is there."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_parts_write_as_they_go_and_the_summary_reads_them(gpu_check, tmp_path, capsys):
    out = tmp_path / "check.jsonl"
    assert gpu_check.main(["versions", str(out)]) == 0
    assert gpu_check.main(["steps", str(out), "--smoke"]) == 0
    assert gpu_check.main(["ops", str(out), "--smoke"]) == 0
    records = _records(out)
    assert records[0]["part"] == "versions" and {"torch", "triton", "device", "date"} <= set(records[0])
    steps = [r for r in records if r["part"] == "steps"]
    assert {r["precision"] for r in steps} == {"fp32", "bf16"}
    assert all("error" not in r and r["student_ms"] > 0 and r["generator_ms"] > 0 for r in steps), steps
    ops = [r for r in records if r["part"] == "ops"]
    assert {r["op"] for r in ops} == {"logit_loss", "supcon_loss", "bn_stats_loss"}
    assert all(r["eager_ms"] > 0 for r in ops)
    capsys.readouterr()
    assert gpu_check.main(["summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| bf16 student step vs fp32 eager | >= 1.8 |" in text  # every target is listed, measured or n/a
    assert "GPU-hours, cifar10 preset" in text


def test_the_summary_of_a_cut_off_run_says_what_is_missing(gpu_check, tmp_path, capsys):
    out = tmp_path / "check.jsonl"
    out.write_text(json.dumps({"part": "versions", "device": "H200", "torch": "2.11", "triton": "3.6",
                               "date": "2026-12-01"}) + "\n")
    assert gpu_check.main(["summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "kernel tests compiled on the GPU: not run (or cut off)" in text and "| n/a | n/a |" in text
