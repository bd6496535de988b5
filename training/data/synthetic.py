"""Synthetic head-CT cases from ``ichnet_core.synthetic`` for training and evaluation.

Each split draws its cases from its own block of generator seeds
(:data:`training.data.splits.SYNTHETIC_SEED_RANGES`), so training, validation and test cases can
never coincide. Generated cases are cached as compressed ``.npz`` files keyed by the generator
settings and a hash of the generator's source code: a changed generator never serves stale cases.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Final

import numpy as np

import ichnet_core.synthetic as synthetic_package
from ichnet_core.durable import write_atomic
from ichnet_core.synthetic import SyntheticCase, SyntheticConfig, generate_case
from training.data.case import LabelledCase, SegKind, compartments_from_subtype_masks
from training.data.source import CaseEntry, CaseSource
from training.data.splits import Split, synthetic_seeds

logger = logging.getLogger(__name__)

CACHE_FORMAT: Final[str] = "ichnet-synthetic-cache/2"


@cache
def generator_fingerprint() -> str:
    """sha256 over the generator's source files (changes whenever the generator does)."""
    digest = hashlib.sha256()
    root = Path(synthetic_package.__file__).parent
    for path in sorted(root.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def case_from_synthetic(synthetic: SyntheticCase, case_id: str) -> LabelledCase:
    """A :class:`LabelledCase` of a generated case (everything known; slice 0 most inferior)."""
    return LabelledCase(
        case_id=case_id,
        group_id=case_id,
        hu=np.asarray(synthetic.hu, dtype=np.float32),
        pixel_spacing=(float(synthetic.pixel_spacing[0]), float(synthetic.pixel_spacing[1])),
        slice_extent_mm=np.asarray(synthetic.slice_extents_mm(), dtype=np.float64),
        seg=np.asarray(synthetic.labels, dtype=np.uint8),
        seg_kind=SegKind.FULL,
        slice_labels=np.asarray(synthetic.slice_labels, dtype=np.float32),
        subject_labels=np.asarray(synthetic.subject_labels, dtype=np.float32),
        compartments=compartments_from_subtype_masks(synthetic.subtype_masks),
    )


class SyntheticSource(CaseSource):
    """``count`` generated cases of ``split`` (seeds ``offset ..`` of the split's block).

    Parameters
    ----------
    split:
        Which seed block to draw from.
    count, offset:
        How many cases, starting where in the block.
    generator_overrides:
        :class:`ichnet_core.synthetic.SyntheticConfig` fields (``rows``, ``columns``, ...).
    cache_dir:
        Where generated cases are kept; ``None`` generates every time.
    """

    name = "synthetic"

    def __init__(
        self,
        split: Split,
        count: int,
        *,
        offset: int = 0,
        generator_overrides: Mapping[str, Any] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        overrides = dict(generator_overrides or {})
        known = {f.name for f in dataclasses.fields(SyntheticConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown SyntheticConfig fields {unknown}; known: {sorted(known)}")
        self.config = SyntheticConfig(**overrides)
        self.split = split
        self.seeds = synthetic_seeds(split, count, offset)
        key = json.dumps(
            {"config": dataclasses.asdict(self.config), "generator": generator_fingerprint()},
            sort_keys=True,
            default=list,
        )
        self._key = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.cache_dir = None if cache_dir is None else Path(cache_dir) / self._key
        self._entries = tuple(
            CaseEntry(case_id=f"synthetic/{seed}", group_id=f"synthetic/{seed}")
            for seed in self.seeds
        )

    @property
    def entries(self) -> Sequence[CaseEntry]:
        return self._entries

    def fingerprint(self, index: int) -> str | None:
        """Generator settings + source hash + seed: a case is a pure function of these."""
        return f"{self._key}-{self.seeds[index]}"

    def _cache_path(self, seed: int) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{seed}.npz"

    def load(self, index: int) -> LabelledCase:
        seed = self.seeds[index]
        case_id = self._entries[index].case_id
        path = self._cache_path(seed)
        if path is not None and path.is_file():
            try:
                return _read_cached(path, case_id)
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("synthetic cache %s unreadable (%s); regenerating", path, exc)
        case = case_from_synthetic(generate_case(seed, self.config), case_id)
        if path is not None:
            _write_cached(path, case)
        return case


def _write_cached(path: Path, case: LabelledCase) -> None:
    arrays = {
        "format": np.array(CACHE_FORMAT),
        "hu": case.hu,
        "pixel_spacing": np.array(case.pixel_spacing),
        "slice_extent_mm": case.slice_extent_mm,
        "seg": case.seg,
        "compartments": case.compartments,
        "slice_labels": case.slice_labels,
        "subject_labels": case.subject_labels,
    }
    write_atomic(path, lambda handle: np.savez_compressed(handle, **arrays))


def _read_cached(path: Path, case_id: str) -> LabelledCase:
    with np.load(path) as data:
        if str(data["format"]) != CACHE_FORMAT:
            raise ValueError(f"format {data['format']!r}")
        spacing = data["pixel_spacing"]
        return LabelledCase(
            case_id=case_id,
            group_id=case_id,
            hu=data["hu"],
            pixel_spacing=(float(spacing[0]), float(spacing[1])),
            slice_extent_mm=data["slice_extent_mm"],
            seg=data["seg"],
            compartments=data["compartments"],
            seg_kind=SegKind.FULL,
            slice_labels=data["slice_labels"],
            subject_labels=data["subject_labels"],
        )
