"""The NAYER peer harness (benchmarks/peers): the schedule fit (pure), the shim's CIFAR-10 view, and, where a
NAYER checkout and its side packages are present, NAYER's own registry loading our teacher through the shim."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.peers.schedule import RECIPE, Costs, estimate_seconds, fit_schedule

COSTS = Costs(gen_warm=1.6, gen_adv=1.8, kd=0.8, ref_synthesis_batch=40, ref_batch=64, per_synthesis_batch=0.5,
              per_pass=0.4, setup=1.0)


def _estimate(s, costs=COSTS):
    return estimate_seconds(costs, epochs=s.epochs, warmup=s.warmup, g_steps=s.g_steps, kd_steps=s.kd_steps,
                            synthesis_batch_size=s.synthesis_batch_size, batch_size=s.batch_size)


def test_fit_schedule_ends_at_the_budget_in_nayers_proportions():
    s = fit_schedule(600, COSTS)
    assert s.target_seconds == pytest.approx(0.97 * 600)
    assert 0.9 * s.target_seconds <= _estimate(s) <= s.target_seconds
    assert s.estimate_seconds == pytest.approx(_estimate(s))
    # one factor for every dimension: epochs, steps and batches all shrink together
    assert 0 < s.scale < 1
    assert s.epochs == round(RECIPE["epochs"] * s.scale)
    assert s.g_steps == max(1, round(RECIPE["g_steps"] * s.scale))
    assert s.synthesis_batch_size % 10 == 0 and s.batch_size % 8 == 0
    assert abs(s.synthesis_batch_size - RECIPE["synthesis_batch_size"] * s.scale) <= 5
    assert s.warmup == max(1, round(s.epochs / 6)) and s.g_life == max(1, round(s.epochs / 12))
    assert (s.g_loops, s.gwp_loops) == (2, 10)
    args = s.nayer_args()
    assert args["lr"] == 0.2 and args["lr_g"] == 4e-3 and args["T"] == 20 and args["ep_steps"] == s.kd_steps
    # a larger budget never buys a smaller schedule
    bigger = fit_schedule(2400, COSTS)
    assert bigger.scale > s.scale and bigger.epochs >= s.epochs and bigger.batch_size >= s.batch_size


def test_fit_schedule_runs_the_recipe_when_it_fits_and_honours_pins():
    fast = Costs(gen_warm=1e-4, gen_adv=1e-4, kd=1e-4)
    s = fit_schedule(1e6, fast)
    assert (s.epochs, s.warmup, s.g_steps, s.synthesis_batch_size, s.batch_size, s.g_life) == (120, 20, 30, 400, 512,
                                                                                                 10)
    assert s.kd_steps >= 400  # the fill may only add KD steps when the recipe leaves time over
    pinned = fit_schedule(600, COSTS, fixed={"synthesis_batch_size": 400, "batch_size": 512})
    assert (pinned.synthesis_batch_size, pinned.batch_size) == (400, 512)
    assert _estimate(pinned) <= pinned.target_seconds
    with pytest.raises(ValueError):
        fit_schedule(600, COSTS, fixed={"lr": 1})


def test_fit_schedule_with_a_budget_too_small_keeps_the_smallest_schedule():
    slow = Costs(gen_warm=50.0, gen_adv=50.0, kd=20.0)
    s = fit_schedule(10, slow)
    assert (s.epochs, s.warmup, s.g_steps, s.kd_steps) == (2, 1, 1, 1)
    assert s.synthesis_batch_size == 10 and s.batch_size == 16
    assert "deadline will cut" in s.reasons[-1]


def test_npz_cifar10_has_the_test_split_and_no_training_images(tmp_path):
    from benchmarks.peers.nayer_shim import make_npz_cifar10

    labels = np.repeat(np.arange(10), 5)  # sorted by class, as shared/data's file is
    images = np.random.default_rng(0).integers(0, 255, (50, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "t.npz"
    np.savez(path, images=images, labels=labels, classes=np.array([f"c{i}" for i in range(10)]))
    cls = make_npz_cifar10(str(path))
    test, train = cls("unused", train=False, download=True), cls("unused", train=True, download=True)
    assert len(test) == 50 and len(train) == 0
    img, target = test[7]
    assert target == 1 and np.array_equal(np.asarray(img), images[7])
    sub = make_npz_cifar10(str(path), eval_images=20)("unused", train=False)
    assert sorted(sub.targets) == sorted(list(range(10)) * 2)  # stratified: 2 of each class


NAYER_DIR = os.environ.get("FASTCAE_NAYER_DIR", "/tmp/fastcae-peers/nayer")
DEPS_DIR = os.environ.get("FASTCAE_NAYER_DEPS", "/tmp/fastcae-peers/site")
SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared",
                      "data")
needs_checkout = pytest.mark.skipif(
    not (os.path.exists(os.path.join(NAYER_DIR, "datafree_kd.py")) and os.path.isdir(os.path.join(DEPS_DIR, "kornia"))
         and os.path.exists(os.path.join(SHARED, "cifar10_resnet56.pth"))),
    reason="needs a NAYER checkout and its side packages (python -m benchmarks.peers.nayer --dry-run makes them) "
           "and shared/data")

_PROBE = r"""
import json, sys, torch
from benchmarks.peers import nayer_shim as shim
state = shim.RunState(float("inf"), False, {}, None, None, False)
kd = shim.install(sys.argv[1], sys.argv[2], state, sys.argv[3] + "/cifar10_test.npz",
                  sys.argv[3] + "/cifar10_resnet56.pth", 2, eval_images=200)
import registry, datafree
args = kd.parser.parse_args(["--method", "nayer", "--teacher", shim.CHECKPOINT_NAME, "--data_root", "x"])
n, train, test = registry.get_dataset("cifar10", "x")
t = registry.get_model(shim.CHECKPOINT_NAME, num_classes=10, pretrained=True).eval()
t.load_state_dict(torch.load("checkpoints/pretrained/cifar10_%s.pth" % shim.CHECKPOINT_NAME)["state_dict"])
ev = datafree.evaluators.classification_evaluator(torch.utils.data.DataLoader(test, batch_size=100))
acc = state.evaluator(t)["Acc"][0]
out, feat = t(torch.zeros(2, 3, 32, 32), return_features=True)
print(json.dumps({"method": args.method, "gpu": args.gpu, "train": len(train), "test": len(test), "acc": acc,
                  "feat": list(feat.shape)}))
"""


@needs_checkout
def test_nayer_registry_loads_our_teacher_through_the_shim():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _PROBE, NAYER_DIR, DEPS_DIR, SHARED], cwd=root, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["method"] == "nayer" and got["train"] == 0 and got["test"] == 200 and got["feat"] == [2, 64]
    assert got["acc"] > 85.0  # 94.36% on all 10,000; 200 images leave room for chance
