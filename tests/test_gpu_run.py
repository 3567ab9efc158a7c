"""The GPU checks' entry point (benchmarks/gpu/run.sh) and its Python parts (benchmarks/gpu/check.py), run on
the CPU: the timing parts and the summary at tiny shapes (``--smoke``), the entry point's checks of what it is
asked (nothing runs), so that what a GPU session depends on is known to work before the GPU is there."""

import importlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "gpu" / "run.sh"


@pytest.fixture(scope="module")
def gpu_check():
    return importlib.import_module("benchmarks.gpu.check")


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


needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="run.sh is a bash script")


def _run_sh(*args, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OUT=str(out), PYTHON="false")  # a Python part reached by mistake fails, never runs
    return subprocess.run(["bash", str(RUN), *args], capture_output=True, text=True, env=env, timeout=60)


@needs_bash
def test_run_sh_lists_every_part_with_its_cap(tmp_path):
    done = _run_sh("--list", out=tmp_path / "out")
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0]: int(line.split()[1]) for line in done.stdout.splitlines()
              if line.startswith("  ") and line.split()[-1].isdigit()}
    assert {"env", "tests", "ops", "steps", "profile", "native", "fidelity", "natural", "summary"} <= set(listed)
    header = RUN.read_text().split("set -uo pipefail")[0]
    for part, cap in listed.items():  # the header documents each part with the cap the script uses
        assert f"#   {part} " in header and header.split(f"#   {part} ")[1].split()[0] == str(cap), part
    assert not (tmp_path / "out").exists()


@needs_bash
@pytest.mark.parametrize("args, message", [(["tests", "no-such-part"], "unknown part: no-such-part"),
                                           (["natural", "profile-long"], "split them over two calls"),
                                           ([], "usage")])
def test_run_sh_refuses_a_call_before_running_anything(tmp_path, args, message):
    done = _run_sh(*args, out=tmp_path / "out")
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


@needs_bash
def test_the_check_group_fits_one_device_call(tmp_path, monkeypatch):
    """The `check` group (a session's first call) adds up to 580 s of caps with env: the default limit of one
    call (a device call is 600 s at most), refused by a lower one."""
    assert '"${CALL_SECONDS:-580}"' in RUN.read_text()
    monkeypatch.setenv("CALL_SECONDS", "579")
    done = _run_sh("check", out=tmp_path / "out")
    assert done.returncode == 2 and "add up to 580 s, over 579 s" in done.stderr, done.stderr
