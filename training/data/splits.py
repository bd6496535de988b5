"""Train / validation / test splits that cannot overlap, by construction.

* Synthetic cases are named by their generator seed, and each split owns its own block of seeds
  (:data:`SYNTHETIC_SEED_RANGES`); a seed of one block can never be asked for by another split.
* Public datasets are split by *patient* (``CaseEntry.group_id``): a stable hash of the group id
  puts every case of one patient into exactly one split, the same one on every machine and run.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from typing import Final

from training.data.source import CaseSource, SubsetSource


class Split(enum.Enum):
    """The three uses of data; a case belongs to exactly one."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


#: Seeds per split block. Large enough for any training set; blocks are disjoint.
SYNTHETIC_SEED_BLOCK: Final[int] = 1_000_000
#: Seeds each split may use: train [0, 1e6), val [1e6, 2e6), test [2e6, 3e6).
SYNTHETIC_SEED_RANGES: Final[Mapping[Split, range]] = {
    split: range(index * SYNTHETIC_SEED_BLOCK, (index + 1) * SYNTHETIC_SEED_BLOCK)
    for index, split in enumerate(Split)
}
#: Hash resolution for group splitting (fractions are resolved to 1e-6).
_HASH_BUCKETS: Final[int] = 1_000_000


def synthetic_seeds(split: Split, count: int, offset: int = 0) -> range:
    """Seeds ``offset .. offset + count - 1`` of ``split``'s block.

    Raises
    ------
    ValueError
        When ``count`` or ``offset`` is negative or the seeds would leave the split's block.
    """
    if count < 0 or offset < 0:
        raise ValueError(f"count and offset must be >= 0, got count={count} offset={offset}")
    block = SYNTHETIC_SEED_RANGES[split]
    if offset + count > len(block):
        raise ValueError(
            f"{split.value}: {count} seeds from offset {offset} leave the block of "
            f"{len(block)} seeds reserved for this split"
        )
    return range(block.start + offset, block.start + offset + count)


def split_of_seed(seed: int) -> Split:
    """The split whose block holds ``seed``."""
    for split, block in SYNTHETIC_SEED_RANGES.items():
        if seed in block:
            return split
    raise ValueError(f"seed {seed} lies in no split block {dict(SYNTHETIC_SEED_RANGES)}")


def check_fractions(fractions: Mapping[Split, float]) -> None:
    """Fractions must be >= 0 for every split and add up to 1."""
    missing = [split.value for split in Split if split not in fractions]
    if missing:
        raise ValueError(f"split fractions lack {missing}")
    if any(value < 0 for value in fractions.values()):
        raise ValueError(f"split fractions must be >= 0, got {dict(fractions)}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must add up to 1, got {total} from {dict(fractions)}")


def split_of_group(group_id: str, fractions: Mapping[Split, float], salt: str = "") -> Split:
    """The split of a patient: a stable hash of ``salt + group_id`` cut by ``fractions``.

    Parameters
    ----------
    group_id:
        The patient / subject identifier.
    fractions:
        Share of groups per split (must add up to 1).
    salt:
        Changes the assignment as a whole (e.g. the dataset name), never per call.
    """
    check_fractions(fractions)
    digest = hashlib.sha256(f"{salt}\x00{group_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") % _HASH_BUCKETS
    edge = 0.0
    for split in Split:
        edge += fractions[split]
        if position < round(edge * _HASH_BUCKETS):
            return split
    return Split.TEST  # rounding left the last bucket uncovered


def split_source(
    source: CaseSource, split: Split, fractions: Mapping[Split, float], salt: str = ""
) -> SubsetSource:
    """The cases of ``source`` whose patient falls into ``split``."""
    indices = [
        index
        for index, entry in enumerate(source.entries)
        if split_of_group(entry.group_id, fractions, salt or source.name) is split
    ]
    return SubsetSource(source, indices, name=f"{source.name}:{split.value}")
