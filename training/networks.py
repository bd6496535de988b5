"""Build the network a config names: an ICHNet registry variant or a baseline."""

from __future__ import annotations

from typing import Any

from torch import nn

from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.models import ICHNet, create_model, list_models
from training.baselines import BASELINES, create_baseline
from training.config import ModelSection


def available_networks() -> list[str]:
    """ICHNet variants and baselines, sorted."""
    return sorted([*list_models(), *BASELINES])


def build_network(section: ModelSection) -> nn.Module:
    """A freshly initialised network (seed the RNG first for reproducibility).

    Raises
    ------
    ValueError
        Unknown name or options (the message lists what exists).
    """
    overrides: dict[str, Any] = dict(section.overrides)
    if section.name in list_models():
        return create_model(section.name, **overrides)
    if section.name in BASELINES:
        return create_baseline(section.name, **overrides)
    raise ValueError(f"model.name {section.name!r} unknown; available: {available_networks()}")


def grid_of(model: nn.Module) -> ModelGrid:
    """The input grid the network expects (ICHNet: its config's; baselines: their ``grid``)."""
    grid = model.config.grid if isinstance(model, ICHNet) else getattr(model, "grid", None)
    if not isinstance(grid, ModelGrid):
        raise ValueError(f"{type(model).__name__} does not declare its input grid")
    return grid
