"""Atomic, validated, resumable checkpoints.

``save`` writes to a temporary file in the same directory, flushes it to disk and renames it over
``checkpoint.pt`` (a rename is atomic), after moving the previous checkpoint to ``checkpoint.prev.pt``: a
crash mid-write never leaves a half-written file in place, and the last good state is always kept.
``load`` reads with ``weights_only=True`` (a checkpoint is data, never code), checks the format and that it
was written by a compatible configuration, and names the problem when it cannot be used.
"""

from __future__ import annotations

import os
import pickle
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
    payload = {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(), "fingerprint": cfg.fingerprint(),
               "state": state, "extra": extra or {}}
    latest = directory / LATEST
    # keep the last good checkpoint: load() falls back to it if the new one is missing or unreadable
    if latest.exists():
        os.replace(latest, directory / PREVIOUS)
    atomic_write(latest, lambda tmp: torch.save(payload, tmp))
    return directory / LATEST


def _read(path: Path, device) -> dict:
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated and cannot be read ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fastcae checkpoint")
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
