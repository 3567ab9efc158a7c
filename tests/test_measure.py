"""Step costs timed on the run's device (``fastcae.measure``): what the budget planner plans from."""

from fastcae.config import DistillConfig
from fastcae.measure import measure_costs
from fastcae.paradigms import CAESynthesizer
from fastcae.plan import plan_schedule
from fastcae.synthesis.embeddings import class_embeddings
from tests.helpers import tiny_classifier, trained_like_teacher


def test_out_of_memory_while_measuring_falls_back_to_a_smaller_batch_and_says_so(monkeypatch):
    real = CAESynthesizer.synthesize

    def small_memory(self, adv_weight):
        if self.cfg.synth_batch_size > 32:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, adv_weight)

    monkeypatch.setattr(CAESynthesizer, "synthesize", small_memory)
    cfg = DistillConfig(generator_width=4, flip=False)
    emb = class_embeddings(None, "random", num_classes=5, cache_dir=False)
    costs = measure_costs(cfg, trained_like_teacher(), tiny_classifier(), emb, (1, 8, 8), (0.5,), (0.5,), "cpu")
    assert set(costs.generator_warm) == {32}
    assert any("ran out of memory" in n for n in costs.notes)
    plan = plan_schedule(cfg, costs, 3600.0, num_classes=5)
    assert plan.schedule["synth_batch_size"] <= 32  # never plans a batch that did not fit
    assert any("ran out of memory" in r for r in plan.reasons)
