"""Generators and paradigms: shapes for any size divisible by 4 and any channel count; per-paradigm behaviour."""

import pytest
import torch
from torch import nn

from fastcae.config import PARADIGMS
from fastcae.loop import DistillRun
from fastcae.presets import make_config
from fastcae.synthesis.cend import CEND
from fastcae.synthesis.generator import CENDInput, Generator, GeneratorBody, LatentInput, NoisyLayerInput


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 12), (4, 16, 16)])
def test_body_any_size_multiple_of_4(shape):
    body = GeneratorBody(20, shape, ngf=8)
    out = body(torch.randn(3, 20))
    assert out.shape == (3, *shape) and out.min() >= 0 and out.max() <= 1


def test_body_rejects_sizes_not_multiple_of_4():
    with pytest.raises(ValueError, match="multiples of 4"):
        GeneratorBody(20, (3, 30, 32))


def _embeddings(c=5, d=16):
    return nn.functional.normalize(torch.randn(c, d), dim=1)


def test_inputs_give_body_vectors():
    emb = _embeddings()
    y = torch.arange(12) % 5
    s = torch.arange(12) % 4
    cend = CENDInput(CEND(emb, torch.ones(4)), seed=3)
    cend.new_batch(y, s)
    assert cend(y, s).shape == (12, 16)
    nl = NoisyLayerInput(emb, batch_size=12, noisy_dim=30)
    assert nl.groups == 3 and nl(y, s).shape == (12, 30)
    w = nl.noisy_weight.clone()
    nl.new_batch(y, s)
    assert not torch.equal(w, nl.noisy_weight)  # re-drawn per batch
    lat = LatentInput(12, 7)
    assert lat(y, s).shape == (12, 7)


def test_cend_noise_fixed_within_a_batch_and_new_across_batches():
    emb = _embeddings()
    y, s = torch.arange(10) % 5, torch.arange(10) % 4
    gen = Generator(CENDInput(CEND(emb, torch.ones(4)), seed=1), (1, 8, 8), ngf=4).eval()
    gen.new_batch(y, s)
    a, b = gen(y, s), gen(y, s)
    gen.new_batch(y, s)
    c = gen(y, s)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_cend_front_equals_unfused_modules():
    emb = _embeddings()
    y, s = torch.arange(10) % 5, torch.arange(10) % 4
    gen = Generator(CENDInput(CEND(emb, torch.rand(4)), seed=1), (1, 8, 8), ngf=4).train()
    gen.new_batch(y, s)
    fused_seam = gen(y, s)
    gen2 = Generator(CENDInput(CEND(emb, gen.input.cend.magnitudes), seed=1), (1, 8, 8), ngf=4).train()
    gen2.load_state_dict(gen.state_dict())
    gen2.input.bn.running_mean.zero_()
    gen2.input.bn.running_var.fill_(1)  # the state dict also carries the noise counter of the batch
    unfused = gen2.body(gen2.input(y, s))
    assert torch.allclose(fused_seam, unfused, atol=1e-5)


def _tiny_teacher(c=5):
    """A tiny classifier with BatchNorm, left in train mode with gradients on: as a user hands one over."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, c))


def _run(cfg, teacher):
    """A distillation run's parts, built as ``distill`` builds them: the synthesizer gets its steps from there."""
    return DistillRun(cfg, teacher, _tiny_teacher(), _embeddings(), (1, 8, 8), (0.5,), (0.5,), "cpu")


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_each_paradigm_synthesises_labelled_batches(paradigm):
    cfg = make_config(paradigm=paradigm, synth_batch_size=20, g_steps=2, generator_width=4, noisy_dim=16,
                      latent_dim=8, flip=False)
    teacher = _tiny_teacher()
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    run = _run(cfg, teacher)
    synth = run.synth
    bn = teacher[1]
    stats = [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]
    before = {k: v.clone() for k, v in synth.generator.state_dict().items()
              if torch.is_tensor(v) and v.is_floating_point()}
    batch = synth.synthesize(adv_weight=1.33)
    assert batch.images.shape == (20, 1, 8, 8) and not batch.images.requires_grad
    assert torch.equal(batch.labels, torch.arange(20) % 5)
    if paradigm == "cae":
        assert set(batch.sources.tolist()) == {0, 1, 2, 3}
    assert set(synth.last_terms) == {"bn", "ce_adv"}
    after = synth.generator.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "the generator (or meta-generator) did not learn"
    # the run froze the teacher: the generator's loss reached none of its weights, its BN statistics stayed put
    assert all(p.grad is None for p in teacher.parameters())
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(bn.num_batches_tracked, stats[2])
    assert run.bn.ema_weight.item() > 0  # EMA updated after the batch


def test_unknown_paradigm_lists_known():
    with pytest.raises(ValueError, match="known paradigms: cae, nayer, fast"):
        make_config(paradigm="deepinv")


def test_k_to_1_noisy_layer_uses_one_layer_per_group_of_k():
    emb = _embeddings(c=5)
    nl = NoisyLayerInput(emb, batch_size=12, noisy_dim=7).eval()  # 3 groups, the last one partial
    y, s = torch.arange(12) % 5, torch.zeros(12, dtype=torch.long)
    e = nl.bn(nl.embeddings[y])
    want = torch.stack([e[i] @ nl.noisy_weight[i // 5] + nl.noisy_bias[i // 5] for i in range(12)])
    assert torch.allclose(nl(y, s), want, atol=1e-5)


def test_a_subset_of_noise_sources_keeps_canonical_ids():
    cfg = make_config(synth_batch_size=20, g_steps=1, generator_width=4, noise_sources=("laplace", "rademacher"),
                      noise_magnitudes=(0.5, 2.0), bn_weight=0.0, flip=False)
    synth = _run(cfg, _tiny_teacher()).synth
    assert set(synth.sources.tolist()) == {2, 3}  # laplace, rademacher: ids mean the same everywhere
    assert torch.equal(synth.generator.input.cend.magnitudes, torch.tensor([0.0, 0.0, 0.5, 2.0]))
    assert set(synth.synthesize(adv_weight=0.0).sources.tolist()) == {2, 3}


def _two_convs(c=5):
    """A classifier whose second convolution has several input channels (one channel is both layouts)."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                         nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, c))


def _is_nhwc(model: nn.Module) -> bool:
    """Whether the model's convolutions (those with several input channels) are in channels_last memory."""
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1]
    assert convs
    return all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_channels_last_run_does_the_same_work(paradigm):
    """NHWC is a layout, not a recipe: the same seed gives the same images and the same student step in both
    layouts (to fp32 rounding), and the run's three models are in the layout its config says."""
    cfg = make_config(paradigm=paradigm, synth_batch_size=10, g_steps=2, generator_width=4, noisy_dim=16,
                      latent_dim=8, flip=False)
    out = {}
    for nhwc in (False, True):
        torch.manual_seed(0)
        teacher, student = _two_convs(), _two_convs()
        run = DistillRun(cfg.replace(channels_last=nhwc), teacher, student, _embeddings(), (1, 8, 8), (0.5,),
                         (0.5,), "cpu")
        assert all(_is_nhwc(m) == nhwc for m in (run.teacher, run.student, run.synth.generator))
        batch = run.synth.synthesize(adv_weight=1.0)
        run.steps.student_step(run.optimizer, batch.images, batch.labels)
        out[nhwc] = (batch.images, [p.detach().clone() for p in run.student.parameters()])
    assert torch.allclose(out[False][0], out[True][0], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(out[False][1], out[True][1]))


def test_channels_last_auto_follows_the_device():
    from fastcae.steps import resolve_channels_last

    assert resolve_channels_last(None, "cuda") is True
    assert resolve_channels_last(None, "cpu") is torch.backends.mkldnn.is_available()
    assert resolve_channels_last(False, "cuda") is False and resolve_channels_last(True, "cpu") is True
    run = DistillRun(make_config(synth_batch_size=10, generator_width=4, flip=False), _tiny_teacher(),
                     _tiny_teacher(), _embeddings(), (1, 8, 8), (0.5,), (0.5,), "cpu")
    assert run.cfg.channels_last is resolve_channels_last(None, "cpu")  # recorded in the run's config
