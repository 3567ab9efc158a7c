"""Model zoo: CIFAR ResNet/WRN/VGG and the digits pair, built by name, plus the penultimate-feature API.

``create_model("wrn40_2", num_classes=100)`` builds a registered network; ``resolve_model(spec, weights=...)``
builds a zoo, torchvision, timm or torch.hub model by spec and loads a weights file strictly;
``features_and_logits(model, x)`` returns the penultimate features and logits of a zoo model or of any
classifier ending in ``nn.Linear``; ``heads.ProjectionHead`` maps those features for the contrastive loss.
"""

from . import cifar, small  # noqa: F401  (importing registers the models)
from .features import FeatureTap, ZooClassifier, features_and_logits, num_features
from .registry import create_model, list_models, model_default_cfg, register_model
from .specs import resolve_model

__all__ = [
    "FeatureTap",
    "ZooClassifier",
    "create_model",
    "features_and_logits",
    "list_models",
    "model_default_cfg",
    "num_features",
    "register_model",
    "resolve_model",
]
