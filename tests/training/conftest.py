"""Fixtures for the training tests: tiny models and hand-made cases (no generator needed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from ichnet_core.labels import BRAIN, HEMORRHAGE, NON_BRAIN
from training.data.case import (
    LabelledCase,
    SegKind,
    slices_from_subtype_masks,
    subject_from_slices,
)


@pytest.fixture
def tiny_overrides() -> dict[str, Any]:
    """ICHNet config overrides for a model of a few thousand parameters on 32x32 input."""
    return {
        "widths": (4, 8, 8, 8),
        "blocks_per_level": (1, 1, 1, 1),
        "input_size": 32,
        "lstm_hidden": 4,
    }


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="package")
def _one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and the CI machine's cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_phantom_case(
    case_id: str = "toy/0",
    slices: int = 4,
    size: int = 48,
    bleed_slices: tuple[int, ...] = (1, 2),
    subtype: int = 0,
) -> LabelledCase:
    """A disc of brain in a skull ring in air, with a small bleed on ``bleed_slices``.

    All labels are known (like synthetic data); tests blank out what they need.
    """
    rows, columns = np.mgrid[0:size, 0:size]
    radius = np.hypot(rows - size / 2, columns - size / 2)
    hu = np.full((slices, size, size), -1000.0, dtype=np.float32)
    seg = np.full((slices, size, size), NON_BRAIN, dtype=np.uint8)
    hu[:, radius < size * 0.45] = 800.0  # skull
    brain = radius < size * 0.38
    hu[:, brain] = 30.0
    seg[:, brain] = BRAIN
    subtype_masks = np.zeros((5, slices, size, size), dtype=bool)
    bleed = (np.hypot(rows - size * 0.4, columns - size * 0.6) < size * 0.08) & brain
    for index in bleed_slices:
        hu[index, bleed] = 70.0
        seg[index, bleed] = HEMORRHAGE
        subtype_masks[subtype, index, bleed] = True
    slice_labels = slices_from_subtype_masks(subtype_masks)
    return LabelledCase(
        case_id=case_id,
        group_id=case_id,
        hu=hu,
        pixel_spacing=(0.8, 0.8),
        slice_extent_mm=np.full(slices, 5.0),
        seg=seg,
        seg_kind=SegKind.FULL,
        slice_labels=slice_labels,
        subject_labels=subject_from_slices(slice_labels),
    )


@pytest.fixture
def phantom_case() -> LabelledCase:
    return make_phantom_case()
