"""Named teacher -> student pairs of the DFKD literature (CIFAR-10/100), ready to distil by name.

A pair preset bundles what a run needs besides the teacher's weights: the dataset's class names, image shape
and normalisation, the teacher and student architectures (``fastcae.models``), NAYER's schedule as
``DistillConfig`` overrides, and the accuracies published for the pair (METHOD.md section 6), so a result
can be compared with the literature without looking the numbers up again.

``fastcae.config.PRESETS`` holds config-only presets (schedules); ``make_config`` and ``distill`` accept the
names of both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# CIFAR-100 fine labels in torchvision's order (``torchvision.datasets.CIFAR100(...).classes``).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)


@dataclass(frozen=True)
class DatasetInfo:
    """What a teacher trained on: class names, image shape and the normalisation of its input."""

    name: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# Normalisation as the CIFAR DFKD code bases use it (METHOD.md section 6).
DATASETS = {
    "cifar10": DatasetInfo("cifar10", CIFAR10_CLASSES, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": DatasetInfo("cifar100", CIFAR100_CLASSES, (3, 32, 32), (0.5071, 0.4867, 0.4408),
                            (0.2675, 0.2565, 0.2761)),
}

# NAYER's schedule (METHOD.md section 2) per dataset, as DistillConfig overrides. g_steps stays unset so each
# paradigm keeps its own default (cae: 10); NAYER's per-dataset generator steps go in NAYER_G_STEPS.
SCHEDULES = {
    "cifar10": dict(epochs=120, warmup_epochs=20, warmup_synth_batches=10, synth_batches=2, student_steps=400,
                    synth_batch_size=400, student_batch_size=512, lr_s=0.2),
    "cifar100": dict(epochs=220, warmup_epochs=20, warmup_synth_batches=10, synth_batches=2, student_steps=400,
                     synth_batch_size=400, student_batch_size=512, lr_s=0.2),
}
NAYER_G_STEPS = {"cifar10": 30, "cifar100": 40}
# NAYER's loss weights and student optimiser; equal to DistillConfig's defaults today, spelled out so a preset
# keeps meaning NAYER's setting if a default changes.
NAYER_LOSS = dict(bn_weight=10.0, bn_momentum=0.9, ce_weight=0.5, adv_weight=1.33, temperature=20.0, g_life=10,
                  lr_g=4e-3, momentum=0.9, weight_decay=1e-4, lr_min=2e-4)

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
            presets[name] = PairPreset(name, info, teacher, student, config={**SCHEDULES[dataset], **NAYER_LOSS},
                                       paradigm_config={"nayer": {"g_steps": NAYER_G_STEPS[dataset]}},
                                       expected=expected)
    return presets


PAIR_PRESETS: dict[str, PairPreset] = _build()


def list_presets() -> list[str]:
    """Names of the pair presets, sorted."""
    return sorted(PAIR_PRESETS)


def is_pair_preset(name) -> bool:
    return isinstance(name, str) and name in PAIR_PRESETS


def get_preset(name: str) -> PairPreset:
    """The pair preset ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    try:
        return PAIR_PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown pair preset {name!r}; known pair presets: {', '.join(list_presets())}") from None


def format_presets_table() -> str:
    """A plain-text table of the pair presets and the published top-1 accuracies to compare with."""

    def pct(v):
        return f"{v:.2f}" if v is not None else "-"

    header = f"{'preset':<30} {'epochs':>6} {'teacher':>8} {'Fast-10':>8} {'CMI':>8} {'NAYER':>8}"
    lines = [header, "-" * len(header)]
    for name in list_presets():
        p = PAIR_PRESETS[name]
        e = p.expected
        lines.append(f"{name:<30} {p.config['epochs']:>6} {pct(e['teacher']):>8} {pct(e['fast10']):>8} "
                     f"{pct(e['cmi']):>8} {pct(e['nayer']):>8}")
    lines.append("")
    lines.append("Published top-1 % (METHOD.md section 6); NAYER's ~71.7% is after 300 epochs, read off its plot.")
    lines.append("Config-only presets (schedules, no models): " + ", ".join(sorted(_config_presets())))
    return "\n".join(lines)


def _config_presets():
    from .config import PRESETS  # imported here: config imports this module lazily too

    return PRESETS
