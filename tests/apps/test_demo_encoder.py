"""The demo runs on a plain install: without the ``fastcae[text]`` extra its preset's MiniLM encoder is
missing, and the demo falls back to random orthogonal class embeddings with a warning (a GPU image without the
extra stopped the demo with EncoderUnavailable)."""

import warnings

import pytest

from fastcae.apps import demo
from fastcae.models import create_model


class _Stop(Exception):
    pass


@pytest.mark.parametrize("installed", [True, False])
def test_the_demo_uses_minilm_when_installed_and_random_embeddings_otherwise(monkeypatch, tmp_path, installed):
    seen = {}

    def fake_distill(*args, **kwargs):
        seen.update(kwargs)
        raise _Stop  # the options are what this test checks; no distillation

    monkeypatch.setattr(demo, "_minilm_installed", lambda: installed)
    monkeypatch.setattr(demo, "distill", fake_distill)
    monkeypatch.setattr(demo, "digits_teacher", lambda *a, **k: (
        create_model("digits_teacher", num_classes=10, in_chans=1).eval(), "untrained (test)"))
    with warnings.catch_warnings(record=True) as caught, pytest.raises(_Stop):
        warnings.simplefilter("always")
        demo.run_demo(tmp_path, budget_seconds=1, progress=False, device="cpu")
    said = [str(w.message) for w in caught if "text encoder" in str(w.message)]
    if installed:
        assert "text_encoder" not in seen and not said  # the preset's MiniLM
    else:
        assert seen["text_encoder"] == "random"
        assert len(said) == 1 and "fastcae[text]" in said[0]
