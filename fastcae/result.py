"""``DistillResult``: what ``distill()`` returns, and how its student leaves the run (a card, saved weights,
an exported package). Its own module so that ``api.py`` holds only the run's stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from .config import DistillConfig
from .pool import SyntheticPool

if TYPE_CHECKING:  # annotations only; at run time the export app is imported where a student is saved or exported
    from .apps.export import ExportReport, StudentCard


@dataclass
class DistillResult:
    student: nn.Module  # the distilled student, in eval mode (the projection head is dropped)
    history: list[dict]  # one record per epoch: losses, lr, wall seconds, images synthesised, accuracy
    config: DistillConfig
    generator: nn.Module  # the last generator (for pictures of what it synthesises)
    pool: SyntheticPool  # the synthetic images the student learned from, with labels and source ids
    class_names: list[str] = field(default_factory=list)
    compile_mode: str = "eager"  # how the steps ran: "eager", "inductor", "cudagraphs" or "aot_eager"
    kernels: dict = field(default_factory=dict)  # op -> "fused" / "reference" (and why): fastcae.ops.kernel_report
    image_shape: tuple[int, int, int] | None = None  # the input the student takes (images in [0, 1])
    mean: tuple[float, ...] | None = None  # ... normalised with these
    std: tuple[float, ...] | None = None

    @property
    def plan(self) -> dict | None:
        """What the budget planner chose and measured (None when the schedule was given explicitly)."""
        return self.config.plan

    def card(self, model: str | None = None) -> StudentCard:
        """What a deployed student needs besides its weights (``fastcae.apps.export.StudentCard``); ``model`` is
        its ``fastcae.models`` name (default: the class name, enough for exporting, not for rebuilding it)."""
        from .apps.export import StudentCard  # api -> apps, lazily: the one accepted upward import (tests/test_layout)

        return StudentCard(model or type(self.student).__name__, len(self.class_names), tuple(self.image_shape),
                           tuple(self.mean), tuple(self.std), list(self.class_names))

    def save(self, out_dir: str | Path, model: str | None = None) -> Path:
        """The student's weights and card in ``out_dir`` (``student.pt``, ``student.json``), for
        ``fastcae export --run out_dir``; ``model``: its ``fastcae.models`` name."""
        from .apps.export import write_student  # api -> apps, lazily: the one accepted upward import

        return write_student(out_dir, self.student, self.card(model))

    def export(self, path: str | Path, device: str = "cpu", model: str | None = None,
               runner: str | Path | None = None) -> ExportReport:
        """The student with its normalisation folded in (images in [0, 1] -> logits), exported to ``path``:
        ``.pt2`` (AOTInductor, for the native runner) or ``.onnx``; checked against the eager student first
        (by the native runner ``runner``, when given)."""
        from .apps.export import export_student  # api -> apps, lazily: the one accepted upward import

        return export_student(self.student, self.card(model), path, device=device, runner=runner)

    @property
    def accuracy(self) -> float | None:
        """The last evaluated accuracy (None without an evaluation set)."""
        accs = [h["accuracy"] for h in self.history if h.get("accuracy") is not None]
        return accs[-1] if accs else None
