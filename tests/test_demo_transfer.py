"""The embedded transfer task runs end to end and reports every row (a short, one-seed version)."""

from fastcae.demo_transfer import format_transfer_table, run_transfer_demo


def test_transfer_demo_smoke(tmp_path):
    summary = run_transfer_demo(seeds=(0,), epochs=3, teacher_epochs=3, out_dir=tmp_path,
                                variants={"cae, KD only": dict(paradigm="cae", cncl_weight=0.0)})
    rows = summary["rows"]
    assert set(rows) == {"teacher (trained on 0-4)", "random-init student", "cae, KD only"}
    for row in rows.values():
        assert all(0.0 <= a <= 1.0 for a in row["probe_accuracy"])
    assert rows["cae, KD only"]["probe_accuracy"][0] > 0.5  # 5 unseen classes: far above chance (0.2)
    assert "probe on 5-9" in format_transfer_table(summary)
    assert (tmp_path / "transfer_summary.json").exists()
