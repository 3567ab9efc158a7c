"""fastcae: fast data-free knowledge distillation (CAE-DFKD) in PyTorch.

``from fastcae import distill``: a teacher classifier and a student in, a distilled student out, with no data.
"""

__version__ = "0.1.0"

from .api import distill
from .config import DistillConfig
from .models import create_model, list_models, register_model
from .presets import get_preset, list_presets
from .result import DistillResult

__all__ = ["distill", "DistillConfig", "DistillResult", "create_model", "list_models", "register_model", "get_preset",
           "list_presets", "__version__"]
