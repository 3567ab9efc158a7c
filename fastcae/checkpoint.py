"""Atomic, validated, resumable checkpoints and the random state they carry.

``save`` writes to a temporary file in the same directory, flushes it to disk and renames it over
``checkpoint.pt`` (a rename is atomic), after moving the previous checkpoint to ``checkpoint.prev.pt``: a
crash mid-write never leaves a half-written file in place, and the last good state is always kept.
``load`` reads with ``weights_only=True`` (a checkpoint is data, never code), checks the format and that it
was written by a compatible configuration, and names the problem when it cannot be used.

``read_payload`` (the weights-only read and format check) and ``rng_state`` / ``set_rng_state`` (what a resumed
run needs to draw the same random numbers) serve the distillation checkpoints here and the teacher recipe's
alike. A user's teacher or student weights are loaded by ``fastcae.models.weights.load_weights``.
"""

from __future__ import annotations

import os
import pickle
import random
import warnings
import zipfile
from pathlib import Path

import torch

from .atomic import atomic_write
from .config import RESUME_KEYS, DistillConfig

FORMAT = "fastcae-checkpoint"
VERSION = 1
LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, truncated, not ours, or from another configuration."""


def save(directory, state: dict, cfg: DistillConfig, extra: dict | None = None) -> Path:
    """Write ``state`` atomically as ``directory/checkpoint.pt``; the old one becomes ``checkpoint.prev.pt``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(), "state": state, "extra": extra or {}}
    latest = directory / LATEST
    # keep the last good checkpoint: load() falls back to it if the new one is missing or unreadable
    if latest.exists():
        os.replace(latest, directory / PREVIOUS)
    atomic_write(latest, lambda tmp: torch.save(payload, tmp))
    return directory / LATEST


# What torch.load raises on a damaged, truncated or foreign file.
READ_ERRORS = (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError)


def read_payload(path, fmt: str, device="cpu", *, what: str = "checkpoint", error: type = CheckpointError,
                 corrupt_hint: str = "", foreign_hint: str = "") -> dict:
    """The dict saved at ``path`` by fastcae with ``"format": fmt``, read with ``weights_only=True``.

    A file torch cannot read raises ``error`` ("<what> <path> is corrupt or truncated ...<corrupt_hint>"), one
    that is not such a dict raises ``error`` ("<path> is not a fastcae <what><foreign_hint>")."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except READ_ERRORS as err:
        raise error(f"{what} {path} is corrupt or truncated and cannot be read ({err}){corrupt_hint}") from err
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise error(f"{path} is not a fastcae {what}{foreign_hint}")
    return payload


def _read(path: Path, device) -> dict:
    payload = read_payload(path, FORMAT, device)
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {payload.get('version')}; this fastcae "
                              f"reads version {VERSION}")
    return payload


def check_compatible(payload: dict, cfg: DistillConfig, path) -> None:
    """Refuse a checkpoint whose configuration changes shapes this run relies on; name the fields."""
    try:
        saved = DistillConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} holds a configuration this fastcae cannot read ({err})") from err
    diffs = []
    for key in RESUME_KEYS:
        a, b = getattr(saved, key), getattr(cfg, key)
        if a != b:
            diffs.append(f"{key}: checkpoint {a!r}, this run {b!r}")
    if diffs:
        raise CheckpointError(f"checkpoint {path} comes from another configuration ("
                              + "; ".join(diffs) + "): resume with the same settings or use a new directory")


def saved_config(directory) -> DistillConfig | None:
    """The configuration of the newest readable checkpoint in ``directory`` (None if there is none)."""
    directory = Path(directory)
    for path in (directory / LATEST, directory / PREVIOUS):
        if path.exists():
            try:
                return DistillConfig.from_dict(_read(path, "cpu")["config"])
            except (CheckpointError, TypeError, ValueError):
                continue
    return None


def load(directory, cfg: DistillConfig, device="cpu") -> dict | None:
    """The newest usable checkpoint's payload in ``directory``, or None if there is none.

    If ``checkpoint.pt`` is unreadable but ``checkpoint.prev.pt`` is good, warn and use the previous one.
    A configuration mismatch is always an error (falling back would silently train something else).
    """
    directory = Path(directory)
    latest, previous = directory / LATEST, directory / PREVIOUS
    if not latest.exists() and not previous.exists():
        return None
    try:
        if not latest.exists():
            raise CheckpointError(f"{latest} is missing")
        payload = _read(latest, device)
        used = latest
    except CheckpointError as err:
        if not previous.exists():
            raise
        warnings.warn(f"{err}; resuming from the previous checkpoint {previous}", stacklevel=2)
        payload = _read(previous, device)
        used = previous
    check_compatible(payload, cfg, used)
    return payload


# ------------------------------------------------------------------------------------------ random state
def rng_state() -> dict:
    """The random state a resumed run needs to continue bit-identically: torch's CPU generator, Python's
    ``random`` and, where CUDA is available, every CUDA device's generator. Saved with ``torch.save`` and read
    back with ``weights_only=True`` (tensors and a list of ints)."""
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, device=None) -> None:
    """Restore what ``rng_state`` captured. Also reads the teacher checkpoints of earlier fastcae versions
    (``{"cpu": ..., "cuda": <one device's state>}``; ``device``: the device that state belongs to)."""
    torch.set_rng_state((state["torch"] if "torch" in state else state["cpu"]).cpu())
    if "python" in state:
        random.setstate((3, tuple(state["python"]), None))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, torch.Tensor):  # one device's state (an earlier teacher checkpoint)
            torch.cuda.set_rng_state(cuda.cpu(), device if device is not None else "cuda")
        else:
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
