"""Named ICHNet variants: ``register_model``, ``create_model``, ``list_models``.

Each variant is a small function that returns its :class:`ICHNetConfig` (timm/torchvision
style: a variant only sets widths, depth, input size and ablation flags). A name can be
registered once; a second registration raises, so a typo cannot silently replace a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ichnet_core.models.ichnet import ICHNet, ICHNetConfig

ConfigFactory = Callable[[], ICHNetConfig]

#: The default variant (``ichnet-node`` and the bundled weights use it).
DEFAULT_MODEL = "ichnet"

_REGISTRY: dict[str, ConfigFactory] = {}


def register_model(factory: ConfigFactory) -> ConfigFactory:
    """Register a variant under its function name (usable as a decorator).

    Raises
    ------
    ValueError
        When the name is already registered.
    """
    name = factory.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = factory
    return factory


def list_models() -> list[str]:
    """Registered variant names, sorted."""
    return sorted(_REGISTRY)


def model_config(name: str, **overrides: Any) -> ICHNetConfig:
    """The config of variant ``name`` with ``overrides`` (any :class:`ICHNetConfig` field).

    Raises
    ------
    ValueError
        For an unknown name, or an override that is not a config field.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {list_models()}") from None
    known = {field.name for field in dataclasses.fields(ICHNetConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown ICHNetConfig overrides {unknown} for {name!r}; known: {sorted(known)}"
        )
    return dataclasses.replace(factory(), **overrides)


def create_model(name: str = DEFAULT_MODEL, **overrides: Any) -> ICHNet:
    """Build variant ``name`` (randomly initialised) with config ``overrides``."""
    return ICHNet(model_config(name, **overrides))


@register_model
def ichnet() -> ICHNetConfig:
    """Default, CPU-friendly ICHNet: widths (16, 32, 64, 128), 256x256 input."""
    return ICHNetConfig()


@register_model
def ichnet_large() -> ICHNetConfig:
    """Paper-scale ICHNet for GPUs: 512x512 input, wider and deeper ResNet encoder."""
    return ICHNetConfig(
        widths=(32, 64, 128, 256), blocks_per_level=(2, 2, 2, 2), input_size=512, lstm_hidden=128
    )


@register_model
def ichnet_cls() -> ICHNetConfig:
    """Ablation: classification only (no segmentation decoder)."""
    return ICHNetConfig(seg_branch=False)


@register_model
def ichnet_seg() -> ICHNetConfig:
    """Ablation: segmentation only (no classification heads)."""
    return ICHNetConfig(cls_branch=False)


@register_model
def ichnet_no_att() -> ICHNetConfig:
    """Ablation: plain U-Net skip connections instead of attention gates."""
    return ICHNetConfig(attention=False)
