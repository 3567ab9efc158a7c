"""A user's weights file into a model: read safely, loaded strictly, and one error that says what does not fit.

Reading never unpickles code (``weights_only=True``; a whole pickled model only from an allow-list of zoo and
torch.nn classes). Loading is strict, because a teacher whose weights half-load is a random teacher that
distils nothing, silently. When a file does not fit, the one ``ValueError`` names the missing and unexpected
keys, the shape mismatches and the zoo model the file fits best, which is usually the fix.

It lives beside the zoo (``fastcae.models``) so that ``resolve_model(spec, weights=...)`` can use it, and the
rest of fastcae (export, the CLI) imports it from here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .registry import create_model, list_models, model_default_cfg

# Where training scripts nest the weights in a checkpoint dict, in the order they are looked for.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "student")
# Prefixes that wrappers add to every key: DataParallel/DDP, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
SHOWN = 5  # keys shown per list in an error; the counts say how many there are


def _safe_model_classes() -> dict[str, type]:
    """``"module.QualName" -> class`` of fastcae's zoo models and torch.nn's layers: the only classes fastcae
    lets ``torch.load`` rebuild from a pickled whole model (rebuilding one runs no code beyond setting state)."""
    from . import cifar, features, small  # the package re-exports nothing beyond these

    classes = {}
    candidates = [obj for mod in (cifar, small, features) for obj in vars(mod).values()]
    candidates += [getattr(torch.nn, name) for name in dir(torch.nn)]
    for obj in candidates:
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module) and (
            obj.__module__.startswith("fastcae.models.") or obj.__module__.startswith("torch.nn.modules.")
        ):
            classes[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return classes


def _text_head(path: Path) -> str | None:
    """The file's first bytes when they read as text (a README or an HTML error page saved as .pth)."""
    try:
        head = path.read_bytes()[:40]
        text = head.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text if all(c.isprintable() or c.isspace() for c in text) else None


def _load_pickled_model(path: Path, first_error: Exception):
    """A whole model saved with ``torch.save(model)``: rebuilt only if every class it names is a fastcae zoo
    model or a torch.nn layer; anything else is refused without unpickling it."""
    resave = ("fastcae will not unpickle code from a checkpoint; where that model's code is trusted, re-save "
              "its weights with torch.save(model.state_dict(), 'teacher.pt') and pass that file")
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 (not a torch zip file at all)
        text = _text_head(path)
        holds = f"it holds text ({text!r}...), not a torch or safetensors file; " if text is not None else ""
        raise ValueError(f"{path} cannot be read as a weights-only checkpoint: {holds}({first_error}); save the "
                         f"model's state_dict() rather than the whole pickled model") from first_error
    allowed = _safe_model_classes()
    refused = sorted(name for name in needed if name not in allowed)
    if refused:
        raise ValueError(f"{path} holds a pickled object that needs {', '.join(refused)}: {resave}") from first_error
    with torch.serialization.safe_globals([allowed[name] for name in needed]):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, torch.nn.Module):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict or a model")
    return obj.state_dict()


def _describe(obj) -> str:
    """What a file holds, in a few words, for the error that says it is not a state dict."""
    if isinstance(obj, Tensor):
        return f"a single tensor of shape {list(obj.shape)}"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    if isinstance(obj, dict):
        keys = [str(k) for k in obj][:SHOWN]
        more = ", ..." if len(obj) > SHOWN else ""
        return f"a dict without tensors (keys: {', '.join(keys)}{more})" if obj else "an empty dict"
    return f"a {type(obj).__name__}"


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict in ``path``: ``.safetensors``, or a ``torch.save`` file read with ``weights_only=True``.

    Accepts a bare state dict, one nested under a ``NESTED_KEYS`` key, keys prefixed by DataParallel or
    torch.compile, or a whole fastcae zoo model; anything else is a ``ValueError`` that says what it holds."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{path} cannot be read as a safetensors file ({err})") from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001  (weights_only refused it: a pickled model, checked class by class)
            state = _load_pickled_model(path, err)
    if isinstance(state, torch.nn.Module):  # a zoo model nested in a dict, or allow-listed by the caller
        state = state.state_dict()
    for key in NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), (dict, torch.nn.Module)):
            state = state[key]
            if isinstance(state, torch.nn.Module):
                state = state.state_dict()
    if not isinstance(state, dict) or not any(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} holds {_describe(state)}, not a state dict (parameter name -> tensor): save "
                         f"model.state_dict(), or nest it under one of {', '.join(NESTED_KEYS)}")
    for prefix in WRAPPER_PREFIXES:
        state = {k.removeprefix(prefix) if isinstance(k, str) else k: v for k, v in state.items()}
    return state


def _shapes(state) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, Tensor)}


def _head_width(shapes: dict[str, tuple[int, ...]]) -> tuple[int | None, int | None]:
    """(classes, input channels) a state dict implies: the classifier's output rows and the first conv's input."""
    matrices = [k for k, s in shapes.items() if k.endswith(".weight") and len(s) == 2]
    heads = [k for k in matrices if k.rsplit(".", 2)[-2] in ("fc", "classifier", "head", "linear", "last_linear")]
    head = (heads or matrices or [None])[-1]
    convs = [s for s in shapes.values() if len(s) == 4]
    return (shapes[head][0] if head else None), (convs[0][1] if convs else None)


def closest_zoo_model(state: dict[str, Tensor]) -> list[tuple[str, int | None, int, int]]:
    """The zoo models that fit ``state`` best, best first: ``(name, num_classes, matching tensors, union)``.

    Each candidate is built once with the file's classifier width and input channels, on the meta device (no
    memory, no initialisation cost); one whose construction fails is skipped. A tensor matches when its name
    and shape agree; candidates are ranked by matches over the union of names (1.0: the file fits exactly),
    then by whether the width is the candidate's own default."""
    shapes = _shapes(state)
    width, in_chans = _head_width(shapes)
    kwargs = {k: v for k, v in (("num_classes", width), ("in_chans", in_chans)) if v is not None}
    ranked = []
    for name in list_models():
        try:
            with torch.device("meta"):
                candidate = _shapes(create_model(name, **kwargs).state_dict())
        except Exception:  # noqa: BLE001 (a model that cannot take this width or these channels)
            continue
        matched = sum(1 for k, s in shapes.items() if candidate.get(k) == s)
        union = len(shapes.keys() | candidate.keys())
        native = model_default_cfg(name).get("num_classes", width) == width
        ranked.append((-matched / max(union, 1), not native, name, width, matched, union))
    ranked.sort()
    return [(name, w, matched, union) for _, _, name, w, matched, union in ranked]


def _closest_text(state) -> str:
    ranked = closest_zoo_model(state)
    if not ranked:
        return "no zoo model could be built to compare"
    name, width, matched, union = ranked[0]
    if matched < union / 2:
        return f"no zoo model is close (the nearest, {name}, shares {matched} of {union} tensors)"
    ties = [n if model_default_cfg(n).get("num_classes", width) == width else f"{n} (num_classes={width})"
            for n, _, m, u in ranked[1:] if (m, u) == (matched, union)][:3]
    fit = "every tensor matches" if matched == union else f"{matched} of {union} tensors match"
    also = f"; as close: {', '.join(ties)}" if ties else ""
    return f"closest zoo model: {name} with num_classes={width} ({fit}{also})"


def _listing(title: str, items: list[str]) -> str:
    more = f", ... ({len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return f"  {title} ({len(items)}): {', '.join(items[:SHOWN])}{more}"


def fit_error(model: nn.Module, state: dict[str, Tensor], source, detail: str = "") -> ValueError:
    """The one error for weights that do not fit ``model``: a summary line (counts and the closest zoo model,
    the line an export error keeps), then the first keys of each kind."""
    own = _shapes(model.state_dict())
    given = _shapes(state)
    # BatchNorm fills a missing num_batches_tracked itself (checkpoints older than torch 0.4.1)
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {list(given[k])}, model {list(own[k])}" for k in own
                  if k in given and given[k] != own[k]]
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    what = type(model).__name__ + (f" ({arch})" if arch else "")
    closest = _closest_text(state)
    lines = [f"the weights in {source} do not fit the {what} architecture: {len(missing)} missing keys, "
             f"{len(unexpected)} unexpected keys, {len(mismatched)} shape mismatches; {closest}"]
    lines += [_listing(t, i) for t, i in (("missing keys", missing), ("unexpected keys", unexpected),
                                          ("shape mismatches", mismatched)) if i]
    if detail and not (missing or unexpected or mismatched):
        lines.append(f"  torch says: {detail}")
    return ValueError("\n".join(lines))


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the state dict in ``path`` (``read_state_dict``) into ``model`` strictly; ``fit_error`` otherwise."""
    state = read_state_dict(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise fit_error(model, state, path, str(err)) from err
    return model
