"""A small name -> constructor registry (timm style), so configs and the CLI can name networks by string.

Each entry is a function ``fn(num_classes=..., in_chans=..., **kwargs) -> nn.Module`` registered under its
``__name__``, with an optional ``default_cfg`` dict describing the input it expects (``input_size``,
``mean``, ``std``, ...). The teacher's normalisation lives there rather than inside the model because the
generator produces images in [0, 1] and the training loop normalises them before the teacher sees them.
"""

from __future__ import annotations

import copy
import fnmatch
from typing import Any, Callable

from torch import nn

ModelFn = Callable[..., nn.Module]

_MODELS: dict[str, ModelFn] = {}
_DEFAULT_CFGS: dict[str, dict[str, Any]] = {}


def register_model(fn: ModelFn | None = None, *, default_cfg: dict[str, Any] | None = None):
    """Register a model constructor under ``fn.__name__``.

    Use bare (``@register_model``) or with a config (``@register_model(default_cfg={...})``). Registering a
    different function under a name already taken raises ``ValueError`` so two modules cannot silently
    shadow each other; re-registering the same function (e.g. on module reload) just replaces it.
    """

    def decorate(f: ModelFn) -> ModelFn:
        name = f.__name__
        old = _MODELS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (f.__module__, f.__qualname__):
            raise ValueError(f"model {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        _MODELS[name] = f
        _DEFAULT_CFGS[name] = dict(default_cfg or {})
        return f

    if fn is None:
        return decorate
    return decorate(fn)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` filters them with shell-style wildcards (``"wrn*"``)."""
    names = sorted(_MODELS)
    if pattern is not None:
        names = fnmatch.filter(names, pattern)
    return names


def _lookup(name: str) -> ModelFn:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; keyword arguments (``num_classes``, ``in_chans``, ...) pass through."""
    return _lookup(name)(**kwargs)


def model_default_cfg(name: str) -> dict[str, Any]:
    """A copy of the model's default config (expected input size, normalisation), safe to modify."""
    _lookup(name)
    return copy.deepcopy(_DEFAULT_CFGS[name])
