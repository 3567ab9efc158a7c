"""Fit NAYER's CIFAR-10 recipe to a wall budget: the pure arithmetic (no torch, no NAYER checkout).

NAYER's schedule (``datafree_kd.py``; the recipe is ``scripts/nayer_100.sh``, CIFAR-10 block) is ``epochs``
epochs. The first ``warmup`` run ``gwp_loops`` synthesis batches each and no KD; every later epoch runs
``g_loops`` synthesis batches, then ``kd_steps`` KD steps at ``batch_size``, then steps the student's cosine
(whose length is ``epochs - warmup``, so the cosine ends with the last epoch). A synthesis batch is
``g_steps`` generator steps on ``synthesis_batch_size`` images (after the warm-up each step also runs the
student, for the adversarial term), after which its images are written to the pool as PNGs and a new data
loader (4 worker processes) is built over the whole pool; the KD steps read the pool through it.

The rule (``fit_schedule``):

1. Costs are measured on the machine by running NAYER itself for a few steps (``benchmarks.peers.nayer``):
   seconds per warm-up generator step, per adversarial generator step and per KD step at reference batch
   sizes, taken as proportional to the batch; fixed seconds per synthesis batch (PNGs, loader, workers), per
   start of a pass over the pool (workers started again when the loader runs dry), and once (set-up).
2. NAYER's recipe is shrunk by ONE factor ``s`` in every dimension it has: epochs 120 s, and per epoch
   g_steps 30 s and kd_steps 400 s, on synthesis batches of 400 s images and KD batches of 512 s images.
   So the time shares of warm-up, synthesis and KD stay the recipe's, and so do the pool's growth against the
   KD reading it. ``warmup`` stays epochs / 6, ``g_life`` epochs / 12, ``gwp_loops`` 10 and ``g_loops`` 2.
   ``s`` is the largest that the cost model fits into the target (``margin`` x budget, so that the last
   epoch ends before the hard deadline). With costs linear in the batch the time goes as s^3; where a
   dimension is pinned (``fixed``: e.g. the batch sizes on a GPU, whose step costs are not proportional
   to the batch), the others absorb it.
3. Rounding: the synthesis batch to a multiple of the 10 classes (at least 10), the KD batch to a multiple
   of 8 (at least 16), epochs at least 2 (one warm-up, one KD), g_steps at least 1. Then ``kd_steps``, the
   finest knob, is re-chosen as the largest count that keeps the estimate within the target, and epochs are
   taken away while even one KD step per epoch is too many.
4. Every other hyper-parameter is the recipe's: lr 0.2 (KD, SGD), eta_min 2e-4, lr_g 4e-3, adv 1.33, bn 10,
   oh 0.5, T 20, bn_mmt 0.9.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

# NAYER's CIFAR-10 recipe (scripts/nayer_100.sh, "### CIFAR10"; the argparse defaults for T, eta_min, bn_mmt).
RECIPE = {
    "epochs": 120, "warmup": 20, "g_steps": 30, "synthesis_batch_size": 400, "g_loops": 2, "gwp_loops": 10,
    "kd_steps": 400, "ep_steps": 400, "batch_size": 512, "lr": 0.2, "eta_min": 2e-4, "lr_g": 4e-3, "adv": 1.33,
    "bn": 10.0, "oh": 0.5, "g_life": 10, "T": 20.0, "bn_mmt": 0.9,
}
NUM_CLASSES = 10
SCALED = ("epochs", "g_steps", "kd_steps", "synthesis_batch_size", "batch_size")


@dataclass
class Costs:
    """Seconds on the machine. Step costs are at the reference batch sizes and scale with the batch."""

    gen_warm: float                    # one warm-up generator step (teacher only), at ref_synthesis_batch
    gen_adv: float                     # one later generator step (teacher + student), at ref_synthesis_batch
    kd: float                          # one KD step (pool batch loaded, teacher forward, student step), at ref_batch
    ref_synthesis_batch: int = 40
    ref_batch: int = 64
    per_synthesis_batch: float = 0.0   # PNGs written, loader rebuilt, its workers started, generator re-made
    per_pass: float = 0.0              # a pass over the pool started: workers forked, first batch waited for
    setup: float = 0.0                 # NAYER's main() up to its first synthesis

    def gen(self, batch: float, adversarial: bool) -> float:
        return (self.gen_adv if adversarial else self.gen_warm) * batch / self.ref_synthesis_batch

    def kd_step(self, batch: float) -> float:
        return self.kd * batch / self.ref_batch


@dataclass
class Schedule:
    epochs: int
    warmup: int
    g_steps: int
    kd_steps: int
    synthesis_batch_size: int
    batch_size: int
    g_life: int
    g_loops: int = RECIPE["g_loops"]
    gwp_loops: int = RECIPE["gwp_loops"]
    scale: float = 0.0
    estimate_seconds: float = 0.0
    target_seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)

    def nayer_args(self) -> dict:
        """Values for NAYER's ``datafree_kd.py`` options (its argparse names); the rest are the recipe's."""
        out = {k: getattr(self, k) for k in ("epochs", "warmup", "g_steps", "kd_steps", "synthesis_batch_size",
                                             "batch_size", "g_life", "g_loops", "gwp_loops")}
        out["ep_steps"] = self.kd_steps  # unused by datafree_kd.py; kept equal, as NAYER's TinyImageNet script does
        for k in ("lr", "eta_min", "lr_g", "adv", "bn", "oh", "T", "bn_mmt"):
            out[k] = RECIPE[k]
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def warmup_for(epochs: float) -> int:
    return int(min(max(1, round(epochs * RECIPE["warmup"] / RECIPE["epochs"])), max(1, epochs - 1)))


def g_life_for(epochs: float) -> int:
    return int(max(1, round(epochs * RECIPE["g_life"] / RECIPE["epochs"])))


def pool_passes(*, epochs: int, warmup: int, kd_steps: int, synthesis_batch_size: int, batch_size: int,
                g_loops: int = RECIPE["g_loops"], gwp_loops: int = RECIPE["gwp_loops"]) -> int:
    """How many times NAYER's KD loop starts a pass over the pool in the whole run (one per KD epoch at
    least: each synthesis builds a new loader), the pool growing by ``g_loops`` batches every epoch."""
    total = 0
    for e in range(epochs - warmup):
        pool = (warmup * gwp_loops + (e + 1) * g_loops) * synthesis_batch_size
        total += max(1, math.ceil(kd_steps * batch_size / max(pool, 1)))
    return total


def estimate_seconds(costs: Costs, *, epochs: float, warmup: float, g_steps: float, kd_steps: float,
                     synthesis_batch_size: float, batch_size: float, g_loops: int = RECIPE["g_loops"],
                     gwp_loops: int = RECIPE["gwp_loops"]) -> float:
    """Predicted training seconds of a NAYER schedule (evaluation excluded) under ``costs``."""
    kd_epochs = epochs - warmup
    warm = warmup * gwp_loops * (g_steps * costs.gen(synthesis_batch_size, False) + costs.per_synthesis_batch)
    synth = kd_epochs * g_loops * (g_steps * costs.gen(synthesis_batch_size, True) + costs.per_synthesis_batch)
    kd = kd_epochs * kd_steps * costs.kd_step(batch_size)
    if kd_steps >= 1 and float(epochs).is_integer() and float(warmup).is_integer():
        passes = pool_passes(epochs=int(epochs), warmup=int(warmup), kd_steps=int(kd_steps),
                             synthesis_batch_size=int(synthesis_batch_size), batch_size=int(batch_size),
                             g_loops=g_loops, gwp_loops=gwp_loops)
    else:  # the continuous relaxation used while solving for s: the recipe's pool/KD ratio
        passes = kd_epochs * max(1.0, kd_steps * batch_size / max(warmup * gwp_loops * synthesis_batch_size, 1))
    return costs.setup + warm + synth + kd + passes * costs.per_pass


def _scaled(s: float, fixed: dict) -> dict:
    v = {k: fixed.get(k, RECIPE[k] * s) for k in SCALED}
    v["warmup"] = fixed.get("warmup", v["epochs"] * RECIPE["warmup"] / RECIPE["epochs"])
    return v


def _rounded(v: dict, fixed: dict) -> dict:
    out = dict(v)
    out["epochs"] = int(fixed.get("epochs", max(2, round(v["epochs"]))))
    out["g_steps"] = int(fixed.get("g_steps", max(1, round(v["g_steps"]))))
    out["kd_steps"] = int(fixed.get("kd_steps", max(1, round(v["kd_steps"]))))
    out["synthesis_batch_size"] = int(fixed.get("synthesis_batch_size",
                                                max(NUM_CLASSES, round(v["synthesis_batch_size"] / NUM_CLASSES)
                                                    * NUM_CLASSES)))
    out["batch_size"] = int(fixed.get("batch_size", max(16, round(v["batch_size"] / 8) * 8)))
    out["warmup"] = int(fixed.get("warmup", warmup_for(out["epochs"])))
    return out


def fit_schedule(budget: float, costs: Costs, *, margin: float = 0.97, fixed: dict | None = None) -> Schedule:
    """NAYER's recipe shrunk by one factor so that its warm-up and whole cosine end within ``margin * budget``.

    ``fixed`` pins any of epochs, warmup, g_steps, kd_steps, synthesis_batch_size, batch_size, g_life. Pure: the
    result depends only on the arguments (see the module docstring for the rule).
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    fixed = dict(fixed or {})
    unknown = set(fixed) - set(SCALED) - {"warmup", "g_life"}
    if unknown:
        raise ValueError(f"cannot pin {sorted(unknown)}; pin any of {SCALED + ('warmup', 'g_life')}")
    target = margin * budget

    def est(v: dict) -> float:
        return estimate_seconds(costs, **{k: v[k] for k in (*SCALED, "warmup")})

    lo, hi = 0.0, 1.0
    if est(_scaled(hi, fixed)) > target:
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if est(_scaled(mid, fixed)) <= target else (lo, mid)
        s = lo
    else:
        s = hi  # the recipe itself fits: run it as published
    v = _rounded(_scaled(s, fixed), fixed)
    reasons = [f"one scale s = {s:.4f} of the recipe (epochs 120, g_steps 30, kd_steps 400, batches 400/512) "
               f"fits {target:.0f} s ({margin:.0%} of {budget:.0f} s)"
               + (f"; pinned: {fixed}" if fixed else "")]
    kd_from_s = v["kd_steps"]
    if "kd_steps" not in fixed:
        while True:  # kd_steps, the finest knob, fills what rounding left (or takes back what it overran)
            v["kd_steps"] = 0
            zero = est(v)
            per_step = (v["epochs"] - v["warmup"]) * costs.kd_step(v["batch_size"])
            k = int((target - zero) // per_step) if per_step > 0 else kd_from_s
            while k >= 1 and est({**v, "kd_steps": k}) > target:  # pool passes are not linear in k
                k -= 1
            v["kd_steps"] = k
            if k >= 1 or v["epochs"] <= 2 or "epochs" in fixed:
                break
            v["epochs"] -= 1
            v["warmup"] = int(fixed.get("warmup", warmup_for(v["epochs"])))
            reasons.append(f"even one KD step per epoch overran: epochs down to {v['epochs']}")
        v["kd_steps"] = max(1, v["kd_steps"])
        if v["kd_steps"] != kd_from_s:
            reasons.append(f"kd_steps {kd_from_s} (from s) -> {v['kd_steps']} to end at the target after rounding "
                           f"and the fixed costs")
    g_life = int(fixed.get("g_life", g_life_for(v["epochs"])))
    estimate = est(v)
    reasons.append(f"epochs {v['epochs']} (warm-up {v['warmup']}, cosine over {v['epochs'] - v['warmup']}), "
                   f"g_steps {v['g_steps']}, kd_steps {v['kd_steps']}, batches {v['synthesis_batch_size']}/"
                   f"{v['batch_size']}, g_life {g_life}: estimated {estimate:.1f} s")
    if estimate > target:
        reasons.append("even this, the smallest schedule the rule allows, overruns the target: the deadline will cut "
                       "it")
    return Schedule(epochs=v["epochs"], warmup=v["warmup"], g_steps=v["g_steps"], kd_steps=v["kd_steps"],
                    synthesis_batch_size=v["synthesis_batch_size"], batch_size=v["batch_size"], g_life=g_life,
                    scale=s, estimate_seconds=estimate, target_seconds=target, reasons=reasons)
