"""The embedded transfer task runs end to end and reports every row (a short, one-seed version)."""

import torch

from fastcae.apps.demo_transfer import format_transfer_table, run_transfer_demo


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


def test_few_shot_keeps_k_per_class():
    from fastcae.apps.data import load_digits
    from fastcae.apps.demo_transfer import few_shot

    train, _ = load_digits(image_size=8)
    small = few_shot(train.subset(range(5, 10)), 3)
    assert sorted(small.labels.tolist()) == sorted([c for c in range(5, 10) for _ in range(3)])
    assert torch.equal(small.labels, few_shot(train.subset(range(5, 10)), 3).labels)  # fixed choice
