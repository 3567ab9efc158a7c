"""Penultimate features of a classifier, for the contrastive loss and for linear probes.

Zoo models expose them directly (``forward_features`` -> ``[B, num_features]``, ``forward_head`` -> logits),
which keeps a compiled training step a single graph. Any other ``nn.Module`` classifier is handled by
tapping the input of its last ``nn.Linear`` with a forward hook, so one forward pass yields both the
features and the logits.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from ..utils import eval_mode


class ZooClassifier(nn.Module):
    """Base of the zoo networks: ``forward(x) == forward_head(forward_features(x))``.

    Subclasses set ``self.num_features`` and implement ``forward_features`` (pooled and flattened) and
    ``forward_head``; ``init_weights`` gives the usual He-normal conv / unit-BN initialisation.
    """

    num_features: int

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, f: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)


def has_feature_api(model: nn.Module) -> bool:
    return callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))


def _last_linear(model: nn.Module) -> nn.Linear:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer to tap and no forward_features/forward_head: "
            "cannot locate its penultimate features"
        )
    return last


class FeatureTap:
    """Capture the input of ``model``'s last ``nn.Linear`` (in ``model.modules()`` order) on each forward.

    After a forward pass ``tap.features`` holds that input flattened to ``[B, F]``; it is overwritten by the
    next pass (and by a second call of the same layer within a pass). The features keep their autograd
    graph, so a loss on them back-propagates into the model. Use as a context manager, or call ``remove()``::

        with FeatureTap(model) as tap:
            logits = model(x)
        feats = tap.features
    """

    def __init__(self, model: nn.Module, attach: bool = True):
        self.layer = _last_linear(model)
        self.features: Tensor | None = None
        self._handle = None
        if attach:
            self.attach()

    def _hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
        self.features = inputs[0].flatten(1)

    def attach(self) -> None:
        if self._handle is None:
            self._handle = self.layer.register_forward_hook(self._hook)

    def remove(self) -> None:
        """Detach the hook (idempotent); the last captured features stay readable."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @contextlib.contextmanager
    def active(self):
        """Attached for the block only. A compiled step enters this outside its graph (registering a hook
        is not traceable) and reads ``features`` inside it, after the model's forward."""
        self.attach()
        try:
            yield self
        finally:
            self.remove()

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def features_and_logits(model: nn.Module, x: Tensor, tap: FeatureTap | None = None) -> tuple[Tensor, Tensor]:
    """``(features [B, F], logits)`` from a single forward pass of ``model`` on ``x``.

    Uses ``forward_features``/``forward_head`` when the model has both (zoo models; no hooks, so it traces
    into one graph under ``torch.compile(fullgraph=True)``), else ``tap`` (a ``FeatureTap`` the caller has
    attached: how a compiled step does it), else a temporary ``FeatureTap`` (eager only).
    To compile, wrap the function that calls this one: given a module returned by ``torch.compile``,
    the ``forward_features`` lookup falls through to the uncompiled original.
    """
    if has_feature_api(model):
        feats = model.forward_features(x)
        return feats, model.forward_head(feats)
    if tap is not None:
        logits = model(x)
        return tap.features, logits
    with FeatureTap(model) as tap:
        logits = model(x)
    if tap.features is None:
        raise RuntimeError(
            f"the last nn.Linear of {type(model).__name__} was not called in forward; "
            "give the model forward_features/forward_head instead"
        )
    return tap.features, logits


def num_features(model: nn.Module, example_input: Tensor) -> int:
    """Width of the penultimate features; runs one no-grad eval-mode pass unless the model declares it.

    The probe pass is made in eval mode (training flags restored afterwards) so it leaves BatchNorm
    running statistics untouched and works with a batch of one.
    """
    declared = getattr(model, "num_features", None)
    if isinstance(declared, int) and has_feature_api(model):
        return declared
    with eval_mode(model), torch.no_grad():
        feats, _ = features_and_logits(model, example_input)
    return int(feats.shape[1])
