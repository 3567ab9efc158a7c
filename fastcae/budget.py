"""The budget's deadline as the loop (``fastcae.loop``) checks it, and the timing that re-sizes the plan.

A ``Deadline`` holds the time the budget ends (a ``time.perf_counter()`` reading; None: no budget), the pace
measured so far (one synthesis batch, one student step, one evaluation) and the clock that measures it. It is
checked between synthesis batches, at each loss read and after each epoch. Each check looks ahead: it stops when
the next piece of work (one synthesis batch, the student steps up to the next read, or the next epoch's first
pieces), plus the evaluation that ends the run, would end past the deadline, at the pace so far. So a run ends
before its budget rather than one piece after it. Under torchrun the processes vote: every one stops at the same
step once any would.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from .config import DistillConfig
from .distributed import World


class Deadline:
    """When the budget ends (``at``; None: never) and whether the next piece of work still fits before it."""

    def __init__(self, device, world: World = World()):
        self.at: float | None = None  # set by fastcae.loop.train, from the budget and the training time so far
        self.device = torch.device(device)
        self.world = world
        # the pace so far, for the look-ahead (0 until measured)
        self.batch_seconds = 0.0  # one synthesis batch
        self.step_seconds = 0.0  # one student step
        self.eval_seconds = 0.0  # one evaluation

    def clock(self) -> float:
        """Now, after the queued device work (a timing, not a launch count)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def seconds_left(self) -> float:
        return self.at - time.perf_counter()

    def overruns(self, ahead: float = 0.0) -> bool:
        """Whether work of ``ahead`` seconds started now, and the evaluation that ends the run after it, would
        end past the deadline, decided together: every process stops at the same step once any would."""
        return self.world.any(self.at is not None and time.perf_counter() > self.at - ahead - self.eval_seconds)

    def steps_overrun(self, steps_left: int, log_every: int) -> bool:
        """Whether the student steps up to the next loss read (the unit the budget cuts) would overrun."""
        return self.overruns(min(log_every, steps_left) * self.step_seconds)

    def epoch_overruns(self, cfg: DistillConfig, epoch: int) -> bool:
        """Whether the least epoch ``epoch`` (0-based) of ``cfg``'s schedule can take would overrun: one synthesis
        batch and, after the warm-up, the student steps up to the first read."""
        first_read = min(cfg.log_every, cfg.student_steps) * self.step_seconds if epoch >= cfg.warmup_epochs else 0.0
        return self.overruns(self.batch_seconds + first_read)

    def revision_timer(self, cfg: DistillConfig, epoch: int) -> StepTimer:
        """The student steps of epoch ``epoch`` to time for re-sizing the plan: in the first post-warm-up epoch
        of a planned run with a deadline, after two untimed steps (first calls, compiling), about a fifth of the
        epoch, ending before its last step; in any other epoch, none."""
        plan, n = cfg.plan, cfg.student_steps
        if (self.at is None or plan is None or plan.get("revised") or not plan.get("planned", True)
                or epoch != cfg.warmup_epochs or n < 8):
            return StepTimer(self.clock, None)
        return StepTimer(self.clock, (2, min(2 + max(5, n // 5), n - 1)))


class StepTimer:
    """Times the student steps ``first + 1`` to ``last`` of ``window`` one by one (a clock reading after each)
    and gives their median once: a moment of other work on the machine does not size the plan (a mean over the
    window once re-sized a run to end at 139 s of 240). ``window`` None: times nothing."""

    def __init__(self, clock: Callable[[], float], window: tuple[int, int] | None):
        self.clock, self.window = clock, window
        self.durations: list[float] = []
        self.mark = 0.0

    def start(self, done: int) -> None:
        """Before a step, ``done`` steps into the epoch: the window's clock starts before its first timed step."""
        if self.window is not None and done == self.window[0]:
            self.mark = self.clock()

    def lap(self, done: int) -> float | None:
        """After a step (``done`` steps into the epoch): the median step once the window is complete, else None."""
        if self.window is None:
            return None
        first, last = self.window
        if first < done <= last:  # one clock reading per timed step
            now = self.clock()
            self.durations.append(now - self.mark)
            self.mark = now
        if done != last:
            return None
        self.window = None  # the plan is re-sized once
        return statistics.median(self.durations)
