"""Splits cannot overlap: disjoint seed blocks and a per-patient hash."""

from __future__ import annotations

import itertools

import pytest

from training.data.source import CaseEntry, CaseSource
from training.data.splits import (
    SYNTHETIC_SEED_RANGES,
    Split,
    split_of_group,
    split_of_seed,
    split_source,
    synthetic_seeds,
)

FRACTIONS = {Split.TRAIN: 0.6, Split.VAL: 0.2, Split.TEST: 0.2}


def test_seed_blocks_are_disjoint_and_requests_stay_inside() -> None:
    ranges = sorted(SYNTHETIC_SEED_RANGES.values(), key=lambda r: r.start)
    assert all(a.stop <= b.start for a, b in itertools.pairwise(ranges))
    train = synthetic_seeds(Split.TRAIN, 100)
    val = synthetic_seeds(Split.VAL, 100)
    assert not set(train) & set(val)
    assert all(split_of_seed(seed) is Split.VAL for seed in val)
    with pytest.raises(ValueError, match="leave the block"):
        synthetic_seeds(Split.TRAIN, 10, offset=len(SYNTHETIC_SEED_RANGES[Split.TRAIN]) - 5)


class _Patients(CaseSource):
    name = "toy"

    @property
    def entries(self) -> list[CaseEntry]:
        # Two studies per patient.
        return [CaseEntry(f"toy/{p}-{s}", f"toy/{p}") for p in range(200) for s in range(2)]

    def load(self, index: int) -> None:  # type: ignore[override]
        raise AssertionError("splitting must not load pixels")


def test_patients_land_in_exactly_one_split_with_the_requested_shares() -> None:
    source = _Patients()
    parts = {split: split_source(source, split, FRACTIONS) for split in Split}
    ids = [set(e.case_id for e in part.entries) for part in parts.values()]
    assert sum(len(i) for i in ids) == len(source)
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    groups = [set(e.group_id for e in part.entries) for part in parts.values()]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert 0.5 < len(groups[0]) / 200 < 0.7
    # Stable: the same patient always goes to the same split.
    assert split_of_group("toy/17", FRACTIONS, "toy") is split_of_group("toy/17", FRACTIONS, "toy")


def test_fractions_are_checked() -> None:
    with pytest.raises(ValueError, match="add up to 1"):
        split_of_group("x", {Split.TRAIN: 0.5, Split.VAL: 0.2, Split.TEST: 0.2})
