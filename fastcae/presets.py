"""Named teacher -> student pairs of the DFKD literature (CIFAR-10/100), ready to distil by name.

A pair preset bundles what a run needs besides the teacher's weights: the dataset's class names, image shape
and normalisation, the teacher and student architectures (``fastcae.models``), NAYER's schedule as
``DistillConfig`` overrides, and the accuracies published for the pair (METHOD.md section 6), so a result
can be compared with the literature without looking the numbers up again.

``fastcae.config.PRESETS`` holds config-only presets (schedules); ``make_config`` and ``distill`` accept the
names of both kinds (this module registers its pairs with ``fastcae.config.register_preset``), and
``list_presets()`` names both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import PRESETS, nayer_preset, preset_names, register_preset
from .datasets import DATASETS, DatasetInfo

# ------------------------------------------------------------------------------------------ pair presets
# (teacher, student) -> published top-1 % (METHOD.md section 6): teacher, Fast-DFKD (k = 10), CMI.
PAIRS = (("resnet34", "resnet18"), ("vgg11_bn", "resnet18"), ("wrn40_2", "wrn16_1"), ("wrn40_2", "wrn40_1"),
         ("wrn40_2", "wrn16_2"))
PUBLISHED = {
    "cifar10": {
        ("resnet34", "resnet18"): (95.70, 94.05, 94.84),
        ("vgg11_bn", "resnet18"): (92.25, 90.53, 91.13),
        ("wrn40_2", "wrn16_1"): (94.87, 89.29, 90.01),
        ("wrn40_2", "wrn40_1"): (94.87, 92.51, 92.78),
        ("wrn40_2", "wrn16_2"): (94.87, 92.45, 92.52),
    },
    "cifar100": {
        ("resnet34", "resnet18"): (78.05, 74.34, 77.04),
        ("vgg11_bn", "resnet18"): (71.32, 67.44, 70.56),
        ("wrn40_2", "wrn16_1"): (75.83, 54.02, 57.91),
        ("wrn40_2", "wrn40_1"): (75.83, 63.91, 68.88),
        ("wrn40_2", "wrn16_2"): (75.83, 65.12, 68.75),
    },
}
# NAYER's only number read off for a CIFAR pair: ~71.7% after 300 epochs (METHOD.md sections 2 and 6).
NAYER_PUBLISHED = {("cifar100", "wrn40_2", "wrn16_2"): 71.7}


@dataclass(frozen=True)
class PairPreset:
    """A teacher -> student pair on a dataset, with NAYER's schedule and the published accuracies."""

    name: str
    dataset: DatasetInfo
    teacher: str  # fastcae.models name
    student: str
    config: dict = field(default_factory=dict)  # DistillConfig overrides (NAYER's schedule and loss weights)
    paradigm_config: dict = field(default_factory=dict)  # paradigm -> overrides applied only to that paradigm
    expected: dict = field(default_factory=dict)  # "teacher", "fast10", "cmi", "nayer" -> top-1 % (None: unknown)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.dataset.class_names

    @property
    def prompt_names(self) -> list[str]:
        """Class names as words for the text encoder ("maple_tree" -> "maple tree")."""
        return [n.replace("_", " ") for n in self.dataset.class_names]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.dataset.image_shape

    @property
    def mean(self) -> tuple[float, ...]:
        return self.dataset.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.dataset.std


def _build() -> dict[str, PairPreset]:
    presets = {}
    for dataset, info in DATASETS.items():
        for teacher, student in PAIRS:
            name = f"{dataset}-{teacher}-{student}"
            t, fast10, cmi = PUBLISHED[dataset][(teacher, student)]
            expected = {"teacher": t, "fast10": fast10, "cmi": cmi,
                        "nayer": NAYER_PUBLISHED.get((dataset, teacher, student))}
            config, paradigm_config = nayer_preset(dataset)
            presets[name] = PairPreset(name, info, teacher, student, config=config, paradigm_config=paradigm_config,
                                       expected=expected)
            register_preset(name, config, paradigm_config)
    return presets


PAIR_PRESETS: dict[str, PairPreset] = _build()


def list_presets() -> list[str]:
    """Every preset name ``make_config`` and ``distill`` accept: the config-only presets
    (``fastcae.config.PRESETS``), sorted, then the pair presets, sorted."""
    return preset_names()


def list_pair_presets() -> list[str]:
    """Names of the teacher -> student pair presets, sorted (each one a ``get_preset`` name)."""
    return sorted(PAIR_PRESETS)


def is_pair_preset(name) -> bool:
    return isinstance(name, str) and name in PAIR_PRESETS


def get_preset(name: str) -> PairPreset:
    """The pair preset ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    try:
        return PAIR_PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown pair preset {name!r}; known pair presets: {', '.join(list_pair_presets())}"
                         ) from None


def format_presets_table() -> str:
    """A plain-text table of the pair presets and the published top-1 accuracies to compare with."""

    def pct(v):
        return f"{v:.2f}" if v is not None else "-"

    header = f"{'preset':<30} {'epochs':>6} {'teacher':>8} {'Fast-10':>8} {'CMI':>8} {'NAYER':>8}"
    lines = [header, "-" * len(header)]
    for name in list_pair_presets():
        p = PAIR_PRESETS[name]
        e = p.expected
        lines.append(f"{name:<30} {p.config['epochs']:>6} {pct(e['teacher']):>8} {pct(e['fast10']):>8} "
                     f"{pct(e['cmi']):>8} {pct(e['nayer']):>8}")
    lines.append("")
    lines.append("Published top-1 % (METHOD.md section 6); NAYER's ~71.7% is after 300 epochs, read off its plot.")
    lines.append("Config-only presets (schedules, no models): " + ", ".join(sorted(PRESETS)))
    return "\n".join(lines)
