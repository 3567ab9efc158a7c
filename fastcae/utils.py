"""Small helpers that several layers need, each written once: a model in eval mode for a block, the input
normalisation ``(x - mean) / std``, and the versions a report records.

A bottom module, like ``fastcae.config``: it imports nothing else of fastcae (``versions`` reads the package's
``__version__`` when called).
"""

from __future__ import annotations

import contextlib
import platform

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``model`` in eval mode for the block (BatchNorm uses its running statistics and leaves them alone, any
    batch size works); afterwards every submodule's training flag is put back as it was, also after an error,
    so a mixed-mode model (a frozen BatchNorm inside a training network) comes back unchanged."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def channel_tensor(values, device=None) -> Tensor:
    """Per-channel values (a mean or a std) as a float32 ``[1, C, 1, 1]`` tensor that broadcasts over a batch."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(x - mean) / std`` per channel, in ``x``'s dtype: images in [0, 1] -> the network's input.
    ``mean`` and ``std`` are ``channel_tensor``s."""
    return (x - mean.to(x.dtype)) / std.to(x.dtype)


def versions(*packages: str) -> dict[str, str | None]:
    """The versions a report records so its numbers stay comparable across machines and releases: python,
    torch and fastcae, then each named distribution's (``importlib.metadata``; None where it is not installed)."""
    from importlib import metadata

    from . import __version__

    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__,
                                  "fastcae": __version__}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
