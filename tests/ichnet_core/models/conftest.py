"""Fixtures for the model tests: tiny ICHNet configurations that run in milliseconds on a CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch


@pytest.fixture
def tiny_overrides() -> dict[str, Any]:
    """Config overrides that shrink any registered variant to a few thousand parameters."""
    return {
        "widths": (4, 8, 8, 8),
        "blocks_per_level": (1, 1, 1, 1),
        "input_size": 32,
        "lstm_hidden": 4,
    }


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every model test starts from the same random state, so results do not depend on order."""
    torch.manual_seed(0)
