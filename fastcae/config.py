"""One dataclass holds every knob of a distillation run; each default says where it comes from.

Defaults follow NAYER's CIFAR-10 loop and loss weights (METHOD.md section 2) unless marked "decision"
(METHOD.md section 5). Named presets are plain dicts of overrides, applied before the user's keywords.

This is the bottom layer: it imports nothing else of fastcae. The names a field may take (paradigms, noise
sources, pool policies and dtypes, compile modes, precisions) are defined here, once, and the modules that
implement them import these lists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# ---------------------------------------------------------------------------------- the names of things
PARADIGMS = ("cae", "nayer", "fast")  # fastcae.paradigms implements one synthesizer per name
NOISE_SOURCES = ("gaussian", "uniform", "laplace", "rademacher")  # CEND's sources; an id is a position here
POOL_POLICIES = ("fifo", "reservoir")  # fastcae.pool: what a full pool replaces
POOL_DTYPES = ("uint8", "bfloat16")  # fastcae.pool: how the pool stores images (torch dtype names)
COMPILE_MODES = ("eager", "inductor", "cudagraphs", "aot_eager")  # how the two steps run (torch.compile)
PRECISIONS = ("fp32", "bf16")
# the prompt each class name goes into for the text encoder; fastcae.synthesis.embeddings takes it as its default
DEFAULT_PROMPT = "a photo of a {name}"


def check_compile_mode(compile) -> None:
    """``compile`` is True, False, None (auto) or one of ``COMPILE_MODES``; else a ValueError naming them."""
    if compile not in (None, True, False) and compile not in COMPILE_MODES:
        raise ValueError(f"compile={compile!r} is not a compile mode; use True, False, None (auto) or one of "
                         f"{', '.join(COMPILE_MODES)}")


def check_noise_sources(names) -> None:
    """Raise ``ValueError`` listing the known sources if ``names`` holds one that is not in ``NOISE_SOURCES``."""
    unknown = [n for n in names if n not in NOISE_SOURCES]
    if unknown:
        raise ValueError(f"unknown noise sources {unknown}; known: {', '.join(NOISE_SOURCES)}")


# ------------------------------------------------------------------------------- NAYER's published setting
# NAYER's schedule per dataset (METHOD.md section 2), as DistillConfig overrides. g_steps is not in it: each
# paradigm keeps its own default (cae: 10) and NAYER's per-dataset generator steps are in NAYER_G_STEPS,
# applied only to the nayer paradigm.
NAYER_SCHEDULES = {
    "cifar10": dict(epochs=120, warmup_epochs=20, warmup_synth_batches=10, synth_batches=2, student_steps=400,
                    synth_batch_size=400, student_batch_size=512, lr_s=0.2),
    "cifar100": dict(epochs=220, warmup_epochs=20, warmup_synth_batches=10, synth_batches=2, student_steps=400,
                     synth_batch_size=400, student_batch_size=512, lr_s=0.2),
    "tinyimagenet": dict(epochs=320, warmup_epochs=20, warmup_synth_batches=10, synth_batches=4,
                         student_steps=1000, synth_batch_size=200, student_batch_size=256, lr_s=0.1),
}
NAYER_G_STEPS = {"cifar10": 30, "cifar100": 40, "tinyimagenet": 60}  # METHOD.md section 2
# NAYER's loss weights and student optimiser; equal to DistillConfig's defaults today, spelled out so a preset
# keeps meaning NAYER's setting if a default changes.
NAYER_LOSS = dict(bn_weight=10.0, bn_momentum=0.9, ce_weight=0.5, adv_weight=1.33, temperature=20.0, g_life=10,
                  lr_g=4e-3, momentum=0.9, weight_decay=1e-4, lr_min=2e-4)


def nayer_preset(dataset: str) -> tuple[dict, dict]:
    """``(overrides, per-paradigm overrides)`` of NAYER's setting on ``dataset``: its schedule and loss weights
    for every paradigm, its generator steps for ``nayer`` only."""
    return {**NAYER_SCHEDULES[dataset], **NAYER_LOSS}, {"nayer": {"g_steps": NAYER_G_STEPS[dataset]}}


# Generator steps per synthesis batch when ``g_steps`` is None. cae: decision (the paradigm change: the
# generator persists, noise gives diversity, so few steps; the digits prototype found 10 far better than 30
# on a budget). nayer: NAYER's CIFAR-10 setting. fast: k = 5 adaptation steps (Fast-DFKD's middle setting).
DEFAULT_G_STEPS = {"cae": 10, "nayer": NAYER_G_STEPS["cifar10"], "fast": 5}


@dataclass
class DistillConfig:
    # --- method -------------------------------------------------------------------------------------
    paradigm: str = "cae"  # "cae" (CEND, persistent generator), "nayer" (noisy layer), "fast" (meta-generator)

    # --- schedule (NAYER, CIFAR-10) ---------------------------------------------------------------------
    epochs: int = 120  # all epochs, warm-up included
    warmup_epochs: int = 20  # synthesis only, no student training, no adversarial term
    warmup_synth_batches: int = 10  # synthesis batches per warm-up epoch
    synth_batches: int = 2  # synthesis batches per epoch after warm-up (4 on Tiny-ImageNet)
    student_steps: int = 400  # student steps per epoch after warm-up (1000 on Tiny-ImageNet)
    synth_batch_size: int = 400  # images per synthesis batch (200 on Tiny-ImageNet)
    student_batch_size: int = 512  # 256 on Tiny-ImageNet
    g_steps: int | None = None  # generator steps per synthesis batch; None: DEFAULT_G_STEPS[paradigm]
    g_life: int = 10  # re-create the generator (and its optimiser) every g_life epochs
    max_seconds: float | None = None  # wall-time budget; without an explicit schedule, one is planned to fit it
    plan: dict | None = None  # what fastcae.plan chose and measured (recorded, not a knob; None: not planned)

    # --- generator ----------------------------------------------------------------------------------
    generator_width: int = 64  # ngf: the body runs at 2*ngf then ngf channels (128 -> 64, as NAYER)
    lr_g: float = 4e-3  # Adam lr of the generator (NAYER)
    betas_g: tuple[float, float] = (0.5, 0.999)
    noisy_dim: int = 1000  # nayer: width of the K-to-1 noisy layer
    latent_dim: int = 256  # fast: width of z
    lr_z: float = 0.01  # fast: Adam lr of z during adaptation

    # --- CEND (decision, METHOD.md 5.2) ---------------------------------------------------------------
    noise_sources: tuple[str, ...] = NOISE_SOURCES
    noise_magnitudes: tuple = (1.0, 1.0, 1.0, 1.0)  # per source, relative to rms(e_off); floats or [dim] lists
    noise_magnitudes_end: tuple | None = None  # where a schedule ends; None: constant
    noise_schedule: str = "constant"  # "constant", "linear" or "cosine" over post-warm-up progress

    # --- category embeddings (decision, METHOD.md 5.1) ------------------------------------------------
    text_encoder: str = "auto"  # "auto", "clip", "minilm", "sentence-transformers:<name or dir>", "random"
    prompt: str = DEFAULT_PROMPT
    allow_random_fallback: bool = False  # "auto" may fall back to random class-index vectors only if True
    embedding_cache: str | None = None  # directory; None: ~/.cache/fastcae/embeddings

    # --- loss weights (NAYER) ---------------------------------------------------------------------------
    bn_weight: float = 10.0  # BN-statistics loss
    bn_momentum: float = 0.9  # EMA blend weight of earlier batches' statistics
    # multiplier of the teacher's first BN layer's term (DeepInversion's first_bn_multiplier); 1 is NAYER's plain
    # sum. A planned run takes fastcae.defaults.FIRST_BN_WEIGHT unless bn_first_weight is given
    bn_first_weight: float = 1.0
    ce_weight: float = 0.5  # teacher cross-entropy to the requested class
    adv_weight: float = 1.33  # adversarial term, after warm-up only
    temperature: float = 20.0  # KD temperature of the student loss
    cncl_weight: float = 0.1  # CNCL (SupCon) weight in the student loss; 0 turns CNCL off (decision)
    cncl_temperature: float = 0.1  # decision
    cncl_dim: int = 128  # projection head output width (decision)

    # --- student optimiser (NAYER) ------------------------------------------------------------------
    lr_s: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_min: float = 2e-4  # cosine decay floor over the post-warm-up epochs

    # --- augmentation -----------------------------------------------------------------------------------
    # random horizontal flip (off for digits, text, anything with a handedness); None: decided after the warm-up
    # from the teacher (fastcae.health.flip_consistency), what a planned run does unless flip is given
    flip: bool | None = True
    crop_padding: int | None = None  # random-crop padding; None: H // 8 (4 at 32x32)
    # CutMix on this share of each student batch (fastcae.augment.cutmix); 0 is NAYER's student step. A planned
    # run turns it on when the run has many student steps (fastcae.plan.planned_cutmix) unless cutmix is given
    cutmix: float = 0.0

    # --- pool (decision, METHOD.md 5.5) ---------------------------------------------------------------
    pool_capacity: int | None = None  # images; None: every image the schedule keeps (NAYER never evicts)
    pool_policy: str = "fifo"  # when full: "fifo" replaces the oldest, "reservoir" keeps a uniform sample
    pool_dtype: str = "uint8"  # "uint8" (as NAYER's PNGs, 4x smaller) or "bfloat16"

    # --- runtime ----------------------------------------------------------------------------------------
    device: str | None = None  # None: cuda if available, else cpu
    seed: int = 0
    log_every: int = 50  # student steps between reads of the loss (each read is a host sync)
    eval_every: int = 1  # epochs between evaluations (when an eval set is given)
    checkpoint_every: int = 1  # epochs between checkpoints (when a checkpoint dir is given)
    progress: bool = True  # tqdm bar over epochs
    # torch.compile the two steps (fastcae.steps): None = auto (CUDA graphs on CUDA, eager on CPU, where
    # inductor's C++ builds take minutes); True = "cudagraphs" on CUDA, "inductor" on CPU; False = "eager";
    # or a mode name: "eager", "inductor", "cudagraphs", "aot_eager" (debugging)
    compile: bool | str | None = None
    # "bf16": the generator, teacher and student forwards run under bf16 autocast (weights, optimiser states,
    # loss reductions and BN statistics stay fp32; the fused kernels take bf16 activations); "fp32"; None =
    # auto: bf16 on a CUDA GPU that supports it; on a CPU, bf16 in a planned run where the CPU computes it
    # natively and the run's steps measure faster in it (fastcae.measure.bf16_pays), else fp32
    precision: str | None = None
    # the teacher, student and generator in NHWC (channels_last) memory: cuDNN's and oneDNN's fastest convolutions
    # want it. None = auto: on CUDA, and on a CPU whose torch has oneDNN (measured there on 2 cores: steps 1.1-3.5x
    # faster, fastcae.steps.resolve_channels_last)
    channels_last: bool | None = None

    def __post_init__(self):
        # tuples survive a JSON round trip as lists; normalise so equal configs compare equal
        self.betas_g = tuple(self.betas_g)
        self.noise_sources = tuple(self.noise_sources)
        self.noise_magnitudes = tuple(
            tuple(m) if isinstance(m, (list, tuple)) else float(m) for m in self.noise_magnitudes
        )
        if self.noise_magnitudes_end is not None:
            self.noise_magnitudes_end = tuple(
                tuple(m) if isinstance(m, (list, tuple)) else float(m) for m in self.noise_magnitudes_end
            )

    # ------------------------------------------------------------------------------------------------
    @property
    def generator_steps(self) -> int:
        return self.g_steps if self.g_steps is not None else DEFAULT_G_STEPS[self.paradigm]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field that cannot work."""
        if self.paradigm not in PARADIGMS:
            raise ValueError(f"unknown paradigm {self.paradigm!r}; known paradigms: {', '.join(PARADIGMS)}")
        positive = ["epochs", "synth_batch_size", "student_batch_size", "g_life", "generator_width", "log_every"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be within [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if self.g_steps is not None and self.g_steps <= 0:
            raise ValueError(f"g_steps must be positive, got {self.g_steps}")
        if not self.noise_sources:
            raise ValueError("noise_sources is empty: CEND needs at least one noise source")
        check_noise_sources(self.noise_sources)
        if len(self.noise_magnitudes) != len(self.noise_sources):
            raise ValueError(
                f"noise_magnitudes has {len(self.noise_magnitudes)} entries for "
                f"{len(self.noise_sources)} noise sources: give one per source"
            )
        if self.pool_policy not in POOL_POLICIES:
            raise ValueError(f"unknown pool_policy {self.pool_policy!r}; known: {', '.join(POOL_POLICIES)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; use one of {', '.join(PRECISIONS)} or None (auto: bf16 "
                             f"on CUDA GPUs that support it)")
        if self.pool_dtype not in POOL_DTYPES:
            raise ValueError(f"unknown pool_dtype {self.pool_dtype!r}; known: {', '.join(POOL_DTYPES)}")
        check_compile_mode(self.compile)
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be a positive number of seconds, got {self.max_seconds}")
        if not 0 <= self.cutmix <= 1:
            raise ValueError(f"cutmix is the share of each student batch to mix, within [0, 1]; got {self.cutmix}")
        for name in ("bn_weight", "bn_first_weight", "ce_weight", "adv_weight", "cncl_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        return cls(**d)

    def replace(self, **overrides) -> "DistillConfig":
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown distill options {unknown}; see fastcae.DistillConfig for the known ones")
        return dataclasses.replace(self, **overrides)


# Fields whose change makes a checkpoint unusable (shapes of buffers, parameters and the pool).
RESUME_KEYS = (
    "paradigm",
    "synth_batch_size",
    "generator_width",
    "noisy_dim",
    "latent_dim",
    "noise_sources",
    "cncl_dim",
    "pool_dtype",
    "pool_capacity",
)


# Named config-only presets: overrides of the defaults, carrying NAYER's schedules (METHOD.md section 2) and
# the small embedded demo. Paper-scale teacher -> student pairs (models, classes, normalisation, published
# accuracies) live in ``fastcae.presets``, which registers them here (``register_preset``), so ``make_config``
# accepts both kinds of name and this module still imports nothing of fastcae.
PRESETS: dict[str, dict] = {
    **{f"nayer-{dataset}": nayer_preset(dataset)[0] for dataset in NAYER_SCHEDULES},
    # The embedded digits demo (METHOD.md section 7's prototype): small batches, few generator steps,
    # KD at T = 4, no flip (digits have a handedness), a half-width generator for 16x16 images.
    # Tuned on 2 CPU cores.
    "digits": dict(
        epochs=40, warmup_epochs=2, warmup_synth_batches=5, synth_batches=1, student_steps=100,
        synth_batch_size=200, student_batch_size=128, g_steps=10, generator_width=32, temperature=4.0,
        lr_s=0.05, lr_min=1e-3, flip=False, text_encoder="minilm", prompt="a photo of the digit {name}",
    ),
}
# Per config-only preset, paradigm -> overrides that apply only to that paradigm (NAYER's generator steps).
PRESET_PARADIGM_OVERRIDES: dict[str, dict[str, dict]] = {
    f"nayer-{dataset}": nayer_preset(dataset)[1] for dataset in NAYER_SCHEDULES
}

# Presets that the modules above this one define (the teacher -> student pairs): name -> (overrides,
# per-paradigm overrides).
_REGISTERED_PRESETS: dict[str, tuple[dict, dict]] = {}


def register_preset(name: str, overrides: dict, paradigm_overrides: dict | None = None) -> None:
    """Make ``name`` a preset ``make_config`` applies: ``overrides`` of the defaults, and per paradigm the
    overrides that apply only when the run's paradigm is that one. Registering a name again replaces it
    (a module reload); a name of ``PRESETS`` cannot be taken."""
    if name in PRESETS:
        raise ValueError(f"{name!r} is already a config-only preset (fastcae.config.PRESETS)")
    _REGISTERED_PRESETS[name] = (overrides, paradigm_overrides or {})


def preset_names() -> list[str]:
    """Every preset name ``make_config`` accepts: the config-only ones, sorted, then the registered pairs, sorted."""
    return sorted(PRESETS) + sorted(_REGISTERED_PRESETS)


def preset_overrides(preset: str) -> tuple[dict, dict]:
    """``(overrides, per-paradigm overrides)`` of a config-only preset (``PRESETS``) or a registered one (the
    pair presets of ``fastcae.presets``); an unknown name is an error listing both kinds."""
    if preset in PRESETS:
        return PRESETS[preset], PRESET_PARADIGM_OVERRIDES.get(preset, {})
    if preset in _REGISTERED_PRESETS:
        return _REGISTERED_PRESETS[preset]
    raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(preset_names())}")


def make_config(preset: str | None = None, config: DistillConfig | None = None, **overrides) -> DistillConfig:
    """``config`` (or the defaults with ``preset`` applied) <- keyword overrides, validated.

    A preset's per-paradigm values (NAYER's g_steps) apply only when the final paradigm is theirs and the
    caller did not set that field, so ``paradigm="cae"`` keeps cae's own default.
    """
    base, per_paradigm = preset_overrides(preset) if preset is not None else ({}, {})
    if preset is not None and config is not None:
        raise ValueError("give a preset or a full config, not both (apply a preset with make_config(preset=...) "
                         "and adjust it with keywords)")
    cfg = config if config is not None else DistillConfig()
    cfg = cfg.replace(**base)
    cfg = cfg.replace(**overrides)
    extra = {k: v for k, v in per_paradigm.get(cfg.paradigm, {}).items() if k not in overrides}
    cfg = cfg.replace(**extra)
    cfg.validate()
    return cfg
