"""Every named preset, in one registry: NAYER's schedules, the embedded digits demo, and the teacher -> student
pairs of the DFKD literature (CIFAR-10/100), ready to distil by name.

A preset is a set of ``DistillConfig`` overrides, and per paradigm the overrides that apply only to it (NAYER's
generator steps). A pair preset also bundles what a run needs besides the teacher's weights: the dataset's class
names, image shape and normalisation, the teacher and student architectures (``fastcae.models``), and the
accuracies published for the pair (METHOD.md section 6), so a result can be compared with the literature without
looking the numbers up again. A config-only preset (a schedule) names no dataset and no models.

``list_presets()`` names them, ``get_preset(name)`` returns one, and ``make_config`` (here, as it applies them)
builds a validated ``DistillConfig`` from the defaults, a preset and the user's keywords. This module sits just
above ``fastcae.config`` and ``fastcae.datasets``; ``distill`` and the CLI import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import NAYER_G_STEPS, DistillConfig
from .datasets import DATASETS, DatasetInfo

# ------------------------------------------------------------------------------- NAYER's published setting
# NAYER's schedule per dataset (METHOD.md section 2), as DistillConfig overrides. g_steps is not in it: each
# paradigm keeps its own default (cae: 10) and NAYER's per-dataset generator steps (fastcae.config.NAYER_G_STEPS)
# apply only to the nayer paradigm.
NAYER_SCHEDULES = {
    "cifar10": dict(epochs=120, warmup_epochs=20, warmup_synth_batches=10, synth_batches=2, student_steps=400,
                    synth_batch_size=400, student_batch_size=512, lr_s=0.2),
    "cifar100": dict(epochs=220, warmup_epochs=20, warmup_synth_batches=10, synth_batches=2, student_steps=400,
                     synth_batch_size=400, student_batch_size=512, lr_s=0.2),
    "tinyimagenet": dict(epochs=320, warmup_epochs=20, warmup_synth_batches=10, synth_batches=4,
                         student_steps=1000, synth_batch_size=200, student_batch_size=256, lr_s=0.1),
}
# NAYER's loss weights and student optimiser; equal to DistillConfig's defaults today, spelled out so a preset
# keeps meaning NAYER's setting if a default changes.
NAYER_LOSS = dict(bn_weight=10.0, bn_momentum=0.9, ce_weight=0.5, adv_weight=1.33, temperature=20.0, g_life=10,
                  lr_g=4e-3, momentum=0.9, weight_decay=1e-4, lr_min=2e-4)


def nayer_preset(dataset: str) -> tuple[dict, dict]:
    """``(overrides, per-paradigm overrides)`` of NAYER's setting on ``dataset``: its schedule and loss weights
    for every paradigm, its generator steps for ``nayer`` only."""
    return {**NAYER_SCHEDULES[dataset], **NAYER_LOSS}, {"nayer": {"g_steps": NAYER_G_STEPS[dataset]}}


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
class Preset:
    """A named set of ``DistillConfig`` overrides. A teacher -> student pair (``is_pair``) also names its dataset,
    the two architectures and the published accuracies; a config-only preset (a schedule) leaves them out."""

    name: str
    config: dict  # DistillConfig overrides (NAYER's schedule and loss weights, or the demo's)
    paradigm_config: dict = field(default_factory=dict)  # paradigm -> overrides applied only to that paradigm
    dataset: DatasetInfo | None = None  # a pair's dataset; None: a config-only preset
    teacher: str | None = None  # a pair's fastcae.models names
    student: str | None = None
    expected: dict = field(default_factory=dict)  # "teacher", "fast10", "cmi", "nayer" -> top-1 % (None: unknown)

    @property
    def is_pair(self) -> bool:
        return self.dataset is not None

    # A pair's data, from its dataset (a config-only preset has none).
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


def _build() -> dict[str, Preset]:
    presets = [Preset(f"nayer-{dataset}", *nayer_preset(dataset)) for dataset in NAYER_SCHEDULES]
    # The embedded digits demo (METHOD.md section 7's prototype): small batches, few generator steps,
    # KD at T = 4, no flip (digits have a handedness), a half-width generator for 16x16 images.
    # Tuned on 2 CPU cores.
    presets.append(Preset("digits", dict(
        epochs=40, warmup_epochs=2, warmup_synth_batches=5, synth_batches=1, student_steps=100,
        synth_batch_size=200, student_batch_size=128, g_steps=10, generator_width=32, temperature=4.0,
        lr_s=0.05, lr_min=1e-3, flip=False, text_encoder="minilm", prompt="a photo of the digit {name}",
    )))
    for dataset, info in DATASETS.items():
        for teacher, student in PAIRS:
            t, fast10, cmi = PUBLISHED[dataset][(teacher, student)]
            expected = {"teacher": t, "fast10": fast10, "cmi": cmi,
                        "nayer": NAYER_PUBLISHED.get((dataset, teacher, student))}
            config, paradigm_config = nayer_preset(dataset)
            presets.append(Preset(f"{dataset}-{teacher}-{student}", config, paradigm_config, info, teacher, student,
                                  expected))
    return {p.name: p for p in presets}


_PRESETS: dict[str, Preset] = _build()  # read through list_presets and get_preset


def list_presets(pairs: bool | None = None) -> list[str]:
    """Every preset name ``make_config`` and ``distill`` accept: the config-only presets, sorted, then the
    teacher -> student pairs, sorted. ``pairs=True``: the pairs only; ``pairs=False``: the config-only ones."""
    names = [name for name, p in _PRESETS.items() if pairs is None or p.is_pair == pairs]
    return sorted(names, key=lambda name: (_PRESETS[name].is_pair, name))


def get_preset(name: str) -> Preset:
    """The preset ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    try:
        return _PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())}") from None


def make_config(preset: str | None = None, config: DistillConfig | None = None, **overrides) -> DistillConfig:
    """``config`` (or the defaults with ``preset`` applied) <- keyword overrides, validated.

    A preset's per-paradigm values (NAYER's g_steps) apply only when the final paradigm is theirs and the
    caller did not set that field, so ``paradigm="cae"`` keeps cae's own default.
    """
    named = get_preset(preset) if preset is not None else None
    if named is not None and config is not None:
        raise ValueError("give a preset or a full config, not both (apply a preset with make_config(preset=...) "
                         "and adjust it with keywords)")
    cfg = config if config is not None else DistillConfig()
    if named is not None:
        cfg = cfg.replace(**named.config)
    cfg = cfg.replace(**overrides)
    per_paradigm = named.paradigm_config.get(cfg.paradigm, {}) if named is not None else {}
    cfg = cfg.replace(**{k: v for k, v in per_paradigm.items() if k not in overrides})
    cfg.validate()
    return cfg


def format_presets_table() -> str:
    """A plain-text table of the pair presets and the published top-1 accuracies to compare with."""

    def pct(v):
        return f"{v:.2f}" if v is not None else "-"

    header = f"{'preset':<30} {'epochs':>6} {'teacher':>8} {'Fast-10':>8} {'CMI':>8} {'NAYER':>8}"
    lines = [header, "-" * len(header)]
    for name in list_presets(pairs=True):
        p = _PRESETS[name]
        e = p.expected
        lines.append(f"{name:<30} {p.config['epochs']:>6} {pct(e['teacher']):>8} {pct(e['fast10']):>8} "
                     f"{pct(e['cmi']):>8} {pct(e['nayer']):>8}")
    lines.append("")
    lines.append("Published top-1 % (METHOD.md section 6); NAYER's ~71.7% is after 300 epochs, read off its plot.")
    lines.append("Config-only presets (schedules, no models): " + ", ".join(list_presets(pairs=False)))
    return "\n".join(lines)
