"""One dataclass holds every knob of a distillation run; each default says where it comes from.

Defaults follow NAYER's CIFAR-10 loop and loss weights (METHOD.md section 2) unless marked "decision"
(METHOD.md section 5). Named presets (``fastcae.presets``) are overrides of these defaults; ``make_config``
there applies one, then the user's keywords.

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


# ------------------------------------------------------------------------------- NAYER's generator steps
# NAYER's generator steps per synthesis batch, per dataset (METHOD.md section 2): the nayer paradigm's default
# below is the CIFAR-10 one; NAYER's presets (fastcae.presets) apply their dataset's to the nayer paradigm only.
NAYER_G_STEPS = {"cifar10": 30, "cifar100": 40, "tinyimagenet": 60}


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
