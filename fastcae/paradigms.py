"""Three ways to synthesise a batch, behind one small interface (METHOD.md sections 2, 3 and 5.3).

A ``Synthesizer`` owns a generator and its optimiser(s). ``synthesize(adv_weight)`` runs its generator
steps against the frozen teacher (and the student, for the adversarial term) and returns the kept batch:
images in [0, 1], the class each was generated for, and its noise-source id.

- ``cae`` (CAE-DFKD): CEND input; the generator and its Adam persist across batches (the noise, not a
  re-initialised layer, gives diversity), so a batch needs few steps.
- ``nayer``: label embedding + K-to-1 noisy layer, re-drawn with a new Adam before every batch.
- ``fast`` (Fast-DFKD): latent ``z``; a meta-generator is cloned per batch, the clone and ``z`` adapt for
  k steps, and the meta-generator takes a first-order MAML step from the clone's gradients.

All three re-create their generator every ``g_life`` epochs (``reset()``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import PARADIGMS, DistillConfig
from .steps import Steps, accumulate, memory_format
from .synthesis.cend import (
    CEND,
    MagnitudeSchedule,
    balanced_targets,
    canonical_magnitudes,
    canonical_sources,
    round_robin_sources,
)
from .synthesis.generator import CENDInput, Generator, LatentInput, NoisyLayerInput


@dataclass
class SynthBatch:
    images: Tensor  # [B, C, H, W] in [0, 1], detached
    labels: Tensor  # [B] int64, the class each image was generated for
    sources: Tensor  # [B] int64, CEND noise-source id (0 for paradigms without CEND)


class Synthesizer:
    """Shared machinery: targets, the step loop and the best-step bookkeeping. Subclasses build generators."""


    def __init__(self, cfg: DistillConfig, embeddings: Tensor, image_shape, device, steps: Steps,
                 part: tuple[int, int] = (0, 1)):
        self.cfg = cfg  # its synth_batch_size is this process's share of the global batch
        self.steps = steps  # the run's generator step (compiled or not) and what it reads
        self.optimizer_options = steps.optimizer_options()
        self.embeddings = embeddings.to(device)
        self.num_classes = embeddings.shape[0]
        self.image_shape = tuple(image_shape)
        self.device = torch.device(device)
        # part = (rank, number of ranks): this rank's slice of the global batch's targets (and CEND sources), so
        # that the ranks' batches together are exactly the one-process batch
        b = cfg.synth_batch_size
        self.part = slice(part[0] * b, (part[0] + 1) * b)
        self.targets = balanced_targets(b * part[1], self.num_classes, device=self.device)[self.part]
        self.sources = torch.zeros(b, dtype=torch.int64, device=self.device)
        self.reset()

    # -- to override ------------------------------------------------------------------------------------
    def reset(self) -> None:
        raise NotImplementedError

    def synthesize(self, adv_weight: float) -> SynthBatch:
        raise NotImplementedError

    def set_progress(self, progress: float) -> None:
        """Training progress in [0, 1] (CEND magnitude schedules use it)."""

    def step_parts(self) -> tuple[nn.Module, torch.optim.Optimizer, object]:
        """``(generator, optimizer, after_backward)`` that one generator step updates (benchmarks time one)."""
        return self.generator, self.optimizer, None

    # -- shared -----------------------------------------------------------------------------------------
    def _new_generator(self, inp: nn.Module) -> Generator:
        """The generator on the run's device, in the run's memory format (``DistillConfig.channels_last``)."""
        return Generator(inp, self.image_shape, self.cfg.generator_width).to(self.device,
                                                                             memory_format=memory_format(self.cfg))

    def _run_steps(self, generator: nn.Module, optimizer, after_backward=None, *, steps: int, adv_weight: float):
        """``steps`` generator steps; keep the images of the lowest-loss step (on device, no sync)."""
        best_loss = torch.full((), float("inf"), device=self.device)
        best_images = None
        totals = None
        for _ in range(steps):
            loss, terms, images = self.steps.generator_step(generator, optimizer, self.targets, self.sources,
                                                            adv_weight, after_backward)
            # new tensors only: a compiled step's outputs are overwritten by its next replay
            better = loss < best_loss
            best_images = images.clone() if best_images is None else torch.where(better, images, best_images)
            best_loss = torch.minimum(best_loss, loss)
            totals = accumulate(totals, terms)
        if self.steps.ctx.bn is not None:
            self.steps.ctx.bn.update_ema()
        self.last_terms = {k: v / steps for k, v in totals.items()}
        return SynthBatch(best_images, self.targets.clone(), self.sources.clone())

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


def _adam(params, lr, betas, **options):
    return torch.optim.Adam(params, lr=lr, betas=betas, **options)


@torch.no_grad()
def _restart_adam(optimizer: torch.optim.Adam) -> None:
    """Put ``optimizer`` back in a fresh Adam's state, in place: the same updates as a new ``Adam(...)`` per
    batch, without re-allocating its state every batch (and one object for checkpoints to reason about)."""
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, Tensor):
                value.zero_()


class CAESynthesizer(Synthesizer):

    def __init__(self, cfg, embeddings, image_shape, device, steps, part=(0, 1)):
        self.schedule = MagnitudeSchedule(cfg.noise_magnitudes, cfg.noise_magnitudes_end, cfg.noise_schedule)
        self.source_map = canonical_sources(cfg.noise_sources)  # configured index -> canonical source id
        super().__init__(cfg, embeddings, image_shape, device, steps, part)
        robin = round_robin_sources(self.part.stop, self.num_classes, len(cfg.noise_sources))[self.part]
        self.sources = self.source_map[robin].to(self.device)

    def reset(self) -> None:
        cend = CEND(self.embeddings, self._magnitudes(0.0))
        seed = int(torch.randint(0, 2**31 - 1, ()).item())  # one host read per generator life
        previous = getattr(self, "generator", None)
        inp = CENDInput(cend, seed=seed)
        if previous is not None:  # keep the noise stream going: a new generator must see new noise
            inp.noise_offset = previous.input.noise_offset + previous.input._batch_size * cend.dim
        self.generator = self._new_generator(inp)
        self.optimizer = _adam(self.generator.parameters(), self.cfg.lr_g, self.cfg.betas_g, **self.optimizer_options)

    def set_progress(self, progress: float) -> None:
        self.generator.input.cend.set_magnitudes(self._magnitudes(progress))

    def _magnitudes(self, progress: float):
        return canonical_magnitudes(self.schedule.at(progress), self.source_map)

    def synthesize(self, adv_weight: float) -> SynthBatch:
        self.generator.train()
        self.generator.new_batch(self.targets, self.sources)
        return self._run_steps(*self.step_parts(), steps=self.cfg.generator_steps, adv_weight=adv_weight)

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])


class NayerSynthesizer(Synthesizer):

    def reset(self) -> None:
        inp = NoisyLayerInput(self.embeddings, self.cfg.synth_batch_size, self.cfg.noisy_dim)
        self.generator = self._new_generator(inp)
        self.optimizer = _adam(self.generator.parameters(), self.cfg.lr_g, self.cfg.betas_g, **self.optimizer_options)

    def synthesize(self, adv_weight: float) -> SynthBatch:
        self.generator.train()
        self.generator.new_batch(self.targets, self.sources)  # re-draw the noisy layers
        _restart_adam(self.optimizer)  # NAYER: a new Adam per batch
        return self._run_steps(*self.step_parts(), steps=self.cfg.generator_steps, adv_weight=adv_weight)

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])


class FastSynthesizer(Synthesizer):
    """Fast-DFKD: first-order MAML. The clone's gradients of every adaptation step accumulate on the
    meta-generator, which takes one Adam step (lr = lr_g * k) per batch."""


    def reset(self) -> None:
        inp = LatentInput(self.cfg.synth_batch_size, self.cfg.latent_dim)
        self.generator = self._new_generator(inp)
        self.fast = copy.deepcopy(self.generator)
        k = self.cfg.generator_steps
        self.meta_optimizer = _adam(self.generator.body.parameters(), self.cfg.lr_g * k, self.cfg.betas_g,
                                    **self.optimizer_options)
        self.fast_optimizer = torch.optim.Adam(
            [
                {"params": self.fast.body.parameters(), "lr": self.cfg.lr_g},
                {"params": self.fast.input.parameters(), "lr": self.cfg.lr_z},
            ],
            betas=self.cfg.betas_g,
            **self.optimizer_options,
        )

    def synthesize(self, adv_weight: float) -> SynthBatch:
        self.fast.load_state_dict(self.generator.state_dict())
        self.fast.train()
        self.fast.new_batch(self.targets, self.sources)  # fresh z
        _restart_adam(self.fast_optimizer)  # the clone's Adam starts fresh every batch
        self.meta_optimizer.zero_grad(set_to_none=False)
        batch = self._run_steps(*self.step_parts(), steps=self.cfg.generator_steps, adv_weight=adv_weight)
        self.meta_optimizer.step()
        return batch

    def step_parts(self):
        return self.fast, self.fast_optimizer, self._accumulate_meta_grad

    @torch.no_grad()
    def _accumulate_meta_grad(self) -> None:
        """First-order MAML: the clone's gradient of each adaptation step adds onto the meta-generator's."""
        for mp, fp in zip(self.generator.body.parameters(), self.fast.body.parameters()):
            if fp.grad is not None:
                if mp.grad is None:
                    mp.grad = torch.zeros_like(mp)
                mp.grad.add_(fp.grad)

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "meta_optimizer": self.meta_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])


SYNTHESIZERS = dict(zip(PARADIGMS, (CAESynthesizer, NayerSynthesizer, FastSynthesizer)))


def create_synthesizer(cfg: DistillConfig, embeddings: Tensor, image_shape, device, steps: Steps,
                       part: tuple[int, int] = (0, 1)) -> Synthesizer:
    """The paradigm's synthesizer; ``part = (rank, ranks)`` with ``cfg.synth_batch_size`` the rank's share."""
    if cfg.paradigm not in SYNTHESIZERS:
        raise ValueError(f"unknown paradigm {cfg.paradigm!r}; known paradigms: {', '.join(PARADIGMS)}")
    return SYNTHESIZERS[cfg.paradigm](cfg, embeddings, image_shape, device, steps, part)
