"""One string names a network wherever it comes from, so a public teacher loads the way it does in PyTorch.

A spec is a zoo name (``cifar10_resnet56``), ``torchvision:NAME``, ``timm:NAME`` or ``hub:OWNER/REPO:ENTRY``
(``hub:/a/local/dir:ENTRY`` too). Nothing is ever downloaded: torchvision and timm build without pretrained
weights, torch.hub repos load only from a local directory or the hub cache, and weights come from a file
(``weights=``), loaded strictly. Every model comes back with ``model.pretrained_cfg`` (timm's name): the input
it expects, as far as it is known, so the CLI can fill in mean/std, image shape and class names.
"""

from __future__ import annotations

import ast
import difflib
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .registry import create_model, unknown_name_error
from .weights import load_weights

SOURCES = ("torchvision", "timm", "hub")
SPEC_FORMS = "a zoo name (fastcae.models.list_models()), torchvision:NAME, timm:NAME or hub:OWNER/REPO:ENTRY"
# torchvision's ImageNet classifiers are published with these (their weights' transforms say the same).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HUB_REPO = re.compile(r"^([\w.-]+)/([\w.-]+)(?::([\w./-]+))?$")  # owner/repo[:ref], as torch.hub spells it


def resolve_model(spec: str, num_classes: int | None = None, weights: str | Path | None = None,
                  **kwargs: Any) -> nn.Module:
    """Build the network ``spec`` names (see the module docstring); ``num_classes`` and ``kwargs`` pass to its
    constructor (left out: the constructor's default), ``weights``: a weights file loaded strictly.

    ``in_chans`` is understood everywhere: the zoo and timm take it, torchvision models only 3 (an error
    otherwise), and a torch.hub entry gets it only when it is not 3 (most take no such argument). Anything
    that would download (``pretrained=True``) is refused: pass the weights file instead."""
    source, sep, name = spec.partition(":")
    if not sep:
        source, name = "zoo", spec
    elif source not in SOURCES:
        raise ValueError(f"unknown model source {source!r} in {spec!r}; a model spec is {SPEC_FORMS}")
    if not name:
        raise ValueError(f"{spec!r} names no model; a model spec is {SPEC_FORMS}")
    if kwargs.get("pretrained"):
        raise ValueError(f"{spec}: fastcae never downloads weights (pretrained=True); pass the weights file "
                         f"instead: resolve_model({spec!r}, weights='path/to/weights.pth')")
    kwargs.pop("pretrained", None)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    build = {"zoo": create_model, "torchvision": _torchvision, "timm": _timm, "hub": _hub}[source]
    model = build(name, **kwargs)
    cfg = getattr(model, "pretrained_cfg", None)
    model.pretrained_cfg = dict(cfg) if isinstance(cfg, dict) else {}  # a copy: timm's may be shared
    model.pretrained_cfg.setdefault("architecture", spec)
    if "num_classes" not in model.pretrained_cfg:
        width = _output_width(model)
        if width is not None:
            model.pretrained_cfg["num_classes"] = width
    if weights is not None:
        load_weights(model, weights)
    return model


def _output_width(model: nn.Module) -> int | None:
    """The last ``nn.Linear``'s output width: a classifier's class count, where no config says it."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return None if last is None else last.out_features


def _three_channels(spec: str, kwargs: dict) -> dict:
    in_chans = kwargs.pop("in_chans", None)
    if in_chans not in (None, 3):
        raise ValueError(f"{spec} takes 3-channel images; in_chans={in_chans} needs a zoo or timm model")
    return kwargs


def _torchvision(name: str, **kwargs) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None)``: the architecture, never its published weights."""
    import torchvision.models as tvm

    kwargs = _three_channels(f"torchvision:{name}", kwargs)
    known = tvm.list_models()
    if name not in known:
        raise unknown_name_error("torchvision model", name, known)
    model = tvm.get_model(name, weights=None, **kwargs)
    model.pretrained_cfg = {"num_classes": kwargs.get("num_classes", _output_width(model))}
    # an ImageNet classifier with ImageNet's head: the input its published weights expect. With another head the
    # weights are the user's, trained on images we know nothing of (a CIFAR ResNet-18 at 32 px): claim nothing
    if name in tvm.list_models(module=tvm) and model.pretrained_cfg["num_classes"] == 1000:
        model.pretrained_cfg.update(_torchvision_input(tvm, name, model.pretrained_cfg["num_classes"]))
    return model


def _torchvision_input(tvm, name: str, num_classes: int | None) -> dict:
    """Input size, mean/std (and the class names, at 1000 classes) of ``name``'s default published weights,
    read from torchvision's weights enum (metadata only: nothing is downloaded)."""
    cfg = {"input_size": (3, 224, 224), "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    try:
        default = tvm.get_model_weights(name).DEFAULT
        transform = default.transforms()
        crop = int(transform.crop_size[0])
        cfg.update(input_size=(3, crop, crop), mean=tuple(transform.mean), std=tuple(transform.std))
        names = default.meta.get("categories")
    except Exception:  # noqa: BLE001 (no weights enum for this name: the ImageNet defaults stand)
        names = None
    if names and len(names) == num_classes:  # timm's key for a head's class names
        cfg["label_names"] = tuple(names)
    return cfg


def _timm(name: str, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=False)``; timm is optional, so its absence is a clear error."""
    try:
        import timm
    except ImportError:
        raise ValueError(f"timm:{name} needs the timm package, which fastcae does not install: pip install timm"
                         ) from None
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as err:
        if "Unknown model" not in str(err):
            raise
        raise unknown_name_error("timm model", name, list(timm.list_models())) from None


def _hub(name: str, **kwargs) -> nn.Module:
    """``torch.hub.load(local_dir, entry, source="local")`` on a local checkout: never GitHub, never a hang."""
    repo, sep, entry = name.rpartition(":")
    if not sep or not repo or not entry:
        raise ValueError(f"hub:{name}: expected hub:OWNER/REPO:ENTRY or hub:/local/dir:ENTRY")
    directory = _hub_dir(repo, entry)
    if kwargs.get("in_chans") == 3:
        kwargs.pop("in_chans")
    try:
        model = torch.hub.load(str(directory), entry, source="local", **kwargs)
    except RuntimeError as err:
        if "Cannot find callable" not in str(err):
            raise
        entries = _hub_entries(directory / "hubconf.py")
        close = difflib.get_close_matches(entry, entries, n=5, cutoff=0.5) or entries[:5]
        raise ValueError(f"{directory / 'hubconf.py'} has no entry {entry!r}; closest: {', '.join(close)}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"hub:{name} returned a {type(model).__name__}, not an nn.Module")
    return model


def _hub_entries(hubconf: Path) -> list[str]:
    """The public names ``hubconf.py`` defines or imports, read without running it (for a typo's hint)."""
    names = []
    for node in ast.parse(hubconf.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split(".")[0] for a in node.names]
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return [n for n in names if not n.startswith("_") and n != "dependencies"]


def _hub_dir(repo: str, entry: str) -> Path:
    """The local checkout ``repo`` names: a directory, or ``OWNER_REPO_BRANCH`` in ``torch.hub.get_dir()``."""
    path = Path(repo).expanduser()
    match = _HUB_REPO.match(repo)
    if path.is_dir() or match is None or repo.startswith((".", "/", "~")):
        if not (path / "hubconf.py").is_file():
            raise ValueError(f"hub:{repo}:{entry}: {path} is not a torch.hub repo directory (no hubconf.py there)")
        return path
    owner, name, ref = match.groups()
    hub_dir = Path(torch.hub.get_dir())
    stem = f"{owner}_{name}_"
    if ref:
        found = [hub_dir / (stem + ref.replace("/", "_"))]
    else:  # the branch torch.hub checked out: main or master first, then any other
        found = sorted(hub_dir.glob(stem + "*"), key=lambda p: (p.name[len(stem):] not in ("main", "master"), p))
    found = [p for p in found if (p / "hubconf.py").is_file()]
    if not found:
        raise ValueError(f"torch.hub repo {owner}/{name} is not in the local hub cache: looked in {hub_dir} for "
                         f"{stem}{ref or '<branch>'} (e.g. {stem}master). fastcae never downloads: set TORCH_HOME "
                         f"to a cache that holds it, or clone the repo and pass its directory "
                         f"(hub:/path/to/{name}:{entry})")
    return found[0]
