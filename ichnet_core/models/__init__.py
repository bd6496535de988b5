"""ICHNet in PyTorch: the network, its named variants and (in ``models.weights``) its weights.

``models.weights`` is not re-exported here so that ``python -m ichnet_core.models.weights`` runs
without the package having imported that module first.
"""

from ichnet_core.models.ichnet import ICHNet, ICHNetConfig, ICHNetOutput
from ichnet_core.models.registry import (
    DEFAULT_MODEL,
    create_model,
    list_models,
    model_config,
    register_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "ICHNet",
    "ICHNetConfig",
    "ICHNetOutput",
    "create_model",
    "list_models",
    "model_config",
    "register_model",
]
