"""The transfer benchmark's bookkeeping (benchmarks/transfer): records resume, the table's means and spreads, the
plot. The distillations themselves are the benchmark's job, not the tests'."""

import json

import pytest

from benchmarks.transfer.run import METHODS, REFERENCES, load_records, plot, summarise, table


def _records():
    recs = []
    for i, row in enumerate(METHODS):
        for seed in (0, 1, 2):
            recs.append({"row": row, "seed": seed, "budget": 300.0, "cifar10": 0.3 + 0.01 * i + 0.02 * seed,
                         "probe": 0.12 + 0.01 * seed, "fine_tune": 0.15})
        recs.append({"row": row, "seed": 0, "budget": 60.0, "cifar10": 0.9, "probe": 0.9, "fine_tune": 0.9})
    recs.append({"row": REFERENCES[0], "seed": 0, "budget": None, "cifar10": 0.1, "probe": 0.1, "fine_tune": 0.1})
    recs.append({"row": REFERENCES[1], "seed": 0, "budget": None, "cifar10": 0.926, "probe": 0.235,
                 "fine_tune": 0.276})
    return recs


def test_summary_keeps_one_budget_and_the_references():
    rows = {r["row"]: r for r in summarise(_records(), 300.0)}
    assert set(rows) == {*METHODS, REFERENCES[0], REFERENCES[1]}
    cae = rows["cae"]
    assert cae["seeds"] == [0, 1, 2]  # the 60 s run is another budget: left out
    assert cae["cifar10"]["mean"] == pytest.approx(0.32) and cae["cifar10"]["min"] == pytest.approx(0.30)
    assert cae["probe"]["max"] == pytest.approx(0.14)
    text = table(summarise(_records(), 300.0))
    assert "| cae | 3 | 32.0 (30.0-34.0) | 13.0 (12.0-14.0) | 15.0 (15.0-15.0) |" in text
    assert f"| {REFERENCES[1]} | 1 | 92.6 | 23.5 | 27.6 |" in text


def test_records_resume_from_json_lines_and_the_plot_is_written(tmp_path):
    path = tmp_path / "runs.jsonl"
    assert load_records(path) == []
    path.write_text("".join(json.dumps(r) + "\n" for r in _records()) + "\n")
    assert len(load_records(path)) == len(_records())
    plot(load_records(path), 300.0, tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
