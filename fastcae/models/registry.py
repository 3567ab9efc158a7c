"""A small name -> constructor registry (timm style), so configs and the CLI can name networks by string.

Each entry is a function ``fn(num_classes=..., in_chans=..., **kwargs) -> nn.Module`` registered under its
``__name__``, with an optional ``default_cfg`` dict describing the input it expects (``input_size``,
``mean``, ``std``, ...). The teacher's normalisation lives there rather than inside the model because the
generator produces images in [0, 1] and the training loop normalises them before the teacher sees them.
``create_model`` hands that config to the model as ``model.pretrained_cfg`` (timm's attribute name), so a
consumer holding only the model (the CLI, an export) still knows what input it expects.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import inspect
from typing import Any, Callable

from torch import nn

from ..datasets import DATASETS

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


def unknown_name_error(kind: str, name: str, known: list[str]) -> ValueError:
    """An error naming the few known names closest to ``name`` (a typo's fix), not a list of every name."""
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"closest known {kind}s: {', '.join(close)}" if close else f"no known {kind}s are close"
    return ValueError(f"unknown {kind} {name!r}; {hint} ({len(known)} known {kind}s in all)")


def _lookup(name: str) -> ModelFn:
    try:
        return _MODELS[name]
    except KeyError:
        raise unknown_name_error("model", name, list_models()) from None


def _default_arg(fn: ModelFn, arg: str) -> Any:
    try:
        param = inspect.signature(fn).parameters.get(arg)
    except (TypeError, ValueError):
        return None
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def built_cfg(name: str, **kwargs: Any) -> dict[str, Any]:
    """The default config of ``name`` as built with ``kwargs``: ``num_classes`` and the input channels as built,
    and the ``dataset`` (or ``mean``/``std``) dropped where the build no longer fits them, so that the config
    never claims CIFAR-10's class names for a 100-way head, nor 3-channel statistics for a 1-channel input."""
    fn = _lookup(name)
    cfg = {**copy.deepcopy(_DEFAULT_CFGS[name]), "architecture": name}
    num_classes = kwargs.get("num_classes", _default_arg(fn, "num_classes"))
    if num_classes is not None:
        dataset = DATASETS.get(cfg.get("dataset"))
        expected = cfg.get("num_classes", dataset.num_classes if dataset else num_classes)
        if expected != num_classes:
            cfg.pop("dataset", None)
        cfg["num_classes"] = num_classes
    in_chans = kwargs.get("in_chans", _default_arg(fn, "in_chans"))
    if in_chans is not None and "input_size" in cfg and cfg["input_size"][0] != in_chans:
        cfg["input_size"] = (in_chans, *cfg["input_size"][1:])
        cfg.pop("dataset", None)
        for key in ("mean", "std"):
            if len(cfg.get(key, ())) != in_chans:
                cfg.pop(key, None)
    return cfg


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; keyword arguments (``num_classes``, ``in_chans``, ...) pass through.

    The model carries ``pretrained_cfg`` (``built_cfg``): the input it expects travels with it."""
    model = _lookup(name)(**kwargs)
    model.pretrained_cfg = built_cfg(name, **kwargs)
    return model


def model_default_cfg(name: str) -> dict[str, Any]:
    """A copy of the model's default config (expected input size, normalisation), safe to modify."""
    _lookup(name)
    return copy.deepcopy(_DEFAULT_CFGS[name])
